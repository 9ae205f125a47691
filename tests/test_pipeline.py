"""The pipeline: replay clocks, drop policies, latency, and a clean shutdown from every trigger."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.pipeline_fakes import (
    FakeStream,
    ListSink,
    ScriptedSource,
    SlowStream,
    pipeline_threads,
    replay_pipeline,
    run_bounded,
    scripted,
)

from monitor.pipeline import Pipeline
from monitor.queues import BoundedQueue
from monitor.run_end import EndReason, RunEnd
from monitor.sources import SourceEnd
from sec2sec.model import Sec2Sec
from sec2sec.stream import AffectStream
from sec2sec.windows import Windower, file_windows

DEMO = Path(__file__).resolve().parents[1] / "samples" / "demo_face.mp4"


@pytest.fixture(scope="module")
def model() -> Sec2Sec:
    torch.manual_seed(0)
    return Sec2Sec(small_config("attention_lstm")).eval()


def test_offline_and_virtual_clocks_give_identical_outputs(model: Sec2Sec, media: Path) -> None:
    results = {}
    for clock in ("offline", "virtual"):
        sink = ListSink()
        ended = replay_pipeline(media / "grid_speaker_mpeg1.mpg", AffectStream(model), clock, sink).run()
        assert ended == RunEnd(EndReason.END) and sink.closed_with == [ended]
        results[clock] = sink.rows
    assert [r.window for r in results["offline"]] == [0, 1, 2]
    for a, b in zip(results["offline"], results["virtual"], strict=True):
        assert a.outputs == b.outputs and a.attribution == b.attribution
    assert all(r.latency_ns == r.compute_ns for r in results["offline"])
    assert pipeline_threads() == []


def test_replay_windows_equal_file_windows(model: Sec2Sec, media: Path) -> None:
    """What replay feeds the model is what training reads: the same windows, so the same outputs."""
    path = media / "single_face_vp9_opus.webm"
    sink = ListSink()
    replay_pipeline(path, AffectStream(model), "offline", sink).run()
    stream = AffectStream(model)
    m = model.config.video.frames_per_window
    direct = [stream.step(w) for w in file_windows(str(path), m, 16_000, model.config.video.resize)[0]]
    assert [r.outputs for r in sink.rows] == [d.outputs for d in direct]
    assert [(r.video_ok, r.audio_ok, r.frames) for r in sink.rows] == [
        (True, True, 30),
        (True, True, 30),
        (True, True, 12),
    ]


def test_realtime_replay_is_paced(model: Sec2Sec, media: Path) -> None:
    sink = ListSink()
    started = time.monotonic()
    pipeline = replay_pipeline(media / "grid_speaker_0.6s.mp4", AffectStream(model), "realtime", sink, speed=2.0)
    assert pipeline.run() == RunEnd(EndReason.END)
    assert time.monotonic() - started >= 0.25  # paced: 0.6 s of media at 2x takes at least 0.3 s
    assert len(sink.rows) == 1 and sink.rows[0].latency_ns > 0


def test_duration_stops_after_that_many_windows(model: Sec2Sec) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(DEMO, AffectStream(model), "offline", sink, max_windows=2)
    assert pipeline.run() == RunEnd(EndReason.DURATION)
    assert [r.window for r in sink.rows] == [0, 1] and sink.closed_with == [RunEnd(EndReason.DURATION)]
    assert pipeline_threads() == []


def test_stop_from_another_thread_ends_the_run(model: Sec2Sec) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(DEMO, AffectStream(model), "realtime", sink)
    timer = threading.Timer(1.5, lambda: pipeline.request_stop(EndReason.INTERRUPTED))
    timer.start()
    started = time.monotonic()
    assert pipeline.run() == RunEnd(EndReason.INTERRUPTED)
    assert time.monotonic() - started < 1.5 + 30  # only a hang exceeds this
    assert sink.closed_with == [RunEnd(EndReason.INTERRUPTED)] and len(sink.rows) <= 2
    pipeline.stop()  # idempotent
    assert sink.closed_with == [RunEnd(EndReason.INTERRUPTED)] and pipeline_threads() == []


def test_virtual_clock_simulates_live_drops_and_latency() -> None:
    """2.5 s of 'compute' per window, one window closing per second, a queue of 2: as if live, window 0
    runs 1.0-3.5 s, window 1 3.5-6.0 s; windows 2 and 3 are pushed out of the queue by windows 4 and 5
    (closing at 5 s and 6 s); window 4 runs 6.0-8.5 s, 5 is pushed out by 7, 6 runs 8.5-11, 7 runs 11-13.5."""
    sink = ListSink()
    pipeline, _ = scripted(FakeStream(compute_ns=2_500_000_000), "virtual", 8, sink)
    assert pipeline.run() == RunEnd(EndReason.END)
    assert [r.window for r in sink.rows] == [0, 1, 4, 6, 7]
    assert [r.latency_ns / 1e9 for r in sink.rows] == [2.5, 4.0, 3.5, 4.0, 5.5]
    assert pipeline.dropped == 3 and [r.dropped_total for r in sink.rows] == [0, 0, 2, 3, 3]


@pytest.mark.parametrize("horizon", (0, pytest.param(6, marks=pytest.mark.slow)))
def test_windows_the_virtual_clock_drops_are_empty_seconds_in_the_history(horizon: int) -> None:
    """A real model that takes 2.5 s per window, replayed on the virtual clock: windows 2, 3 and 5 are
    dropped (as in the test above), and every estimate equals the batch forward over the seconds so far with
    the dropped ones empty (no video, no audio: what training computes for such a second), not the forward
    over the kept windows glued together."""
    torch.manual_seed(0)
    model = Sec2Sec(small_config("lstm")).eval()  # clip_seconds = 6
    slow, sink = SlowStream(AffectStream(model, horizon=horizon), 2_500_000_000), ListSink()
    pipeline, _ = scripted(slow, "virtual", 8, sink, noise_seed=1)
    assert pipeline.run() == RunEnd(EndReason.END)
    kept = [w.index for w in slow.stepped]
    assert kept == [r.window for r in sink.rows] == [0, 1, 4, 6, 7] and pipeline.dropped == 3
    assert [r.gap for r in sink.rows] == [0, 0, 2, 1, 0]
    with torch.inference_mode():
        frames = torch.from_numpy(np.stack([w.frames for w in slow.stepped]))
        audio = torch.from_numpy(np.stack([w.audio for w in slow.stepped]))
        video_tokens, _ = model.encode(frames, audio)
        tokens = torch.zeros(1, 8, *video_tokens.shape[1:])
        tokens[0, kept] = video_tokens
        present = torch.zeros(1, 8, dtype=torch.bool)
        present[0, kept] = True
        for row in sink.rows:
            first = 0 if horizon == 0 else max(0, row.window + 1 - horizon)
            seconds = slice(first, row.window + 1)
            n = torch.tensor([row.window + 1 - first])
            logits, _ = model.forward_tokens(tokens[:, seconds], None, n, present[:, seconds])
            assert list(row.outputs.values()) == pytest.approx(torch.sigmoid(logits[0]).tolist(), abs=1e-5)
        glued, _ = model.forward_tokens(video_tokens[None], None, torch.tensor([5]))
    assert list(sink.rows[-1].outputs.values()) != pytest.approx(torch.sigmoid(glued[0]).tolist(), abs=1e-4)


def test_live_clock_drops_the_oldest_window_when_the_model_falls_behind() -> None:
    sink = ListSink()
    pipeline, _ = scripted(FakeStream(sleep_s=0.3), "realtime", 8, sink)
    assert pipeline.run() == RunEnd(EndReason.END)
    indices = [r.window for r in sink.rows]
    assert indices[-1] == 7 and len(indices) < 8  # the newest is kept, older ones dropped
    assert pipeline.dropped == 8 - len(indices) and sink.rows[-1].dropped_total <= pipeline.dropped
    assert sink.rows[-1].latency_ns > 0


def test_an_exception_in_the_worker_stops_everything_and_keeps_rows() -> None:
    """30 windows behind a queue of 2: when the worker dies at window 2 the windowing thread is blocked on the
    full queue (the hang this guards against)."""
    sink = ListSink()
    pipeline, source = scripted(FakeStream(fail_at=2), "offline", 30, sink, end=False)
    ended = run_bounded(pipeline)
    assert ended == RunEnd.error("inference failed at window 2: RuntimeError: planted failure")
    assert [r.window for r in sink.rows] == [0, 1] and sink.closed_with == [ended]
    assert source.stopped == 1 and pipeline_threads() == []


def test_a_failing_camera_ends_the_run_with_its_message() -> None:
    inputs: BoundedQueue = BoundedQueue(100)
    sink = ListSink()
    stream = FakeStream()

    class Broken(ScriptedSource):
        def start(self, origin_ns: int | None = None) -> None:
            self.out.put_wait(SourceEnd("camera", error="read failed"))

    pipeline = Pipeline(stream, [Broken(inputs, 0)], inputs, Windower(4, 16_000), [sink], clock="live")
    assert pipeline.run() == RunEnd.error("camera: read failed")
    assert pipeline.snapshot().message == "camera: read failed"


@pytest.mark.parametrize("words", ["terminated", "interrupted", "end", "error: ended by end"])
def test_the_words_of_a_failure_cannot_change_its_exit_code(words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A source fails with a message that reads like another way to end: the run still ended by an error, its
    exit code is 1 and the message is printed as it came (the reason, not the words, decides)."""
    from monitor.cli import _report

    inputs: BoundedQueue = BoundedQueue(100)

    class Broken(ScriptedSource):
        def start(self, origin_ns: int | None = None) -> None:
            self.out.put_wait(SourceEnd("camera", error=words))

    pipeline = Pipeline(FakeStream(), [Broken(inputs, 0)], inputs, Windower(4, 16_000), [ListSink()], clock="live")
    ended = pipeline.run()
    assert ended == RunEnd(EndReason.ERROR, f"camera: {words}") and _report(pipeline, ended) == 1
    assert capsys.readouterr().err.splitlines() == [
        "0 windows, 0 dropped, latency p50 - p99 -; ended by error",
        f"error: camera: {words}",
    ]


