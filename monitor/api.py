"""The Python API under `sec2sec-live`: load a model, estimate a whole file, or iterate a live run.

    from monitor.api import estimate_file, live, load_model

    model = load_model(checkpoint="runs/liris/best.pt")       # or load_model(config="configs/default.toml")
    records = estimate_file("talk.mp4", model)                # one dict per second, the CSV's fields
    for estimate in live(camera=0, model=model):              # leaving the loop stops the run
        ...

The CLI (`monitor/cli.py`) parses its arguments into an `argparse.Namespace` and calls the same functions
(`build_model`, `open_sources`, `build_pipeline`) with it; the API passes an `Options`, which carries the same
field names, so there is one way to build a run.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.session_csv import LOSS_COLUMNS
from sec2sec.config import NANOS_PER_SECOND
from sec2sec.precision import check_precision

if TYPE_CHECKING:  # the heavy imports (torch, PyAV) wait until a run needs them
    import torch

    from monitor.outlets import QueuedOutlet
    from monitor.pipeline import Pipeline
    from monitor.queues import BoundedQueue
    from monitor.sinks import Sink
    from monitor.sources import Source
    from sec2sec.model import Sec2Sec
    from sec2sec.stream import AffectStream, Estimate

INPUT_COUNTERS = (  # (sidecar key, source attribute) of the input report, where a source has them
    ("overflows", "overflows"),
    ("queue_drops", "queue_drops"),
    ("restamps", "discontinuities"),
    ("samples_lost", "samples_lost"),
    ("samples_restamped", "samples_restamped"),
    ("backlog_dropped", "backlog"),  # the camera's frames buffered before the run, dropped at its start
)
INPUT_QUEUE = 512  # frames (already at the model's input size) + chunks: ~10 s of 30 fps video, 20 ms audio
ESTIMATE_QUEUE = 64  # estimates waiting for a `for` loop that is busy (a live run drops windows meanwhile)
PATH_FIELDS = ("replay", "checkpoint", "config", "csv", "jsonl")
STOP_TIMEOUT_S = 10.0  # leaving a live loop waits this long for the pipeline's bounded shutdown


@dataclass(frozen=True)
class LoadedModel:
    """A model from `load_model()`: the network, whether it was trained, and what the sidecar records of it
    (checkpoint path and sha256, or none for an untrained model built from a config)."""

    model: Sec2Sec
    trained: bool
    info: dict[str, Any]

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the model's outputs, in order (e.g. ("valence", "arousal"))."""
        return tuple(self.model.config.heads.outputs)


@dataclass(frozen=True)
class Options:
    """One run, with the CLI's option names (`--no-mic` is `no_mic`); defaults as the CLI's."""

    camera: int | str | None = None
    mic: str | None = None
    no_mic: bool = False
    no_camera: bool = False
    replay: str | Path | None = None
    clock: str = "realtime"
    speed: float = 1.0
    checkpoint: str | Path | None = None
    config: str | Path | None = None
    device: str = "auto"
    horizon: int | None = None
    precision: str = "auto"  # the encoders' arithmetic: auto, float32 or bfloat16 (sec2sec.precision)
    threads: int = 0
    csv: str | Path | None = None
    jsonl: str | Path | None = None
    no_ui: bool = False
    duration: float | None = None
    lsl: str | None = None
    zmq: str | None = None
    model: LoadedModel | None = None  # API only: a model from load_model(), reused instead of loading again


RunArgs = Options | argparse.Namespace  # the CLI passes its parsed arguments, which carry the same names


class Terminated(BaseException):
    """SIGTERM arrived before the pipeline was running (opening, loading, warm-up): abort with exit 143."""


def check_args(args: RunArgs) -> None:
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
    check_precision(args.precision)


