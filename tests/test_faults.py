"""Fault injection: whatever fails (a sink, the model, a source, the disk), or whatever signal arrives in
whatever phase, the run ends within seconds with the documented exit code and one line, keeps every row it
computed and writes the sidecar summary. Time bounds here are generous: only a hang can exceed them."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.configs import small_config
from helpers.fault_process import HANG_S, finish, start, wait_for_phase
from helpers.pipeline_fakes import (
    FakeStream,
    ListSink,
    ended_in,
    pipeline_threads,
    replay_pipeline,
    run_bounded,
    scripted,
)
from helpers.synthetic_clips import FPS, SAMPLE_RATE, write_mp4

from monitor.pipeline import Pipeline
from monitor.queues import BoundedQueue
from monitor.recorders import CsvRecorder
from monitor.run_end import EndReason, RunEnd
from monitor.sources import Source, SourceEnd, SourceStatus
from sec2sec import media
from sec2sec.model import Sec2Sec
from sec2sec.stream import AffectStream, Estimate
from sec2sec.windows import Windower

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"


def slow(*values: object) -> Any:
    """One more case of a check whose first case the fast tier already makes."""
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.fixture(scope="module")
def model() -> Sec2Sec:
    torch.manual_seed(0)
    return Sec2Sec(small_config("attention_lstm")).eval()


class FailingSink(ListSink):
    """Raises `error` when asked to write window `at` (and after)."""

    name = "failing sink"

    def __init__(self, at: int, error: Exception) -> None:
        super().__init__()
        self.at, self.error = at, error

    def write(self, estimate: Estimate) -> None:
        if estimate.window >= self.at:
            raise self.error
        super().write(estimate)


class StuckSink(ListSink):
    """Blocks for ever (until released) when asked to write window `at`."""

    name = "stuck sink"

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.release = at, threading.Event()

    def write(self, estimate: Estimate) -> None:
        if estimate.window >= self.at:
            self.release.wait()
        super().write(estimate)


def recorder(tmp_path: Path) -> CsvRecorder:
    return CsvRecorder(tmp_path / "rows.csv", ("valence", "arousal"), {"test": True})


def summary(csv: Path) -> dict[str, Any]:
    return json.loads(Path(str(csv) + ".json").read_text())["summary"]


# ---- in-process: the pipeline with planted faults ---------------------------------------------------------------


def test_a_full_disk_in_a_sink_ends_the_run_and_keeps_every_row(tmp_path: Path) -> None:
    """40 windows behind a queue of 2: the windowing thread is blocked on the full queue when the sink fails."""
    csv, failing = recorder(tmp_path), FailingSink(5, OSError(errno.ENOSPC, "No space left on device"))
    pipeline, source = scripted(FakeStream(), "offline", 40, failing, end=False)
    pipeline.sinks.insert(0, csv)
    ended = run_bounded(pipeline, HANG_S)
    assert ended == RunEnd.error("failing sink failed at window 5: OSError: [Errno 28] No space left on device")
    rows = pd.read_csv(csv.path)
    assert list(rows["window"]) == [0, 1, 2, 3, 4, 5]  # window 5 reached the CSV before the other sink failed
    assert ended_in(csv.path) == ended and summary(csv.path)["windows"] == 6
    assert failing.closed_with == [ended] and source.stopped == 1 and pipeline_threads() == []


def test_a_model_failure_ends_the_run_and_keeps_every_row(tmp_path: Path) -> None:
    csv = recorder(tmp_path)
    pipeline, _ = scripted(FakeStream(fail_at=7), "virtual", 40, csv, end=False)
    ended = run_bounded(pipeline, HANG_S)
    assert ended == RunEnd.error("inference failed at window 7: RuntimeError: planted failure")
    assert list(pd.read_csv(csv.path)["window"]) == list(range(7)) and ended_in(csv.path) == ended


def test_a_failing_source_ends_the_run_after_the_windows_it_completed(tmp_path: Path) -> None:
    inputs: BoundedQueue = BoundedQueue(1_000)
    csv = recorder(tmp_path)

    class Failing(Source):
        name = "camera"

        def start(self, origin_ns: int | None = None) -> None:
            for i in range(35):  # 3.5 s at 10 fps, then the device fails
                inputs.put_wait(media.VideoFrame(np.zeros((16, 16, 3), np.uint8), i * 100_000_000))
            inputs.put_wait(SourceEnd("camera", error="camera 0 failed: OSError: device unplugged"))

        def stop(self) -> None:
            pass

        @property
        def status(self) -> SourceStatus:
            return SourceStatus("camera", False, 35, 0)

    stream = FakeStream()
    windower = Windower(stream.config.video.frames_per_window, 16_000, expect_audio=False)
    pipeline = Pipeline(stream, [Failing()], inputs, windower, [csv], clock="offline")
    ended = run_bounded(pipeline, HANG_S)
    assert ended == RunEnd.error("camera: camera 0 failed: OSError: device unplugged")
    assert list(pd.read_csv(csv.path)["window"]) == [0, 1, 2, 3]  # the partial last second too


def hanging_reader(monkeypatch: pytest.MonkeyPatch, after: int) -> threading.Event:
    """The decoder delivers `after` items, then blocks inside a read until the returned event is set."""
    gate = threading.Event()
    iterate = media.MediaReader.__iter__

    def reads(self: media.MediaReader) -> Iterator[Any]:
        for k, item in enumerate(iterate(self)):
            if k == after:
                gate.wait()
                return
            yield item

    monkeypatch.setattr(media.MediaReader, "__iter__", reads)
    return gate


@pytest.mark.slow
def test_a_decoder_that_hangs_ends_an_offline_replay(model: Sec2Sec, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hanging_reader(monkeypatch, after=200)
    sink = ListSink()
    pipeline = replay_pipeline(DEMO, AffectStream(model), "offline", sink, stall_timeout_s=3.0)
    try:
        ended = run_bounded(pipeline, HANG_S)
    finally:
        gate.set()
    assert ended == RunEnd.error("file: no data for 3 s (decoder stalled)")
    # how many windows the model finished before the stall was seen depends on the machine's speed; that every
    # finished one was kept, in order, does not
    assert [r.window for r in sink.rows] == list(range(len(sink.rows))) and len(sink.rows) >= 1


def test_a_camera_that_stalls_mid_run_leaves_a_gap_not_empty_windows() -> None:
    """Live, camera only: frames for 1 s, nothing for 2 s (stalled mid-run), frames again. The window before the
    stall closes on the grace timer (the output does not wait for the camera); the stalled seconds hold no
    input, so they are a gap (no model step), reported on the next estimate once frames return."""
    inputs: BoundedQueue = BoundedQueue(100)

    class Stalling(Source):
        name = "camera"

        def __init__(self) -> None:
            self.stop_event = threading.Event()

        def start(self, origin_ns: int | None = None) -> None:
            threading.Thread(target=self.run, args=(origin_ns,), daemon=True).start()

        def run(self, origin_ns: int) -> None:
            for k in range(45):  # 10 fps for 4.5 s, silent from 1 s to 3 s
                t_ns = k * 100_000_000
                if self.stop_event.wait(max(0.0, (origin_ns + t_ns - time.monotonic_ns()) / 1e9)):
                    return
                if not 1_000_000_000 <= t_ns < 3_000_000_000:
                    inputs.put_latest(media.VideoFrame(np.zeros((8, 8, 3), np.uint8), t_ns))

        def stop(self) -> None:
            self.stop_event.set()

        @property
        def status(self) -> SourceStatus:
            return SourceStatus("camera", True, 0, 0)

    sink, stream = ListSink(), FakeStream()
    windower = Windower(stream.config.video.frames_per_window, 16_000, expect_audio=False, grace_ns=100_000_000)
    pipeline = Pipeline(stream, [Stalling()], inputs, windower, [sink], clock="live")
    first_row: list[float] = []

    def seen(estimate: Any) -> None:
        first_row.append(first_row[0] if first_row else time.monotonic())
        if estimate.window >= 3:  # the first window after the stall: stop there, whatever the machine's speed
            pipeline.request_stop(EndReason.INTERRUPTED)

    pipeline.on_estimate = seen
    started = time.monotonic()
    assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.INTERRUPTED)
    assert first_row and first_row[0] - started < 2.5  # window 0 did not wait for the stalled camera (3 s)
    assert [(r.window, r.video_ok) for r in sink.rows] == [(0, True), (3, True)]
    assert windower.skipped_windows == 2  # seconds 1 and 2 (AffectStream turns them into the estimate's gap)


@pytest.mark.slow
def test_a_stuck_sink_cannot_hold_the_shutdown(tmp_path: Path) -> None:
    """The worker blocks for ever in one sink; a stop request still ends the run, and the CSV recorder (the
    other sink) closes with its summary. The stuck thread is reported as abandoned."""
    csv, stuck = recorder(tmp_path), StuckSink(2)
    pipeline, _ = scripted(FakeStream(), "offline", 20, stuck, end=False)
    pipeline.sinks.insert(0, csv)
    threading.Timer(1.0, lambda: pipeline.request_stop(EndReason.TERMINATED)).start()
    try:
        assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.TERMINATED)
        assert list(pd.read_csv(csv.path)["window"]) == [0, 1, 2] and summary(csv.path)["ended_by"] == "terminated"
        assert "inference" in pipeline.abandoned
    finally:
        stuck.release.set()


def test_a_sink_whose_write_never_returns_ends_the_run_with_its_name(tmp_path: Path) -> None:
    """A write that has not returned within the bound (a FIFO nobody reads) ends the run as an error naming
    the sink; the rows the other sink wrote are kept and its summary written."""
    csv, stuck = recorder(tmp_path), StuckSink(3)
    pipeline, _ = scripted(FakeStream(), "offline", 40, stuck, end=False)
    pipeline.sink_ns = 500_000_000
    pipeline.sinks.insert(0, csv)
    try:
        ended = run_bounded(pipeline, HANG_S)
    finally:
        stuck.release.set()
    assert ended.failed and ended.message.startswith("stuck sink: a write has not returned for 0.5 s"), ended
    assert list(pd.read_csv(csv.path)["window"]) == [0, 1, 2, 3] and ended_in(csv.path) == ended
    assert "inference" in pipeline.abandoned


class StuckStop(Source):
    """A source whose stop() blocks (ALSA's Pa_StopStream after a USB device was unplugged)."""

    name = "microphone"

    def __init__(self) -> None:
        self.release = threading.Event()

    def start(self, origin_ns: int | None = None) -> None:
        pass

    def stop(self) -> None:
        self.release.wait()

    @property
    def status(self) -> SourceStatus:
        return SourceStatus("microphone", True, 0, 0)


def test_a_source_whose_stop_blocks_cannot_hold_the_shutdown(tmp_path: Path) -> None:
    """Shutdown writes the summary before it stops the sources, and abandons a stop that never returns."""
    csv, stuck = recorder(tmp_path), StuckStop()
    pipeline, _ = scripted(FakeStream(), "offline", 3, csv)
    pipeline.sources.append(stuck)
    started = time.monotonic()
    try:
        assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.END)
    finally:
        stuck.release.set()
    assert time.monotonic() - started < HANG_S / 2
    assert summary(csv.path)["ended_by"] == "end" and summary(csv.path)["windows"] == 3
    assert pipeline.abandoned == ["stop microphone"] and "did not stop within" in pipeline.message


