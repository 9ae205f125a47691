"""Run `sec2sec-live` with one planted fault, for the subprocess tests in test_faults.py.

    python tests/fault_runner.py FAULT N -- <sec2sec-live arguments>

FAULT is one of the names in FAULTS; N is the window (or decoded item) at which it strikes. Each fault patches
one real function of the monitor, then runs `monitor.cli.main` unchanged. A fault that holds a phase open
prints `PHASE <name>` on stderr first, so the test knows when to send its signal.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

FOREVER_S = 3600.0


def phase(name: str) -> None:
    print(f"PHASE {name}", file=sys.stderr, flush=True)


def hold(owner: Any, attribute: str, name: str) -> None:
    """Replace `owner.attribute` (a function) by one that reports phase `name`, then blocks for ever: a signal
    sent once the phase is reported lands inside it."""
    original = getattr(owner, attribute)

    def held(*args: Any, **kwargs: Any) -> Any:
        phase(name)
        time.sleep(FOREVER_S)
        return original(*args, **kwargs)

    setattr(owner, attribute, held)


def slow_open(n: int) -> None:
    """Opening the replay file takes for ever."""
    from monitor import replay

    hold(replay.FileReplay, "__init__", "opening")


def slow_warm_up(n: int) -> None:
    """The model's warm-up takes for ever."""
    from sec2sec.stream import AffectStream

    hold(AffectStream, "warm_up", "warm-up")


def slow_drain(n: int) -> None:
    """Every window takes 1 s; the end of the file arrives long before the model is done (draining)."""
    from monitor.pipeline import Pipeline
    from sec2sec.stream import AffectStream

    step, drain = AffectStream.step, Pipeline._drain

    def slow_step(self: Any, window: Any) -> Any:
        time.sleep(1.0)
        return step(self, window)

    def draining(self: Any) -> None:
        phase("draining")
        drain(self)

    AffectStream.step, Pipeline._drain = slow_step, draining


def stuck_stdout(n: int) -> None:
    """From window n on, printing the plain line blocks for ever (a pipe nobody reads)."""
    from monitor import dashboard

    write = dashboard.PlainPrinter.write

    def blocking(self: Any, estimate: Any) -> None:
        if estimate.window >= n:
            phase("stuck")
            threading.Event().wait()
        write(self, estimate)

    dashboard.PlainPrinter.write = blocking