def test_the_shutdown_bound_counts_every_step_at_its_deadline() -> None:
    """`stop()`'s bound, which the API's LiveRun.close joins on: the window in flight, each sink's close (and a
    write in progress), each source's stop; e.g. 11 s with a camera, a microphone and a CSV."""
    from monitor.pipeline import IN_FLIGHT_TIMEOUT_S, SOURCE_STOP_TIMEOUT_S
    from monitor.sinks import SINK_CLOSE_TIMEOUT_S

    inputs: BoundedQueue = BoundedQueue(10)
    sources, sinks = [ScriptedSource(inputs, 0), ScriptedSource(inputs, 0)], [ListSink()]
    pipeline = Pipeline(FakeStream(), sources, inputs, Windower(4, 16_000), sinks, clock="live")
    expected = IN_FLIGHT_TIMEOUT_S + 2 * SINK_CLOSE_TIMEOUT_S + 2 * SOURCE_STOP_TIMEOUT_S
    assert pipeline.shutdown_bound_s == pytest.approx(expected)
    pipeline.sinks.append(ListSink())  # a sink added before run() counts too
    assert pipeline.shutdown_bound_s == pytest.approx(expected + SINK_CLOSE_TIMEOUT_S)


def test_snapshot_reports_progress(model: Sec2Sec, media: Path) -> None:
    sink = ListSink()
    pipeline = replay_pipeline(media / "grid_speaker_mpeg1.mpg", AffectStream(model), "offline", sink)
    pipeline.run()
    snap = pipeline.snapshot()
    assert snap.windows_done == 3 and snap.windows_dropped == 0
    assert snap.output_names == ("valence", "arousal") and len(snap.history["valence"]) == 3
    assert snap.latest.window == 2 and len(snap.attribution) == 3
    assert snap.latency_p50_ms is not None and snap.latency_p99_ms >= snap.latency_p50_ms
    assert snap.sources[0].name == "file" and "grid_speaker_mpeg1.mpg" in snap.sources[0].detail


