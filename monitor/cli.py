"""`sec2sec-live`: watch a camera and microphone (or a microphone alone), or replay a file as if live, and
report affect every second.

Exit codes: 0 normal end, 130 Ctrl-C, 143 SIGTERM, 2 bad input (one line on stderr, before the model's
warm-up: files, output paths and devices are opened first), 1 a failure while running (a source, the model or
a recorder; one line on stderr naming it; every row recorded so far is kept, the sidecar summary written).
Signals: before the run, SIGINT/SIGTERM abort at once; during it they ask the pipeline to stop, which finishes
the window in flight and closes the recorders (bounded, a few seconds); a second signal changes nothing.

`sec2sec-live plot SESSION.csv [-o PNG] [--size WxH]` draws a recorded session as a PNG ("wrote PATH" on
stdout; a file that is not a session CSV is one line `error: ...` on stderr and exit code 2). The plot reads
the monitor's own files (the CSV and sidecar that `--csv` writes; their format lives in `monitor/session_csv.py`,
beside the recorder), so it is the monitor's command, not `sec2sec`'s: the model library never imports
`monitor`. `main` hands an argv that starts with `plot` to that command's own small parser; any other argv is a
run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitor.assembly import open_pipeline
from monitor.queues import first_line
from monitor.replay import CLOCKS
from monitor.run_end import EXIT_OK, EndReason, RunEnd, Terminated
from monitor.run_options import check_args
from monitor.session_csv import read_session
from monitor.session_plot import DEFAULT_SIZE, default_output, plot_session
from sec2sec.config import config_help
from sec2sec.devices import DEVICE_HELP
from sec2sec.precision import PRECISION_HELP, PRECISIONS
from sec2sec.warning_line import show_warning

if TYPE_CHECKING:  # the heavy imports (torch, PyAV, rich) wait until a run needs them: --help stays instant
    from monitor.pipeline import Pipeline

EXIT_USAGE = 2  # bad input, before the run (the exit codes of a run's end are `RunEnd.exit_code`'s)
PLOT_EPILOG = "sec2sec-live plot SESSION.csv: draw a recorded session as a PNG (see sec2sec-live plot --help)"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it says something: not for None, not for a flag's False, and not
    where the help already states its default (argparse's own would print "(default: None)" after it). Wraps
    the description and epilog at spaces only."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:  # not `in`: 0 == False
            return text
        return super()._get_help_string(action) or text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """The description and epilog wrapped at spaces only, so "sec2sec-live" is never split at its hyphen."""
        words = " ".join(text.split())
        return textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sec2sec-live",
        description="Real-time apparent-affect monitor: one estimate per second from video and audio.",
        epilog=PLOT_EPILOG,
        formatter_class=DefaultsFormatter,
    )
    src = p.add_argument_group("input (one of --camera, --mic/--no-camera, --replay, --list-devices)")
    src.add_argument("--camera", metavar="N|PATH", help="camera index (0, 1, ...) or a device path / stream URL")
    src.add_argument(
        "--mic", metavar="N|NAME", default=None, help="microphone by index or name substring (default input)"
    )
    src.add_argument("--no-mic", action="store_true", help="video only: record no audio (audio_ok=0)")
    src.add_argument(
        "--no-camera", action="store_true", help="microphone only (implied by --mic without --camera; video_ok=0)"
    )
    src.add_argument("--replay", metavar="FILE", help="replay a media file as if it were live")
    src.add_argument("--clock", choices=CLOCKS, default="realtime", help="replay pacing (see README)")
    src.add_argument("--speed", type=float, default=1.0, help="replay speed with --clock realtime")
    src.add_argument("--list-devices", action="store_true", help="list microphones and cameras, then exit")
    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="PATH", help="trained checkpoint (.pt from `sec2sec train`)")
    model.add_argument("--config", metavar="NAME|FILE", help=config_help())
    model.add_argument("--device", default="auto", help=DEVICE_HELP)
    model.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="seconds of history per estimate (0: carry state forever; default: the training clip length)",
    )
    model.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    model.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: one per core)")
    out = p.add_argument_group("output")
    out.add_argument("--csv", metavar="PATH", help="one row per window (+ PATH.json sidecar)")
    out.add_argument("--jsonl", metavar="PATH", help="one JSON object per window")
    out.add_argument(
        "--lsl",
        nargs="?",
        const="sec2sec",
        metavar="NAME",
        help="publish a Lab Streaming Layer stream NAME (default name: sec2sec); needs pylsl",
    )
    out.add_argument("--zmq", metavar="ENDPOINT", help="publish on a ZeroMQ PUB socket, e.g. tcp://127.0.0.1:5556")
    out.add_argument("--no-ui", action="store_true", help="print one plain line per window instead of the dashboard")
    out.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of input")
    p.set_defaults(model=None)  # `Options.model`: the API may pass a loaded model; the CLI loads its own
    return p


def parse_size(text: str) -> tuple[int, int]:
    """'1600x900' -> (1600, 900)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 1600x900") from None
    return width, height


