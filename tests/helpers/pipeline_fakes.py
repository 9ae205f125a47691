"""Fakes and helpers shared by the pipeline and fault-injection tests: a list sink, a model stand-in, a scripted
source, a replay pipeline builder, and a bounded run()."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers.configs import small_config
from monitor.pipeline import Pipeline
from monitor.queues import BoundedQueue
from monitor.replay import FileReplay
from monitor.run_end import EndReason, RunEnd
from monitor.sources import Source, SourceEnd, SourceStatus
from sec2sec.config import ModelConfig
from sec2sec.media import VideoFrame
from sec2sec.stream import AffectStream, Estimate
from sec2sec.windows import Window, Windower


class ListSink:
    name = "list sink"

    def __init__(self) -> None:
        self.rows: list[Estimate] = []
        self.closed_with: list[RunEnd] = []

    def write(self, estimate: Estimate) -> None:
        self.rows.append(estimate)

    def close(self, end: RunEnd) -> None:
        self.closed_with.append(end)


def ended_in(csv: Path) -> RunEnd:
    """How the run ended, as the summary in the sidecar of `csv` says."""
    summary = json.loads(Path(f"{csv}.json").read_text())["summary"]
    return RunEnd(EndReason(summary["ended_by"]), summary["message"] or "")


def replay_pipeline(path: Path, stream: AffectStream, clock: str, sink: ListSink, **kw: object) -> Pipeline:
    inputs: BoundedQueue = BoundedQueue(64)
    replay = FileReplay(path, inputs, paced=clock == "realtime", speed=float(kw.pop("speed", 1.0)))
    cfg = stream.config
    replay.prepare(cfg.video.resize, cfg.audio.sample_rate, cfg.video.frames_per_window)
    windower = Windower(
        cfg.video.frames_per_window,
        cfg.audio.sample_rate,
        expect_video=replay.info.has_video,
        expect_audio=replay.info.has_audio,
    )
    return Pipeline(stream, [replay], inputs, windower, [sink], clock=clock, **kw)


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("inference", "file-replay")]


@dataclass
class FakeStream:
    """Stands in for AffectStream: a fixed compute time, or an exception at a given window."""

    config: ModelConfig = field(default_factory=lambda: small_config())
    compute_ns: int = 0
    sleep_s: float = 0.0
    fail_at: int | None = None
    model: object = field(default_factory=lambda: type("M", (), {"pretrained": {}})())

    def step(self, window: Window) -> Estimate:
        if window.index == self.fail_at:
            raise RuntimeError("planted failure")
        time.sleep(self.sleep_s)
        return Estimate(
            window.index,
            {"valence": 0.5, "arousal": 0.5},
            (),
            window.video_ok,
            window.audio_ok,
            window.frames_seen,
            window.audio_coverage,
            self.compute_ns,
        )


class SlowStream:
    """A real AffectStream whose estimates report `compute_ns` of compute, so that the virtual clock drops
    the windows a model that slow would drop live; keeps the windows it was given."""

    def __init__(self, stream: AffectStream, compute_ns: int) -> None:
        self.inner, self.compute_ns = stream, compute_ns
        self.config, self.model = stream.config, stream.model
        self.stepped: list[Window] = []

    def step(self, window: Window) -> Estimate:
        self.stepped.append(window)
        return replace(self.inner.step(window), compute_ns=self.compute_ns)


class ScriptedSource(Source):
    """Puts pre-made frames on the queue (as a camera would), then ends."""

    name = "camera"

    def __init__(
        self, out: BoundedQueue, seconds: int, fps: int = 10, end: bool = True, noise_seed: int | None = None
    ) -> None:
        """Blank 16x16 frames, or random 48x64 ones drawn from `noise_seed` (content a real model can tell apart)."""
        self.out, self.seconds, self.fps, self.end, self.noise_seed = out, seconds, fps, end, noise_seed
        self.stopped = 0

    def start(self, origin_ns: int | None = None) -> None:
        rng = None if self.noise_seed is None else np.random.default_rng(self.noise_seed)
        for i in range(self.seconds * self.fps):
            pixels = np.zeros((16, 16, 3), np.uint8) if rng is None else rng.integers(0, 256, (48, 64, 3), np.uint8)
            self.out.put_wait(VideoFrame(pixels, i * 1_000_000_000 // self.fps))
        if self.end:
            self.out.put_wait(SourceEnd(self.name))

    def stop(self) -> None:
        self.stopped += 1

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(self.name, False, 0, 0)


def scripted(
    stream: FakeStream | SlowStream,
    clock: str,
    seconds: int,
    sink: ListSink,
    end: bool = True,
    noise_seed: int | None = None,
) -> tuple[Pipeline, ScriptedSource]:
    inputs: BoundedQueue = BoundedQueue(10_000)
    source = ScriptedSource(inputs, seconds, end=end, noise_seed=noise_seed)
    windower = Windower(stream.config.video.frames_per_window, 16_000, expect_audio=False)
    return Pipeline(stream, [source], inputs, windower, [sink], clock=clock), source


def run_bounded(pipeline: Pipeline, timeout_s: float = 60) -> RunEnd:
    """run() in a thread, so that a hang fails the test instead of hanging the suite."""
    result: list[RunEnd] = []
    runner = threading.Thread(target=lambda: result.append(pipeline.run()), daemon=True)
    runner.start()
    runner.join(timeout_s)
    assert not runner.is_alive(), "the pipeline hung"
    return result[0]