def test_frames_the_full_input_queue_displaced_are_in_the_rows() -> None:
    """A capture edge that outran the windowing thread: 30 frames (3 s at 10 fps) into a queue of 5 keep
    the newest; the row carries the frames lost, and the totals match the queue's count."""
    from sec2sec.media import VideoFrame

    inputs: BoundedQueue = BoundedQueue(5)

    class Burst(ScriptedSource):
        def start(self, origin_ns: int | None = None) -> None:
            for i in range(30):
                self.out.put_latest(VideoFrame(np.zeros((16, 16, 3), np.uint8), i * 100_000_000))
            self.out.put_latest(SourceEnd(self.name))  # displaces the frame at 2.5 s too

    stream, sink = FakeStream(), ListSink()
    windower = Windower(stream.config.video.frames_per_window, 16_000, expect_audio=False)
    pipeline = Pipeline(stream, [Burst(inputs, 3)], inputs, windower, [sink], clock="offline")
    assert run_bounded(pipeline) == RunEnd(EndReason.END)
    # seconds 0 and 1 lost every frame: no input, so no model step (a gap); their losses land in the next row
    assert [(r.window, r.frames) for r in sink.rows] == [(2, 4)] and windower.skipped_windows == 2
    assert inputs.dropped == 26
    assert sink.rows[0].frames_dropped == 10 + 10 + 6 and sink.rows[0].samples_lost == 0
    assert pipeline.losses.total.frames_dropped == 26


def test_a_queue_hands_what_it_displaces_to_on_drop() -> None:
    q: BoundedQueue[int] = BoundedQueue(2)
    dropped: list[int] = []
    q.on_drop = dropped.append
    assert [q.put_latest(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert dropped == [0, 1, 2] and q.dropped == 3 and [q.get(0), q.get(0)] == [3, 4]


def test_the_loss_ledger_files_by_window_and_stays_bounded() -> None:
    from monitor.losses import Losses, LossLedger

    ledger = LossLedger(max_pending=3)
    ledger.add(2, frames=1)
    ledger.add(0, samples=160)
    ledger.add(-1, restamped=5)  # before the origin: filed under window 0
    ledger.add(7, frames=2)
    ledger.add(9, frames=4)  # a fourth window: lumped into the latest pending one (7)
    ledger.add(1)  # nothing lost: nothing filed
    assert ledger.take(1) == Losses(0, 160, 5)  # windows 0 and 1
    assert ledger.take(1) == Losses()
    assert ledger.take(8) == Losses(7, 0, 0) and ledger.take(100) == Losses()
    assert ledger.total == Losses(7, 160, 5)
    with pytest.raises(ValueError, match="max_pending"):
        LossLedger(max_pending=0)
