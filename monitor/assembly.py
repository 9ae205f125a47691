"""From a run's options to a pipeline ready to run, in the order that makes bad input fail fast: output paths,
live outputs (ZeroMQ, LSL), sources (file, camera, microphone), then the model, its warm-up and the recorders.
The CLI (`monitor/cli.py`) and the Python API (`monitor/api.py`) both build their runs with `open_pipeline`.
Whatever was opened is closed again when a later step fails or a signal arrives."""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.fields import check_output_names
from monitor.queues import first_line
from monitor.run_end import EndReason, RunEnd
from monitor.run_options import LoadedModel, RunArgs
from monitor.sinks import SinkSet
from sec2sec.config import NANOS_PER_SECOND

if TYPE_CHECKING:  # the heavy imports (torch, PyAV) wait until a run needs them
    import torch

    from monitor.outlets import QueuedOutlet
    from monitor.pipeline import Pipeline
    from monitor.sinks import Sink
    from monitor.sources import InputQueue, Source
    from sec2sec.model import Sec2Sec
    from sec2sec.stream import AffectStream, Estimate

INPUT_QUEUE = 512  # frames (already at the model's input size) + chunks: ~10 s of 30 fps video, 20 ms audio


def model_for_run(args: RunArgs) -> LoadedModel:
    """The model from --checkpoint (trained) or --config (untrained), with what the sidecar records of it."""
    from sec2sec.checkpoint import model_from_checkpoint
    from sec2sec.config import Config, ModelConfig, load_config
    from sec2sec.model import Sec2Sec
    from sec2sec.weights import sha256_of

    config: ModelConfig | None = load_config(args.config).model if args.config else None
    if args.checkpoint:
        model, ckpt = model_from_checkpoint(args.checkpoint, expect=config)
        path = Path(args.checkpoint)
        info = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": sha256_of(path), "meta": ckpt.meta}
        return LoadedModel(model, ckpt.trained, info)
    import torch

    torch.manual_seed(0)  # an untrained model is still the same model on every run: replays are reproducible
    return LoadedModel(Sec2Sec(config or Config().model), False, {"checkpoint": None, "checkpoint_sha256": None})


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


def open_sources(args: RunArgs, inputs: InputQueue) -> tuple[list[Source], bool, bool, str]:
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
    """Stop sources that no pipeline owns yet (a failure or a signal while the run was being built). Each stop
    is on its own: one that raises is a warning line on stderr and the others still stop, so the exception
    that brought us here (a KeyboardInterrupt, Terminated) is the one that propagates."""
    for source in sources:
        try:
            source.stop()
        except Exception as exc:  # noqa: BLE001 - reported; the original exception matters more
            print(f"warning: {source.name} did not stop cleanly: {first_line(exc)}", file=sys.stderr)


def open_sinks(
    args: RunArgs,
    names: tuple[str, ...],
    sidecar: dict[str, Any],
    sources: list[Source],
    outlets: Sequence[QueuedOutlet] = (),
) -> list[Sink]:
    from monitor.recorders import CsvRecorder, JsonlRecorder

    def input_report() -> dict[str, Any]:
        """Per source (by name), what it captured and lost over the whole run (also what no row holds: before
        the first window, after the last): its `counters()`."""
        return {source.name: source.counters() for source in sources}

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
        close_sinks(sinks, RunEnd.cut_short(exc))
        raise
    if args.no_ui:
        from monitor.dashboard import PlainPrinter

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
    inputs: InputQueue,
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
    loaded = args.model or model_for_run(args)  # the API may pass a model from load_model()
    model, trained, info = loaded.model, loaded.trained, dict(loaded.info)
    warning = check_streams(model, has_video, has_audio, what)
    cfg = model.config
    check_output_names(cfg.heads.outputs)  # every output's record has one key per field (an output named "window")
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
        close_sinks(sinks, RunEnd.cut_short(exc))
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
        **{k: v.figures() for k, v in stream.parity.items()},
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
    """Close live outputs that no pipeline owns yet, as `close_sinks` does."""
    close_sinks(outlets, RunEnd(EndReason.ERROR, "the run could not be opened"))


def close_sinks(sinks: Sequence[Sink], end: RunEnd) -> None:
    """Close sinks that no pipeline owns yet (a signal or a failure while the run was being built) as the
    pipeline does (`SinkSet.close`): each bounded and on its own, one that fails or hangs a warning line on
    stderr, so the others still close and the exception that brought us here is the one that propagates."""
    for name, problem, _ in SinkSet(sinks).close(end):
        print(f"warning: {name} {problem}", file=sys.stderr)


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
        return lambda estimate: pipeline.origin_ns + (estimate.window + 1) * NANOS_PER_SECOND
    if args.clock != "realtime":
        return lambda estimate: None
    replay, speed = pipeline.sources[0], args.speed

    def paced(estimate: Estimate) -> int | None:
        origin = replay.origin_ns
        return None if origin is None else origin + int((estimate.window + 1) * NANOS_PER_SECOND / speed)

    return paced


def open_pipeline(args: RunArgs) -> Pipeline:
    """Everything a run needs, in the order that makes bad input fail fast: output paths, live outputs,
    sources (files and devices), then the model, its warm-up and the recorders."""
    from monitor.queues import BoundedQueue

    check_outputs(args)
    outlets = open_outlets(args)
    inputs: InputQueue = BoundedQueue(INPUT_QUEUE)
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


def check_outputs(args: RunArgs) -> None:
    """Every output file is checked before anything slow: writable (the CSV's sidecar too) and no two naming one
    file. Raises ValueError (one line)."""
    from monitor.output_paths import check_outputs as check_paths

    check_paths([("--csv", args.csv), ("--jsonl", args.jsonl)])