def on_csv_rows(row: Callable[[int, int, bytes, Callable[[int, Any], int]], int]) -> None:
    """Route every `os.write` to a CSV recorder's file through `row(k, fd, data, real_write)`, where k counts the
    CSV's writes after its header (window k's row is write k); other writes go to the OS untouched."""
    import os

    from monitor import recorders

    init, real_write = recorders.CsvRecorder.__init__, os.write
    csv_fds: list[int] = []
    rows = {"n": -1}  # the header is written before `opening` learns the fd

    def opening(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        csv_fds.append(self._fd)

    def write(fd: int, data: Any) -> int:
        if fd not in csv_fds:
            return real_write(fd, data)
        rows["n"] += 1
        return row(rows["n"], fd, bytes(data), real_write)

    recorders.CsvRecorder.__init__ = opening
    os.write = write


def disk_full(n: int) -> None:
    """The CSV's disk fills up in the middle of row n: the OS takes the first half of that row's bytes, then
    says ENOSPC (the recorder must cut the half row back)."""

    def row(k: int, fd: int, data: bytes, real_write: Callable[[int, Any], int]) -> int:
        if k == n:
            done = real_write(fd, data[: len(data) // 2])
            phase(f"half-row {done}")
            return done
        if k > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    on_csv_rows(row)


def slow_row(n: int) -> None:
    """Each CSV row is checked to reach the OS in one write call; row n's call waits 60 s before it writes,
    so that a kill lands inside the recorder's write."""

    def row(k: int, fd: int, data: bytes, real_write: Callable[[int, Any], int]) -> int:
        if data.count(b"\n") != 1 or not data.endswith(b"\n"):
            phase("not-one-line-per-write")
        if k == n:
            phase("writing")
            time.sleep(60)
        return real_write(fd, data)

    on_csv_rows(row)


def decoder_fails(n: int) -> None:
    """The decoder raises after n items (frames and chunks)."""
    from sec2sec import media

    iterate = media.MediaReader.__iter__

    def failing(self: Any) -> Iterator[Any]:
        for k, item in enumerate(iterate(self)):
            if k == n:
                raise RuntimeError("planted decoder failure")
            yield item

    media.MediaReader.__iter__ = failing


def mark_warm_up(n: int) -> None:
    """Only say when the warm-up starts (to show that something failed before it)."""
    from sec2sec.stream import AffectStream

    warm_up = AffectStream.warm_up

    def marked(self: Any) -> None:
        phase("warm-up")
        warm_up(self)

    AffectStream.warm_up = marked


def summary_full(n: int) -> None:
    """The disk is full when the CSV recorder writes its closing summary (the rows went to disk)."""
    from monitor import recorders

    write = recorders.write_json_atomic

    def full(path: Any, content: dict[str, Any], mode: int = 0o644) -> None:
        if content.get("summary") is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, content, mode)

    recorders.write_json_atomic = full


def hold_after_sinks(n: int) -> None:
    """Hold the phase right after the recorders were opened, while the pipeline is being built (before it
    owns them and before its signal handlers are installed): a signal lands here."""
    from monitor import pipeline

    hold(pipeline.Pipeline, "__init__", "sinks-open")


def hold_before_handlers(n: int) -> None:
    """Hold the phase after the pipeline was built, before its signal handlers are installed."""
    from monitor import cli

    hold(cli, "_run_pipeline", "built")


def sink_timeout(n: int) -> None:
    """A sink write that has not returned after n seconds ends the run; say when a JSONL write blocks > 0.5 s."""
    from monitor import pipeline, recorders

    pipeline.SINK_WRITE_TIMEOUT_S = float(n)
    write = recorders.JsonlRecorder.write

    def watched(self: Any, estimate: Any) -> None:
        alarm = threading.Timer(0.5, phase, ("stuck",))
        alarm.start()
        try:
            write(self, estimate)
        finally:
            alarm.cancel()

    recorders.JsonlRecorder.write = watched


def mic_refuses(n: int) -> None:
    """PortAudio refuses to open the (real, existing) input device, as a device held by another program does."""
    import sounddevice

    def refuse(**kwargs: Any) -> Any:
        raise sounddevice.PortAudioError("Device unavailable", -9985)

    sounddevice.InputStream = refuse
    mark_warm_up(n)


def mic_stop_blocks(n: int) -> None:
    """The real input stream records, but its stop() blocks for ever (ALSA after a USB device was unplugged)."""
    import sounddevice

    real = sounddevice.InputStream

    class Unplugged(real):  # type: ignore[misc, valid-type]
        def stop(self, *args: Any, **kwargs: Any) -> None:
            phase("stop-blocks")
            threading.Event().wait()

    sounddevice.InputStream = Unplugged


FAULTS: dict[str, Callable[[int], None]] = {
    "mic-stop-blocks": mic_stop_blocks,
    "summary-full": summary_full,
    "hold-after-sinks": hold_after_sinks,
    "hold-before-handlers": hold_before_handlers,
    "sink-timeout": sink_timeout,
    "mic-refuses": mic_refuses,
    "slow-open": slow_open,
    "slow-warm-up": slow_warm_up,
    "slow-drain": slow_drain,
    "stuck-stdout": stuck_stdout,
    "disk-full": disk_full,
    "slow-row": slow_row,
    "decoder-fails": decoder_fails,
    "mark-warm-up": mark_warm_up,
}


def main(argv: list[str]) -> int:
    fault, n, separator, *cli_args = argv
    if separator != "--" or fault not in FAULTS:
        raise SystemExit(f"usage: fault_runner.py {{{','.join(FAULTS)}}} N -- <sec2sec-live arguments>")
    FAULTS[fault](int(n))
    from monitor.cli import main as live

    return live(cli_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
