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


def slow_open(n: int) -> None:
    """Opening the replay file takes for ever."""
    from monitor import replay

    original = replay.FileReplay.__init__

    def opening(self: Any, *args: Any, **kwargs: Any) -> None:
        phase("opening")
        time.sleep(FOREVER_S)
        original(self, *args, **kwargs)

    replay.FileReplay.__init__ = opening


def slow_warm_up(n: int) -> None:
    """The model's warm-up takes for ever."""
    from sec2sec.stream import AffectStream

    def warm_up(self: Any) -> None:
        phase("warm-up")
        time.sleep(FOREVER_S)

    AffectStream.warm_up = warm_up


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
    from monitor import api

    write = api.PlainPrinter.write

    def blocking(self: Any, estimate: Any) -> None:
        if estimate.index >= n:
            phase("stuck")
            threading.Event().wait()
        write(self, estimate)

    api.PlainPrinter.write = blocking


def disk_full(n: int) -> None:
    """The CSV's disk fills up at window n."""
    from monitor import recorders

    write = recorders.CsvRecorder.write

    def full(self: Any, estimate: Any) -> None:
        if estimate.index >= n:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, estimate)

    recorders.CsvRecorder.write = full


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


FAULTS: dict[str, Callable[[int], None]] = {
    "slow-open": slow_open,
    "slow-warm-up": slow_warm_up,
    "slow-drain": slow_drain,
    "stuck-stdout": stuck_stdout,
    "disk-full": disk_full,
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
