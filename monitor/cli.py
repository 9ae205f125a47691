"""`sec2sec-live`: watch a camera and microphone (or a microphone alone), or replay a file as if live, and
report affect every second.

Exit codes: 0 normal end, 130 Ctrl-C, 143 SIGTERM, 2 bad input (one line on stderr, before the model's
warm-up: files, output paths and devices are opened first), 1 a failure while running (a source, the model or
a recorder; one line on stderr naming it; every row recorded so far is kept, the sidecar summary written).
Signals: before the run, SIGINT/SIGTERM abort at once; during it they ask the pipeline to stop, which finishes
the window in flight and closes the recorders (bounded, a few seconds); a second signal changes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.replay import CLOCKS
from sec2sec.cli import show_warning
from sec2sec.config import config_help
from sec2sec.devices import DEVICE_HELP

if TYPE_CHECKING:  # the heavy imports (torch, PyAV, rich) wait until a run needs them: --help stays instant
    from monitor.pipeline import Pipeline
    from monitor.queues import BoundedQueue
    from monitor.sinks import Sink
    from monitor.sources import Source
    from sec2sec.model import Sec2Sec
    from sec2sec.stream import Estimate

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
INPUT_QUEUE = 512  # frames (already at the model's input size) + chunks: ~10 s of 30 fps video, 20 ms audio


class Terminated(BaseException):
    """SIGTERM arrived before the pipeline was running (opening, loading, warm-up): abort with exit 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it says something: not for None, not for a flag's False, and not
    where the help already states its default (argparse's own would print "(default: None)" after it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:  # not `in`: 0 == False
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sec2sec-live",
        description="Real-time apparent-affect monitor: one estimate per second from video and audio.",
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
    model.add_argument(
        "--no-compile",
        action="store_true",
        help="run the encoders eagerly (default: cached AOTInductor packages, built once on first use; "
        "also SEC2SEC_COMPILE=0)",
    )
    model.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: one per core)")
    out = p.add_argument_group("output")
    out.add_argument("--csv", metavar="PATH", help="one row per window (+ PATH.json sidecar)")
    out.add_argument("--jsonl", metavar="PATH", help="one JSON object per window")
    out.add_argument("--no-ui", action="store_true", help="print one plain line per window instead of the dashboard")
    out.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of input")
    return p


class PlainPrinter:
    """`--no-ui`: one line per window on stdout."""

    name = "stdout"

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def write(self, estimate: Estimate) -> None:
        from monitor.dashboard import plain_line

        print(plain_line(estimate, self.names), flush=True)

    def close(self, ended_by: str = "end") -> None:
        sys.stdout.flush()