def ended_by(exc: BaseException) -> str:
    """How a run that an exception cut short ended, in the words of the sidecar's `ended_by`."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, Terminated):
        return "terminated"
    return f"error: {type(exc).__name__}"


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


def build_model(args: RunArgs) -> tuple[Sec2Sec, bool, dict[str, Any]]:
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


def open_sources(args: RunArgs, inputs: BoundedQueue) -> tuple[list[Source], bool, bool, str]:
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
    args: RunArgs,
    names: tuple[str, ...],
    sidecar: dict[str, Any],
    sources: list[Source],
    outlets: Sequence[QueuedOutlet] = (),
) -> list[Sink]:
    from monitor.recorders import CsvRecorder, JsonlRecorder

    def input_report() -> dict[str, Any]:
        """Per source, what it captured and lost over the whole run (also what no row holds: before the
        first window, after the last)."""
        report: dict[str, Any] = {"damaged_packets_skipped": sum(getattr(source, "skipped", 0) for source in sources)}
        for source in sources:
            status = source.status
            entry = {"items": status.items, "dropped": status.dropped}
            for key, attribute in INPUT_COUNTERS:
                if hasattr(source, attribute):
                    entry[key] = int(getattr(source, attribute))
            report[status.name] = entry
        return report

    def outputs_report() -> dict[str, Any]:
        return {outlet.kind: outlet.report() for outlet in outlets}

    sinks: list[Sink] = list(outlets)  # closed before the CSV, whose sidecar records what they sent
    try:
        if args.csv:
            report = outputs_report if outlets else None
            sinks.append(CsvRecorder(args.csv, names, sidecar, input_report=input_report, outputs_report=report))
        if args.jsonl:
            sinks.append(JsonlRecorder(args.jsonl, names))
    except BaseException as exc:  # a path that failed after all, or a signal: close what was opened
        close_sinks(sinks, ended_by(exc))
        raise
    if args.no_ui:
        sinks.append(PlainPrinter(names))
    return sinks


def sidecar_for(args: RunArgs, model: Sec2Sec, trained: bool, info: dict[str, Any]) -> dict[str, Any]:
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


def build_pipeline(
    args: RunArgs,
    inputs: BoundedQueue,
    sources: list[Source],
    has_video: bool,
    has_audio: bool,
    what: str,
    outlets: Sequence[QueuedOutlet] = (),
) -> Pipeline:
    """Model (built, devices opened at its input size and rate, then warmed up), windower, sinks, pipeline."""
    import torch

    from monitor.pipeline import Pipeline
    from sec2sec.devices import resolve_device, torch_threads
    from sec2sec.precision import resolve_precision
    from sec2sec.windows import Windower

    torch.set_num_threads(torch_threads(args.threads))
    device = resolve_device(args.device)
    resolve_precision(args.precision, device)  # bfloat16 on a device without it: a usage error, before the model
    loaded = getattr(args, "model", None)
    model, trained, info = (loaded.model, loaded.trained, dict(loaded.info)) if loaded else build_model(args)
    warning = check_streams(model, has_video, has_audio, what)
    cfg = model.config
    for source in sources:  # frames leave the decoder/camera thread at the model's size; the mic opens here
        source.prepare(cfg.video.resize, cfg.audio.sample_rate, cfg.video.frames_per_window)
    stream = warmed_stream(model, args.horizon, device, args.precision, info)
    windower = Windower(
        cfg.video.frames_per_window, cfg.audio.sample_rate, expect_video=has_video, expect_audio=has_audio
    )
    sidecar = sidecar_for(args, model, trained, info)
    for outlet in outlets:
        outlet.start(stream.config.heads.outputs, outlet_description(sidecar))
    sinks = open_sinks(args, stream.config.heads.outputs, sidecar, sources, outlets)
    where = "replay " + Path(args.replay).name if args.replay else what
    try:  # from here until the pipeline owns them, an exception (a signal) closes the sinks
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
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
    except BaseException as exc:
        close_sinks(sinks, ended_by(exc))
        raise
    pipeline.message = warning
    for outlet in outlets:
        outlet.capture_end_ns = capture_clock(args, pipeline)
    return pipeline


def warmed_stream(
    model: Sec2Sec, horizon: int | None, device: torch.device, precision: str, info: dict[str, Any]
) -> AffectStream:
    """The model's stream on `device`, warmed up: the warm-up checks the encoders' precision against float32
    (a bfloat16 that disagrees falls back to float32) and runs every stage once before any window is timed.
    What was used and the check's figures go into `info` (the sidecar's)."""
    from sec2sec.precision import resolve_precision
    from sec2sec.stream import AffectStream

    stream = AffectStream(model, horizon=horizon, device=device, precision=resolve_precision(precision, device))
    stream.warm_up()
    info["precision"] = stream.precision_used
    info["precision_check"] = {
        "requested": precision,
        **{k: {"relative_error": v.relative_error, "min_cosine": v.min_cosine} for k, v in stream.parity.items()},
    }
    return stream


def open_outlets(args: RunArgs) -> list[QueuedOutlet]:
    """The live outputs (`--zmq`, `--lsl`), opened before anything slow: a port in use or a missing library
    is a ValueError (one line) at once. Their channels are declared later, by build_pipeline."""
    from monitor.outlets import LslOutlet, ZmqPublisher, host_name, lsl_source_id

    outlets: list[QueuedOutlet] = []
    try:
        if args.zmq:
            outlets.append(ZmqPublisher(args.zmq))
        if args.lsl:
            where = f"replay {Path(args.replay).resolve()}" if args.replay else f"camera {args.camera} mic {args.mic}"
            model_id = f"checkpoint {Path(args.checkpoint).resolve()}" if args.checkpoint else f"config {args.config}"
            rate = (args.speed if args.clock == "realtime" else 0.0) if args.replay else 1.0
            outlets.append(LslOutlet(args.lsl, lsl_source_id(host_name(), where, model_id), rate))
    except BaseException:
        close_all(outlets)
        raise
    return outlets


def close_all(outlets: Sequence[QueuedOutlet]) -> None:
    for outlet in outlets:
        outlet.close("error")


def close_sinks(sinks: Sequence[Sink], how: str) -> None:
    """Close sinks that no pipeline owns yet (a signal or a failure while the run was being built)."""
    for sink in sinks:
        sink.close(how)


def outlet_description(sidecar: dict[str, Any]) -> dict[str, Any]:
    """What an LSL stream's description carries: software, model, checkpoint and its sha256, untrained."""
    config = sidecar["config"]
    return {
        "software": f"sec2sec-live {sidecar['sec2sec_version']}",
        "model": f"{config['temporal']['kind']} over {config['fusion']['modalities']}",
        "checkpoint": sidecar.get("checkpoint"),
        "checkpoint_sha256": sidecar.get("checkpoint_sha256"),
        "untrained": str(sidecar["untrained"]).lower(),
        "window_s": 1,
        "horizon_s": sidecar["horizon_s"],
    }