def test_a_sink_that_cannot_close_turns_the_end_into_an_error(tmp_path: Path) -> None:
    class FullAtClose(ListSink):
        name = "csv recorder x.csv"

        def close(self, end: RunEnd) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    line = "csv recorder x.csv could not be closed: OSError: [Errno 28] No space left on device"
    pipeline, _ = scripted(FakeStream(), "offline", 2, FullAtClose())
    assert run_bounded(pipeline, HANG_S) == RunEnd.error(line)
    pipeline, _ = scripted(FakeStream(), "offline", 2, FullAtClose(), end=False)
    pipeline.request_stop(EndReason.TERMINATED)  # a signal keeps its exit code; the failure is its warning
    assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.TERMINATED, line)


class ClosingFails(ListSink):
    """A live output whose close() raises (after recording that it was asked)."""

    name, kind = "failing outlet", "failing"

    def close(self, end: RunEnd) -> None:
        super().close(end)
        raise OSError("the network went away")

    def report(self) -> dict[str, Any]:
        return {}


def test_a_sink_that_cannot_close_while_a_run_is_built_hides_no_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyboardInterrupt while the sinks are opened closes every sink opened so far, even when one of them
    raises in close(): the interrupt is what propagates, the failure a warning line."""
    import argparse

    from monitor import assembly, recorders

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(recorders, "JsonlRecorder", interrupted)
    csv, failing = tmp_path / "run.csv", ClosingFails()
    args = argparse.Namespace(csv=str(csv), jsonl=str(tmp_path / "run.jsonl"), no_ui=False)
    with pytest.raises(KeyboardInterrupt):
        assembly.open_sinks(args, ("valence",), {}, [], [failing])  # type: ignore[list-item]
    assert failing.closed_with == [RunEnd(EndReason.INTERRUPTED)] and summary(csv)["ended_by"] == "interrupted"
    assert "warning: failing outlet could not be closed: OSError: the network went away" in capsys.readouterr().err


def test_sources_that_no_pipeline_owns_all_stop_when_one_raises(capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.assembly import stop_all

    stopped: list[str] = []

    class Source:
        def __init__(self, name: str, fails: bool) -> None:
            self.name, self.fails = name, fails

        def stop(self) -> None:
            stopped.append(self.name)
            if self.fails:
                raise RuntimeError("device gone")

    stop_all([Source("camera", True), Source("microphone", False)])  # type: ignore[list-item]
    assert stopped == ["camera", "microphone"]
    assert "warning: camera did not stop cleanly: RuntimeError: device gone" in capsys.readouterr().err


def test_shutdown_finishes_the_window_in_flight(tmp_path: Path) -> None:
    """Stop while a window is being computed (1 s each): that estimate is still written, the CSV and the
    closing count agree."""
    csv = recorder(tmp_path)
    pipeline, _ = scripted(FakeStream(sleep_s=1.0), "offline", 20, csv, end=False)
    threading.Timer(1.5, lambda: pipeline.request_stop(EndReason.INTERRUPTED)).start()
    assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.INTERRUPTED)
    rows = pd.read_csv(csv.path)
    assert list(rows["window"]) == [0, 1] and pipeline.summary()["windows"] == 2 == summary(csv.path)["windows"]
    assert pipeline.abandoned == [] and pipeline.unwritten == 0


@pytest.mark.parametrize("ends_early", [pytest.param("audio", marks=pytest.mark.slow), "video"])
def test_a_stream_that_ends_early_in_a_long_replay(model: Sec2Sec, tmp_path: Path, ends_early: str) -> None:
    """A 30 s clip whose audio (or video) stops after 3 s: windows keep closing while the file plays (the
    decoder is never more than a few seconds ahead of the estimates), flagged missing after 3 s."""
    seconds = 30
    frames = np.full((seconds * FPS if ends_early == "audio" else 3 * FPS, 112, 112, 3), 90, np.uint8)
    audio = 0.1 * np.ones((3 if ends_early == "audio" else seconds) * SAMPLE_RATE, np.float32)
    clip = write_mp4(tmp_path / f"{ends_early}_ends.mp4", frames, audio)
    sink, positions = ListSink(), []
    pipeline = replay_pipeline(clip, AffectStream(model), "offline", sink)
    replay = pipeline.sources[0]
    pipeline.on_estimate = lambda estimate: positions.append((estimate.window, replay.status.detail))
    assert run_bounded(pipeline, HANG_S) == RunEnd(EndReason.END)
    rows = sink.rows[:seconds]  # AAC's padding may add a 31st, partial window
    assert [r.window for r in sink.rows] == list(range(len(sink.rows))) and len(rows) == seconds
    missing = [not (r.audio_ok if ends_early == "audio" else r.video_ok) for r in rows]
    assert missing[:3] == [False] * 3 and all(missing[4:])  # window 3 may hold the encoder's last padding
    at_window_5 = float(dict(positions)[5].split()[1])  # "<name> 12.3 / 30.0 s": the decoder's position
    assert at_window_5 < 20, positions[:8]


# ---- subprocesses: sec2sec-live as a user runs it, with one planted fault -------------------------------------


@pytest.mark.parametrize(
    ("fault", "phase", "sig", "code"),
    [
        ("slow-open", "opening", signal.SIGTERM, 143),
        ("slow-warm-up", "warm-up", signal.SIGINT, 130),
        ("slow-warm-up", "warm-up", signal.SIGTERM, 143),
    ],
)
def test_signals_before_the_run(small: Path, tmp_path: Path, fault: str, phase: str, sig: int, code: int) -> None:
    csv = tmp_path / "early.csv"
    proc = start(fault, 0, "--replay", DEMO, "--config", small, "--no-ui", "--csv", csv)
    wait_for_phase(proc, phase)
    os.kill(proc.pid, sig)
    returncode, lines = finish(proc)
    assert returncode == code and lines == ["interrupted" if code == 130 else "terminated"]
    assert not csv.exists()  # the recorders open after the warm-up; the early probe leaves nothing behind


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_draining_keeps_every_computed_row(small: Path, tmp_path: Path, sig: int) -> None:
    csv = tmp_path / "drain.csv"
    proc = start("slow-drain", 0, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    wait_for_phase(proc, "draining")
    os.kill(proc.pid, sig)
    returncode, lines = finish(proc)
    ended = "interrupted" if sig == signal.SIGINT else "terminated"
    assert returncode == (130 if sig == signal.SIGINT else 143), lines
    rows = pd.read_csv(csv)
    assert list(rows["window"]) == list(range(len(rows))) and len(rows) >= 8
    assert summary(csv)["ended_by"] == ended and summary(csv)["windows"] == len(rows)
    assert lines[-1].endswith(f"ended by {ended}") and lines[-1].startswith(f"{len(rows)} windows")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_with_stdout_stuck(small: Path, tmp_path: Path, sig: int) -> None:
    """stdout is a pipe that blocks (nobody reads it): the signal still ends the run, the CSV keeps its rows
    and its summary."""
    csv = tmp_path / "stuck.csv"
    proc = start("stuck-stdout", 2, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    wait_for_phase(proc, "stuck")
    os.kill(proc.pid, sig)
    returncode, _ = finish(proc)
    assert returncode == (130 if sig == signal.SIGINT else 143)
    assert list(pd.read_csv(csv)["window"]) == [0, 1, 2]
    assert summary(csv)["ended_by"] == ("interrupted" if sig == signal.SIGINT else "terminated")


def test_disk_full_mid_run_exits_1_with_one_line(small: Path, tmp_path: Path) -> None:
    """The disk fills in the middle of window 4's row: half of it reaches the file, then ENOSPC. The half row
    is cut back, the run ends with exit 1 and one line, and the CSV reads as whole rows 0-3."""
    csv = tmp_path / "full.csv"
    proc = start("disk-full", 4, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    returncode, lines = finish(proc)
    errors = [line for line in lines if line.startswith("error:")]
    assert returncode == 1 and "Traceback" not in "\n".join(lines)
    assert errors == [f"error: csv recorder {csv} failed at window 4: OSError: [Errno 28] No space left on device"]
    half = [int(line.split()[-1]) for line in lines if line.startswith("PHASE half-row")]
    assert len(half) == 1 and half[0] > 10  # a partial row really reached the file
    text = csv.read_text()
    assert text.endswith("\n") and text.count("\n") == 5
    assert list(pd.read_csv(csv)["window"]) == [0, 1, 2, 3]
    assert summary(csv)["ended_by"] == "error" and summary(csv)["message"].startswith("csv recorder")
    assert summary(csv)["windows"] == 4


def test_a_summary_that_cannot_be_written_exits_1(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "summary.csv"
    proc = start("summary-full", 0, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    returncode, lines = finish(proc)
    assert returncode == 1, lines
    assert [x for x in lines if x.startswith("error:")] == [
        f"error: csv recorder {csv} could not be closed: OSError: [Errno 28] No space left on device"
    ]
    assert list(pd.read_csv(csv)["window"]) == list(range(12))  # every row of the 12 s demo kept
    assert summary(csv) is None  # the sidecar was never completed


@pytest.mark.parametrize(("phase", "fault"), [("sinks-open", "hold-after-sinks"), ("built", "hold-before-handlers")])
def test_a_signal_before_the_handlers_still_closes_the_recorders(
    small: Path, tmp_path: Path, phase: str, fault: str
) -> None:
    csv = tmp_path / "early.csv"
    proc = start(fault, 0, "--replay", DEMO, "--config", small, "--no-ui", "--csv", csv)
    wait_for_phase(proc, phase)
    os.kill(proc.pid, signal.SIGTERM)
    returncode, lines = finish(proc)
    assert returncode == 143 and lines == ["terminated"], lines
    assert csv.read_text().count("\n") == 1 and summary(csv)["ended_by"] == "terminated"
    assert summary(csv)["windows"] == 0


def long_clip(tmp_path: Path, seconds: int) -> Path:
    frames = np.full((seconds * FPS, 64, 64, 3), 90, np.uint8)
    return write_mp4(tmp_path / "long.mp4", frames, 0.1 * np.ones(seconds * SAMPLE_RATE, np.float32))


def fifo_nobody_reads(path: Path) -> int:
    """A FIFO with a reader that never reads, its buffer cut to one page (it fills after a few rows)."""
    import fcntl

    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ
    return reader


@pytest.mark.parametrize("how", ["timeout", pytest.param("sigterm", marks=pytest.mark.slow)])
def test_a_jsonl_fifo_nobody_reads_ends_the_run(small: Path, tmp_path: Path, how: str) -> None:
    """JSON lines into a FIFO whose reader stopped reading: the stuck write ends the run after the bound
    (exit 1, one line naming the sink), or SIGTERM ends it (exit 143); the CSV keeps its rows and summary."""
    clip, csv, fifo = long_clip(tmp_path, 40), tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    reader = fifo_nobody_reads(fifo)
    bound = "2" if how == "timeout" else "600"
    try:
        args = ("--replay", clip, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv, "--jsonl", fifo)
        proc = start("sink-timeout", int(bound), *args)
        wait_for_phase(proc, "stuck")
        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        returncode, lines = finish(proc)
    finally:
        os.close(reader)
    rows = pd.read_csv(csv)
    assert len(rows) >= 3 and list(rows["window"]) == list(range(len(rows)))
    if how == "sigterm":
        assert returncode == 143 and summary(csv)["ended_by"] == "terminated", lines
        return
    assert returncode == 1, lines
    expected = f"error: jsonl recorder {fifo}: a write has not returned for 2 s"
    errors = [x for x in lines if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), lines
    assert summary(csv)["ended_by"] == "error" and summary(csv)["message"].startswith(f"jsonl recorder {fifo}")


def test_a_decoder_failure_mid_run_exits_1_and_keeps_the_rows(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "decoder.csv"
    proc = start(
        "decoder-fails", 250, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv
    )
    returncode, lines = finish(proc)
    assert returncode == 1 and [x for x in lines if x.startswith("error:")] == [
        "error: file: RuntimeError: planted decoder failure"
    ]
    rows = pd.read_csv(csv)
    assert len(rows) >= 2 and list(rows["window"]) == list(range(len(rows)))


def test_kill_9_loses_at_most_the_row_in_flight(small: Path, tmp_path: Path) -> None:
    """SIGKILL lands inside the recorder's write of window 5's row (each row reaches the OS in one write call,
    checked by the runner): rows 0-4 are on disk as whole lines, the summary says the run did not close."""
    csv = tmp_path / "killed.csv"
    proc = start("slow-row", 5, "--replay", DEMO, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    lines = wait_for_phase(proc, "writing")
    proc.kill()
    proc.communicate(timeout=HANG_S)
    assert "PHASE not-one-line-per-write" not in lines
    text = csv.read_text()
    assert text.endswith("\n") and text.count("\n") == 6  # the header and rows 0-4
    assert list(pd.read_csv(csv)["window"]) == [0, 1, 2, 3, 4]
    assert json.loads(Path(str(csv) + ".json").read_text())["summary"] is None  # it did not close: and says so


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (("--csv", "{tmp}/a.csv", "--jsonl", "{tmp}/a.csv"), "--jsonl {tmp}/a.csv and --csv {tmp}/a.csv are the same"),
        slow(
            ("--csv", "{tmp}/a.csv", "--jsonl", "{tmp}/a.csv.json"), "--jsonl {tmp}/a.csv.json and the sidecar of --csv"
        ),
        slow(("--csv", "{tmp}/a.csv", "--jsonl", "{tmp}/link.csv"), "--jsonl {tmp}/link.csv and --csv {tmp}/a.csv are"),
    ],
)
def test_outputs_that_collide_are_refused_and_left_untouched(
    small: Path, tmp_path: Path, outputs: tuple[str, ...], message: str
) -> None:
    for name in ("a.csv", "a.csv.json"):
        (tmp_path / name).write_text(f"old {name}\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    args = [x.format(tmp=tmp_path) for x in outputs]
    proc = start("mark-warm-up", 0, "--replay", DEMO, "--config", small, "--no-ui", *args)
    returncode, lines = finish(proc)
    assert returncode == 2 and len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], lines
    assert lines[0].endswith("give each output its own file name")
    assert [(tmp_path / n).read_text() for n in ("a.csv", "a.csv.json")] == ["old a.csv\n", "old a.csv.json\n"]


def test_a_sidecar_that_cannot_be_written_is_refused_before_the_csv_is_touched(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "out.csv"
    csv.write_bytes(b"window,start_s\n0,0.000\n")
    (tmp_path / "out.csv.json").mkdir()
    proc = start("mark-warm-up", 0, "--replay", DEMO, "--config", small, "--no-ui", "--csv", csv)
    returncode, lines = finish(proc)
    assert returncode == 2 and lines == [
        f"error: cannot record to '{csv}.json': it is a directory; give a file name inside it"
    ]
    assert csv.read_bytes() == b"window,start_s\n0,0.000\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/dev/full", "cannot record to '/dev/full': the disk is full; free some space or record somewhere else"),
        slow("/sys/session.csv", "cannot record to '/sys/session.csv': permission denied"),
        slow("{tmp}", "it is a directory; give a file name inside it"),
        slow("{tmp}/missing/x.csv", "does not exist; create it first"),
    ],
)
def test_unwritable_output_is_refused_before_the_model_loads(
    small: Path, tmp_path: Path, target: str, message: str
) -> None:
    path = target.format(tmp=tmp_path)
    proc = start("mark-warm-up", 0, "--replay", DEMO, "--config", small, "--no-ui", "--csv", path)
    returncode, lines = finish(proc)
    assert returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_terminal_that_stops_reading_cannot_hold_the_signals(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    """The dashboard draws into a pipe nobody reads (as into a terminal after Ctrl-S): rich's thread blocks in
    a write, yet the signal ends the run with its exit code, the CSV keeps its rows and its summary."""
    import fcntl

    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the pipe as a terminal and draws the live display
    csv = tmp_path / "ui.csv"
    proc = start("mark-warm-up", 0, "--replay", DEMO, "--config", small, "--csv", csv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: one page fills after a frame or two
    wait_for_phase(proc, "warm-up")
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline and (not csv.exists() or csv.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    assert proc.stderr is not None
    try:
        proc.wait(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("a stalled terminal held the run after the signal") from None
    lines = proc.stderr.read().splitlines()
    ended = "interrupted" if sig == signal.SIGINT else "terminated"
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), lines
    rows = pd.read_csv(csv)
    assert len(rows) >= 2 and summary(csv)["ended_by"] == ended and summary(csv)["windows"] == len(rows)
    assert lines[-1].endswith(f"ended by {ended}")
