"""The pipeline: replay clocks, drop policies, latency, and a clean shutdown from every trigger."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from monitor.pipeline import Pipeline
from monitor.queues import BoundedQueue
from monitor.replay import FileReplay
from monitor.sources import SourceEnd, SourceStatus
from sec2sec.config import ModelConfig
from sec2sec.media import VideoFrame
from sec2sec.model import Sec2Sec
from sec2sec.stream import AffectStream, Estimate
from sec2sec.windows import Window, Windower, file_windows

DEMO = Path(__file__).resolve().parents[1] / "samples" / "demo_face.mp4"


class ListSink:
    def __init__(self) -> None:
        self.rows: list[Estimate] = []
        self.closed_with: list[str] = []

    def write(self, estimate: Estimate) -> None:
        self.rows.append(estimate)

    def close(self, ended_by: str = "end") -> None:
        self.closed_with.append(ended_by)


def replay_pipeline(path: Path, stream: AffectStream, clock: str, sink: ListSink, **kw: object) -> Pipeline:
    inputs: BoundedQueue = BoundedQueue(64)
    replay = FileReplay(path, inputs, paced=clock == "realtime", speed=float(kw.pop("speed", 1.0)))
    cfg = stream.config
    replay.prepare(short_side=cfg.video.resize, sample_rate=cfg.audio.sample_rate)
    windower = Windower(
        cfg.video.frames_per_window,
        cfg.audio.sample_rate,
        expect_video=replay.info.has_video,
        expect_audio=replay.info.has_audio,
    )
    return Pipeline(stream, [replay], inputs, windower, [sink], clock=clock, **kw)


@pytest.fixture(scope="module")
def model() -> Sec2Sec:
    torch.manual_seed(0)
    return Sec2Sec(small_config("attention_lstm")).eval()


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("inference", "file-replay")]


def test_offline_and_virtual_clocks_give_identical_outputs(model: Sec2Sec, media: Path) -> None:
    results = {}
    for clock in ("offline", "virtual"):
        sink = ListSink()
        ended = replay_pipeline(media / "grid_speaker_mpeg1.mpg", AffectStream(model), clock, sink).run()
        assert ended == "end" and sink.closed_with == ["end"]
        results[clock] = sink.rows
    assert [r.index for r in results["offline"]] == [0, 1, 2]
    for a, b in zip(results["offline"], results["virtual"], strict=True):
        assert a.outputs == b.outputs and a.attribution == b.attribution
    assert all(r.latency_ns == r.compute_ns for r in results["offline"])
    assert _pipeline_threads() == []


def test_replay_windows_equal_file_windows(model: Sec2Sec, media: Path) -> None:
    """What replay feeds the model is what training reads: the same windows, so the same outputs."""
    path = media / "single_face_vp9_opus.webm"
    sink = ListSink()
    replay_pipeline(path, AffectStream(model), "offline", sink).run()
    stream = AffectStream(model)
    m = model.config.video.frames_per_window
    direct = [stream.step(w) for w in file_windows(str(path), m, 16_000, model.config.video.resize)[0]]
    assert [r.outputs for r in sink.rows] == [d.outputs for d in direct]
    assert [(r.video_ok, r.audio_ok, r.frames_seen) for r in sink.rows] == [
        (True, True, 30),
        (True, True, 30),
        (True, True, 12),
    ]


def test_realtime_replay_is_paced(model: Sec2Sec, media: Path) -> None:
    sink = ListSink()
    started = time.monotonic()
    pipeline = replay_pipeline(media / "grid_speaker_0.6s.mp4", AffectStream(model), "realtime", sink, speed=2.0)
    assert pipeline.run() == "end"
    assert time.monotonic() - started >= 0.25  # paced: 0.6 s of media at 2x takes at least 0.3 s
    assert len(sink.rows) == 1 and sink.rows[0].latency_ns > 0


def test_duration_stops_after_that_many_windows(model: Sec2Sec) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(DEMO, AffectStream(model), "offline", sink, max_windows=2)
    assert pipeline.run() == "duration"
    assert [r.index for r in sink.rows] == [0, 1] and sink.closed_with == ["duration"]
    assert _pipeline_threads() == []


def test_stop_from_another_thread_ends_the_run(model: Sec2Sec) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(DEMO, AffectStream(model), "realtime", sink)
    timer = threading.Timer(1.5, lambda: pipeline.request_stop("interrupted"))
    timer.start()
    started = time.monotonic()
    assert pipeline.run() == "interrupted"
    assert time.monotonic() - started < 1.5 + 30  # only a hang exceeds this
    assert sink.closed_with == ["interrupted"] and len(sink.rows) <= 2
    pipeline.stop()  # idempotent
    assert sink.closed_with == ["interrupted"] and _pipeline_threads() == []


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


class ScriptedSource:
    """Puts pre-made frames on the queue (as a camera would), then ends."""

    name = "camera"

    def __init__(self, out: BoundedQueue, seconds: int, fps: int = 10, end: bool = True) -> None:
        self.out, self.seconds, self.fps, self.end = out, seconds, fps, end
        self.stopped = 0

    def start(self, origin_ns: int | None = None) -> None:
        for i in range(self.seconds * self.fps):
            self.out.put_wait(VideoFrame(np.zeros((16, 16, 3), dtype=np.uint8), i * 1_000_000_000 // self.fps))
        if self.end:
            self.out.put_wait(SourceEnd(self.name))

    def stop(self) -> None:
        self.stopped += 1

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(self.name, False, 0, 0)


def scripted(
    stream: FakeStream, clock: str, seconds: int, sink: ListSink, end: bool = True
) -> tuple[Pipeline, ScriptedSource]:
    inputs: BoundedQueue = BoundedQueue(10_000)
    source = ScriptedSource(inputs, seconds, end=end)
    windower = Windower(stream.config.video.frames_per_window, 16_000, expect_audio=False)
    return Pipeline(stream, [source], inputs, windower, [sink], clock=clock), source


def test_virtual_clock_simulates_live_drops_and_latency() -> None:
    """2.5 s of 'compute' per window, one window closing per second, a queue of 2: as if live, window 0
    runs 1.0-3.5 s, window 1 3.5-6.0 s; windows 2 and 3 are pushed out of the queue by windows 4 and 5
    (closing at 5 s and 6 s); window 4 runs 6.0-8.5 s, 5 is pushed out by 7, 6 runs 8.5-11, 7 runs 11-13.5."""
    sink = ListSink()
    pipeline, _ = scripted(FakeStream(compute_ns=2_500_000_000), "virtual", 8, sink)
    assert pipeline.run() == "end"
    assert [r.index for r in sink.rows] == [0, 1, 4, 6, 7]
    assert [r.latency_ns / 1e9 for r in sink.rows] == [2.5, 4.0, 3.5, 4.0, 5.5]
    assert pipeline.dropped == 3 and [r.dropped_total for r in sink.rows] == [0, 0, 2, 3, 3]


def test_live_clock_drops_the_oldest_window_when_the_model_falls_behind() -> None:
    sink = ListSink()
    pipeline, _ = scripted(FakeStream(sleep_s=0.3), "realtime", 8, sink)
    assert pipeline.run() == "end"
    indices = [r.index for r in sink.rows]
    assert indices[-1] == 7 and len(indices) < 8  # the newest is kept, older ones dropped
    assert pipeline.dropped == 8 - len(indices) and sink.rows[-1].dropped_total <= pipeline.dropped
    assert sink.rows[-1].latency_ns > 0


def run_bounded(pipeline: Pipeline, timeout_s: float = 60) -> str:
    """run() in a thread, so that a hang fails the test instead of hanging the suite."""
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(pipeline.run()), daemon=True)
    runner.start()
    runner.join(timeout_s)
    assert not runner.is_alive(), "the pipeline hung"
    return result[0]


def test_an_exception_in_the_worker_stops_everything_and_keeps_rows() -> None:
    """30 windows behind a queue of 2: when the worker dies at window 2 the windowing thread is blocked on the
    full queue (the hang this guards against)."""
    sink = ListSink()
    pipeline, source = scripted(FakeStream(fail_at=2), "offline", 30, sink, end=False)
    ended = run_bounded(pipeline)
    assert ended == "error: inference failed at window 2: RuntimeError: planted failure"
    assert [r.index for r in sink.rows] == [0, 1] and sink.closed_with == [ended]
    assert source.stopped == 1 and _pipeline_threads() == []


def test_a_failing_camera_ends_the_run_with_its_message() -> None:
    inputs: BoundedQueue = BoundedQueue(100)
    sink = ListSink()
    stream = FakeStream()

    class Broken(ScriptedSource):
        def start(self, origin_ns: int | None = None) -> None:
            self.out.put_wait(SourceEnd("camera", error="read failed"))

    pipeline = Pipeline(stream, [Broken(inputs, 0)], inputs, Windower(4, 16_000), [sink], clock="live")
    assert pipeline.run() == "error: camera: read failed"
    assert pipeline.snapshot().message == "camera: read failed"


def test_snapshot_reports_progress(model: Sec2Sec, media: Path) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(media / "grid_speaker_mpeg1.mpg", AffectStream(model), "offline", sink)
    pipeline.run()
    snap = pipeline.snapshot()
    assert snap.windows_done == 3 and snap.windows_dropped == 0
    assert snap.output_names == ("valence", "arousal") and len(snap.history["valence"]) == 3
    assert snap.latest.index == 2 and len(snap.attribution) == 3
    assert snap.latency_p50_ms is not None and snap.latency_p99_ms >= snap.latency_p50_ms
    assert snap.sources[0].name == "file" and "grid_speaker_mpeg1.mpg" in snap.sources[0].detail