def capture_clock(args: RunArgs, pipeline: Pipeline) -> Callable[[Estimate], int | None]:
    """The monotonic time (ns) of a window's end on the capture clock: live, the sources' clock from the run's
    origin; a realtime replay, the paced media time (divided by --speed); None where the input is not paced
    (offline and virtual replay: no capture happens in real time)."""
    if not args.replay:
        return lambda estimate: pipeline.origin_ns + (estimate.index + 1) * NANOS_PER_SECOND
    if args.clock != "realtime":
        return lambda estimate: None
    replay, speed = pipeline.sources[0], args.speed

    def paced(estimate: Estimate) -> int | None:
        origin = getattr(replay, "origin_ns", None)
        return None if origin is None else origin + int((estimate.index + 1) * NANOS_PER_SECOND / speed)

    return paced


def open_pipeline(args: RunArgs) -> Pipeline:
    """Everything a run needs, in the order that makes bad input fail fast: output paths, live outputs,
    sources (files and devices), then the model, its warm-up and the recorders."""
    from monitor.queues import BoundedQueue

    check_outputs(args)
    outlets = open_outlets(args)
    inputs: BoundedQueue = BoundedQueue(INPUT_QUEUE)
    try:
        sources, has_video, has_audio, what = open_sources(args, inputs)
    except BaseException:
        close_all(outlets)
        raise
    try:
        return build_pipeline(args, inputs, sources, has_video, has_audio, what, outlets)
    except BaseException:
        stop_all(sources)
        close_all(outlets)
        raise


def load_model(checkpoint: str | Path | None = None, config: str | Path | None = None) -> LoadedModel:
    """A trained model from `checkpoint` (a .pt from `sec2sec train`; `config`, when given too, must match
    it), or an untrained one from a TOML `config` (default: the built-in default.toml values), seeded so that
    every load gives the same weights. Raises ValueError naming the problem."""
    model, trained, info = build_model(Options(checkpoint=checkpoint, config=config))
    return LoadedModel(model, trained, info)


def record_of(estimate: Estimate, outputs: tuple[str, ...]) -> dict[str, Any]:
    """One estimate as the CSV row's fields, in the CSV's column order, as numbers (attribution as a list)."""
    return {
        "window": estimate.index,
        "start_s": estimate.start_s,
        "end_s": estimate.end_s,
        **{name: float(estimate.outputs[name]) for name in outputs},
        "attribution": [float(weight) for weight in estimate.attribution],
        "video_ok": int(estimate.video_ok),
        "audio_ok": int(estimate.audio_ok),
        "frames": estimate.frames_seen,
        "audio_coverage": float(estimate.audio_coverage),
        "latency_ms": None if estimate.latency_ns is None else estimate.latency_ns / 1e6,
        "dropped_total": estimate.dropped_total,
        **{column: getattr(estimate, column) for column in LOSS_COLUMNS},
    }