def build_plot_parser() -> argparse.ArgumentParser:
    """The parser of `sec2sec-live plot`."""
    p = argparse.ArgumentParser(
        prog="sec2sec-live plot", description="Draw a session CSV from `sec2sec-live --csv` as a PNG."
    )
    p.add_argument("session", metavar="SESSION.csv", help="the CSV (its SESSION.csv.json sidecar is read too)")
    p.add_argument("-o", "--output", metavar="PNG", help="where to write the picture (default: SESSION.png beside it)")
    width, height = DEFAULT_SIZE
    p.add_argument(
        "--size",
        type=parse_size,
        default=DEFAULT_SIZE,
        metavar="WxH",
        help=f"picture size in pixels (default: {width}x{height})",
    )
    return p


def plot(args: argparse.Namespace) -> int:
    """`sec2sec-live plot ...`: read the session, write the PNG, say where."""
    out = plot_session(read_session(args.session), args.output or default_output(args.session), size=args.size)
    print(f"wrote {out}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    check_args(args)
    pipeline = open_pipeline(args)
    try:
        return _run_pipeline(pipeline, args)
    except BaseException as exc:  # a signal before the pipeline's handlers took over: close what is open
        end = RunEnd.cut_short(exc)
        pipeline.stop(end.reason, end.message)
        raise


def _run_pipeline(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Run with signals turned into stop requests, print the closing line, and give the exit code. When a
    thread could not be joined (a sink or a device stuck in the OS, a terminal that stopped reading), the
    process exits at once instead of hanging. The handlers are installed before the dashboard starts and do
    not depend on it; its start and stop are bounded."""
    from monitor.dashboard import Dashboard

    dashboard = None if args.no_ui else Dashboard(pipeline.snapshot)
    handlers = _on_signals(
        lambda signum, _: pipeline.request_stop(
            EndReason.INTERRUPTED if signum == signal.SIGINT else EndReason.TERMINATED
        )
    )
    try:
        if dashboard is not None:
            dashboard.start()
        end = pipeline.run()
    finally:
        if dashboard is not None:
            dashboard.stop()
        _restore_signals(handlers)
    code = _report(pipeline, end)
    if pipeline.abandoned or (dashboard is not None and dashboard.abandoned):
        sys.stderr.flush()
        os._exit(code)  # a stuck thread would hang the interpreter's exit; every recorder is already closed
    return code


def _report(pipeline: Pipeline, end: RunEnd) -> int:
    """The closing lines on stderr (the totals and what ended the run; the error, or a warning that came with a
    signal) and the exit code, both as `end` says."""
    s = pipeline.summary()
    p50 = "-" if s["latency_p50_ms"] is None else f"{s['latency_p50_ms']:.0f} ms"
    p99 = "-" if s["latency_p99_ms"] is None else f"{s['latency_p99_ms']:.0f} ms"
    skipped = sum(source.counters().get("damaged_packets_skipped", 0) for source in pipeline.sources)
    damage = f", {skipped} damaged packets skipped" if skipped else ""
    totals = f"{s['windows']} windows, {s['dropped']} dropped{damage}, latency p50 {p50} p99 {p99}"
    for line in end.closing_lines(totals):
        print(line, file=sys.stderr)
    return end.exit_code


Handler = Callable[[int, Any], None]


def _on_signals(handler: Handler) -> dict[int, Any]:
    """Install `handler` for SIGINT and SIGTERM (main thread only); the previous handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plotting = argv[:1] == ["plot"]
    args = build_plot_parser().parse_args(argv[1:]) if plotting else build_parser().parse_args(argv)
    warnings.showwarning = show_warning
    previous = _on_signals(signal.default_int_handler)  # SIGINT -> KeyboardInterrupt
    if previous:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if plotting:
            return plot(args)
        if args.list_devices:
            from monitor.microphone import list_devices

            print(list_devices())
            return EXIT_OK
        return run(args)
    except ValueError as exc:
        print(f"error: {first_line(exc, with_type=False)}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as exc:  # a signal before the run: nothing was recorded yet
        end = RunEnd.cut_short(exc)
        print(end.reason.value, file=sys.stderr)
        return end.exit_code
    finally:
        _restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