def check_args(args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range options with a one-line reason."""
    if args.replay is not None:
        if args.camera is not None or args.mic is not None or args.no_camera:
            raise ValueError("--replay takes video and audio from the file; drop --camera, --mic and --no-camera")
    elif args.camera is None and args.mic is None and not args.no_camera:
        raise ValueError("give an input: --camera N (live), --mic N or --no-camera (microphone only), --replay FILE")
    if args.camera is not None and args.no_camera:
        raise ValueError("--camera and --no-camera contradict each other; give one")
    if args.no_camera and args.no_mic:
        raise ValueError("--no-camera and --no-mic leave nothing to record; drop one")
    if args.no_mic and args.mic is not None:
        raise ValueError("--no-mic and --mic contradict each other; give one")
    if args.camera is not None and not str(args.camera).isdigit() and Path(args.camera).is_file():
        raise ValueError(f"--camera {args.camera} is a file; replay files with --replay {args.camera}")
    if args.speed <= 0:
        raise ValueError(f"--speed {args.speed} must be > 0 (1.0 is real time)")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration {args.duration} must be > 0 seconds")
    if args.horizon is not None and args.horizon < 0:
        raise ValueError(f"--horizon {args.horizon} must be 0 (carry state forever) or a number of seconds")
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads} must be >= 0 (0: one per core)")


def build_model(args: argparse.Namespace) -> tuple[Sec2Sec, bool, dict[str, Any]]:
    """The model from --checkpoint (trained) or --config (untrained), with what the sidecar records of it."""
    from sec2sec.checkpoint import load_model
    from sec2sec.config import Config, ModelConfig, load_config
    from sec2sec.model import Sec2Sec
    from sec2sec.weights import sha256_of

    config: ModelConfig | None = load_config(args.config).model if args.config else None
    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint, expect=config)
        info = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": sha256_of(args.checkpoint), "meta": ckpt.meta}
        return model, ckpt.trained, info
    import torch

    torch.manual_seed(0)  # an untrained model is still the same model on every run: replays are reproducible
    model = Sec2Sec(config or Config().model)
    return model, False, {"checkpoint": None, "checkpoint_sha256": None}


def check_streams(model: Sec2Sec, has_video: bool, has_audio: bool, what: str) -> str:
    """Refuse input the model cannot use at all; return a warning when one modality will be missing."""
    cfg = model.config
    if cfg.fusion.modalities == "video" and not has_video:
        raise ValueError(f"{what} has no video and this model uses video only; give a file with video")
    if cfg.fusion.modalities == "audio" and not has_audio:
        raise ValueError(f"{what} has no audio and this model uses audio only; give a file with audio")
    if cfg.uses_video and not has_video:
        return f"{what} has no video stream: running audio-only, every window has video_ok=0"
    if cfg.uses_audio and not has_audio:
        return f"{what} has no audio: running video-only, every window has audio_ok=0"
    return ""


def open_sources(args: argparse.Namespace, inputs: BoundedQueue) -> tuple[list[Source], bool, bool, str]:
    """Open the replay file, or the camera and/or microphone, before anything heavy is loaded, so bad input
    fails within a second or two. Returns the sources, whether video and audio will come, and a name."""
    from monitor.replay import FileReplay

    if args.replay is not None:
        replay = FileReplay(args.replay, inputs, paced=args.clock == "realtime", speed=args.speed)
        return [replay], replay.info.has_video, replay.info.has_audio, str(args.replay)
    sources: list[Source] = []
    try:
        if args.camera is not None:
            from monitor.camera import CameraSource

            device: int | str = int(args.camera) if str(args.camera).isdigit() else args.camera
            sources.append(CameraSource(device, inputs, time.monotonic_ns()))  # the clock restarts at start()
        if not args.no_mic:
            from monitor.microphone import MicrophoneSource

            mic_device: int | str | None = int(args.mic) if args.mic and args.mic.isdigit() else args.mic
            sources.append(MicrophoneSource(mic_device, inputs, time.monotonic_ns()))
    except BaseException:
        stop_all(sources)
        raise
    has_video = args.camera is not None
    what = f"camera {args.camera}" if has_video else "the microphone alone (--no-camera)"
    return sources, has_video, not args.no_mic, f"{what} with --no-mic" if args.no_mic else what


def stop_all(sources: list[Source]) -> None:
    for source in sources:
        source.stop()


def open_sinks(
    args: argparse.Namespace, names: tuple[str, ...], sidecar: dict[str, Any], sources: list[Source]
) -> list[Sink]:
    from monitor.recorders import CsvRecorder, JsonlRecorder

    def input_report() -> dict[str, Any]:
        return {"damaged_packets_skipped": sum(getattr(source, "skipped", 0) for source in sources)}

    sinks: list[Sink] = []
    try:
        if args.csv:
            sinks.append(CsvRecorder(args.csv, names, sidecar, input_report=input_report))
        if args.jsonl:
            sinks.append(JsonlRecorder(args.jsonl, names))
    except ValueError:
        for sink in sinks:
            sink.close("error")
        raise
    if args.no_ui:
        sinks.append(PlainPrinter(names))
    return sinks


def sidecar_for(args: argparse.Namespace, model: Sec2Sec, trained: bool, info: dict[str, Any]) -> dict[str, Any]:
    import torch

    from sec2sec import __version__
    from sec2sec.config import to_dict

    source = (
        {"replay": args.replay, "clock": args.clock, "speed": args.speed}
        if args.replay
        else {"camera": args.camera, "microphone": None if args.no_mic else (args.mic or "default")}
    )
    return {
        "sec2sec_version": __version__,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "untrained": not trained,
        "pretrained_encoders": model.pretrained,
        "config": to_dict(model.config),
        "horizon_s": model.config.clip_seconds if args.horizon is None else args.horizon,
        "torch_threads": torch.get_num_threads(),
        **info,
    }


def run(args: argparse.Namespace) -> int:
    check_args(args)
    from monitor.queues import BoundedQueue
    from monitor.recorders import check_writable

    for path in (args.csv, args.jsonl):
        if path:
            check_writable(path)
    inputs: BoundedQueue = BoundedQueue(INPUT_QUEUE)
    sources, has_video, has_audio, what = open_sources(args, inputs)
    try:
        pipeline = build_pipeline(args, inputs, sources, has_video, has_audio, what)
    except BaseException:
        stop_all(sources)
        raise
    return _run_pipeline(pipeline, args)


def build_pipeline(
    args: argparse.Namespace, inputs: BoundedQueue, sources: list[Source], has_video: bool, has_audio: bool, what: str
) -> Pipeline:
    """Model (built, devices opened at its input size and rate, then warmed up), windower, sinks, pipeline."""
    import torch

    from monitor.pipeline import Pipeline
    from sec2sec.compiled import LIVE_BATCH, compile_model, compile_requested
    from sec2sec.devices import resolve_device
    from sec2sec.stream import AffectStream
    from sec2sec.windows import Windower

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = resolve_device(args.device)
    model, trained, info = build_model(args)
    warning = check_streams(model, has_video, has_audio, what)
    cfg = model.config
    for source in sources:  # frames leave the decoder/camera thread at the model's size; the mic opens here
        source.prepare(cfg.video.resize, cfg.audio.sample_rate, cfg.video.frames_per_window)
    stream = AffectStream(model, horizon=args.horizon, device=device)
    if compile_requested(args.no_compile):
        info["compiled_encoders"] = compile_model(stream.model, max_batch=LIVE_BATCH)
    else:
        info["compiled_encoders"] = {}
    stream.warm_up()  # first forward of every stage happens before any window is timed
    windower = Windower(
        cfg.video.frames_per_window, cfg.audio.sample_rate, expect_video=has_video, expect_audio=has_audio
    )
    sinks = open_sinks(args, stream.config.heads.outputs, sidecar_for(args, model, trained, info), sources)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    where = "replay " + Path(args.replay).name if args.replay else what
    pipeline = Pipeline(
        stream,
        sources,
        inputs,
        windower,
        sinks,
        clock=args.clock if args.replay else "live",
        max_windows=None if args.duration is None else max(1, round(args.duration)),
        title=f"sec2sec-live — {where}",
        untrained=not trained,
    )
    pipeline.message = warning
    return pipeline


def _run_pipeline(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Run with signals turned into stop requests, print the closing line, and give the exit code. When a
    thread could not be joined (a sink stuck in the OS), the process exits at once instead of hanging."""
    from monitor.dashboard import Dashboard

    dashboard = None if args.no_ui else Dashboard(pipeline.snapshot)
    handlers = _on_signals(
        lambda signum, _: pipeline.request_stop("interrupted" if signum == signal.SIGINT else "terminated")
    )
    try:
        if dashboard is not None:
            dashboard.start()
        ended_by = pipeline.run()
    finally:
        if dashboard is not None:
            dashboard.stop()
        _restore_signals(handlers)
    code = _report(pipeline, ended_by)
    if pipeline.abandoned:
        sys.stderr.flush()
        os._exit(code)  # a stuck thread would hang the interpreter's exit; every recorder is already closed
    return code


def _report(pipeline: Pipeline, ended_by: str) -> int:
    """The closing line (and the one error line) on stderr; the exit code."""
    s = pipeline.summary()
    p50 = "-" if s["latency_p50_ms"] is None else f"{s['latency_p50_ms']:.0f} ms"
    p99 = "-" if s["latency_p99_ms"] is None else f"{s['latency_p99_ms']:.0f} ms"
    skipped = sum(getattr(source, "skipped", 0) for source in pipeline.sources)
    damage = f", {skipped} damaged packets skipped" if skipped else ""
    failed = ended_by.startswith("error")
    print(
        f"{s['windows']} windows, {s['dropped']} dropped{damage}, latency p50 {p50} p99 {p99}; "
        f"ended by {'error' if failed else ended_by}",
        file=sys.stderr,
    )
    if failed:
        print(f"error: {ended_by.removeprefix('error: ')}", file=sys.stderr)
        return EXIT_FAILED
    return {"interrupted": EXIT_INTERRUPTED, "terminated": EXIT_TERMINATED}.get(ended_by, EXIT_OK)


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
    args = build_parser().parse_args(argv)
    warnings.showwarning = show_warning
    previous = _on_signals(signal.default_int_handler)  # SIGINT -> KeyboardInterrupt
    if previous:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if args.list_devices:
            from monitor.microphone import list_devices

            print(list_devices())
            return EXIT_OK
        return run(args)
    except ValueError as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        _restore_signals(previous)


if __name__ == "__main__":
    sys.exit(main())