class RunFailed(RuntimeError):
    """A live run ended with an error (a source, the model or an output failed); the message names it."""


class LiveRun:
    """A running pipeline seen as an iterator of `Estimate`s, one per window, in order.

    `for estimate in run:` starts the run (sources, then the pipeline in a thread of its own) and ends when the
    input ends, the `duration` is reached, or the loop is left (`break`, an exception, Ctrl-C): leaving it
    stops the pipeline, releases camera and microphone and closes every output, within seconds. A loop body
    slower than the input holds up estimates, never capture: a live run drops windows meanwhile (counted in
    `dropped_total`), an offline replay waits. A run that fails raises RunFailed after its last estimate.
    Use it once; `with live(...) as run:` stops it on leaving the block even if it was never iterated."""

    def __init__(self, pipeline: Pipeline) -> None:
        from monitor.queues import BoundedQueue

        self.pipeline = pipeline
        self.outputs = pipeline.names
        self.ended_by = ""
        self._estimates: BoundedQueue[Estimate] = BoundedQueue(ESTIMATE_QUEUE)
        self._thread: threading.Thread | None = None
        pipeline.on_estimate = self._put

    def _put(self, estimate: Estimate) -> None:
        """On the pipeline's worker: hand the estimate to the loop; give up once the loop has been left."""
        while not self._estimates.put_wait(estimate, timeout=0.1):
            if self._estimates.closed:
                return

    def _run(self) -> None:
        try:
            self.ended_by = self.pipeline.run()
        finally:
            self._estimates.close()

    def __iter__(self) -> Iterator[Estimate]:
        from monitor.queues import Closed

        if self._thread is not None:
            raise RuntimeError("a live run is iterated once; call live(...) again for another run")
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()
        try:
            while True:
                try:
                    estimate = self._estimates.get(timeout=0.1)
                except Closed:
                    break
                if estimate is not None:
                    yield estimate
        finally:
            self.close()
        if self.ended_by.startswith("error"):
            raise RunFailed(self.ended_by.removeprefix("error: "))

    def close(self) -> None:
        """Stop the run (idempotent, bounded): the loop's queue first, so the worker never waits on it."""
        self._estimates.close()
        self.pipeline.request_stop("stopped")
        if self._thread is None:
            self.pipeline.stop()
            self.ended_by = self.pipeline.ended_by
        else:
            self._thread.join(STOP_TIMEOUT_S)

    def summary(self) -> dict[str, Any]:
        """Windows, drops, latency p50/p99 (ms) and what ended the run."""
        return self.pipeline.summary()

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_outputs(args: RunArgs) -> None:
    """Every output file is checked before anything slow: writable (the CSV's sidecar too) and no two naming one
    file. Raises ValueError (one line)."""
    from monitor.recorders import check_outputs as check_paths

    check_paths([("--csv", args.csv), ("--jsonl", args.jsonl)])


def live(options: Options | None = None, **fields: Any) -> LiveRun:
    """Open a run (the sources, the model, its warm-up and the outputs) and return it, not yet started:
    `for estimate in live(camera=0, model=model):`, `live(replay="talk.mp4", clock="virtual")`,
    `live(no_camera=True)` for the microphone alone. Fields are `Options`' (the CLI's option names).
    Raises ValueError (one line) for bad input before the model loads."""
    args = replace(options or Options(), **fields)
    paths = {key: str(getattr(args, key)) for key in PATH_FIELDS if getattr(args, key) is not None}
    args = replace(args, **paths)  # the sidecar records them as text
    check_args(args)
    pipeline = open_pipeline(args)
    return LiveRun(pipeline)


def estimate_file(path: str | Path, model: LoadedModel | None = None, **fields: Any) -> list[dict[str, Any]]:
    """Every second of a media file, as fast as the model allows (the offline clock: nothing dropped), as
    one dict per window with the CSV's fields (`record_of`). `model` from `load_model()` (default: an
    untrained model from the built-in config); other fields as `Options` (e.g. `duration=10`, `csv="x.csv"`)."""
    with live(replay=path, clock="offline", model=model, **fields) as run:
        return [record_of(estimate, run.outputs) for estimate in run]
