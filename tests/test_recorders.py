"""CSV and JSON-lines recorders: exact text, pandas round trip, per-row flushing (even under SIGKILL), sidecar."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.recorders import CsvRecorder, JsonlRecorder, sidecar_path
from monitor.run_end import EndReason, RunEnd
from monitor.snapshot import percentile
from sec2sec.stream import Estimate

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("valence", "arousal")
HEADER = (
    "window,start_s,end_s,valence,arousal,attribution,video_ok,audio_ok,frames,audio_coverage,latency_ms,dropped_total,"
    "frames_dropped,samples_lost,samples_restamped,gap,compute_ms"
)


def estimate(index: int, **changes: object) -> Estimate:
    """A plausible Estimate for window `index`; keyword arguments override fields."""
    fields: dict[str, object] = {
        "window": index,
        "outputs": {"valence": 0.25, "arousal": 0.7512345678},
        "attribution": (0.1021, 0.2113, 0.6866),
        "video_ok": True,
        "audio_ok": False,
        "frames": 8,
        "audio_coverage": 0.5,
        "compute_ns": 5_000_000,
        "gap": 0,
        "latency_ns": 312_345_678,
        "dropped_total": 0,
    }
    fields.update(changes)
    return Estimate(**fields)  # type: ignore[arg-type]


FIRST = estimate(0)
SECOND = estimate(
    1,
    outputs={"arousal": 0.125, "valence": 0.5},  # order of the dict must not matter
    attribution=(),
    video_ok=False,
    audio_ok=True,
    frames=0,
    audio_coverage=1.0,
    gap=1,
    latency_ns=None,
    dropped_total=2,
    frames_dropped=3,
    samples_lost=800,
    samples_restamped=8800,
)
ROWS = (
    "0,0.000,1.000,0.250000,0.751235,0.1021;0.2113;0.6866,1,0,8,0.500,312.3,0,0,0,0,0,5.0",
    "1,1.000,2.000,0.500000,0.125000,,0,1,0,1.000,,2,3,800,8800,1,5.0",
)


def test_csv_header_and_rows_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    recorder = CsvRecorder(path, NAMES, {"source": "talk.mp4"})
    assert path.read_text() == HEADER + "\n"  # the header is on disk at once
    recorder.write(FIRST)
    recorder.write(SECOND)
    recorder.close()
    assert path.read_text() == "\n".join((HEADER, *ROWS)) + "\n"
    assert recorder.columns == tuple(HEADER.split(","))


def test_each_row_is_on_disk_right_after_write(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    recorder = CsvRecorder(path, NAMES, {})
    recorder.write(FIRST)
    assert path.read_text().splitlines() == [HEADER, ROWS[0]]
    recorder.write(SECOND)
    assert path.read_text().splitlines() == [HEADER, *ROWS]
    recorder.close()


def test_pandas_reads_the_csv_with_the_right_types_and_values(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    with CsvRecorder(path, NAMES, {}) as recorder:
        recorder.write(FIRST)
        recorder.write(SECOND)
    frame = pd.read_csv(path)
    assert list(frame.columns) == HEADER.split(",")
    for column in ("window", "video_ok", "audio_ok", "frames", "dropped_total"):
        assert frame[column].dtype == np.int64, column
    for column in ("start_s", "end_s", "valence", "arousal", "audio_coverage", "latency_ms"):
        assert frame[column].dtype == np.float64, column
    assert frame["window"].tolist() == [0, 1]
    assert frame["end_s"].tolist() == [1.0, 2.0]
    assert frame["valence"].tolist() == [0.25, 0.5]
    assert frame["arousal"].tolist() == [0.751235, 0.125]
    assert frame["video_ok"].tolist() == [1, 0]
    assert frame["audio_ok"].tolist() == [0, 1]
    assert frame["frames"].tolist() == [8, 0]
    assert frame["audio_coverage"].tolist() == [0.5, 1.0]
    assert frame["latency_ms"][0] == 312.3 and math.isnan(frame["latency_ms"][1])
    assert frame["dropped_total"].tolist() == [0, 2]
    assert frame["samples_lost"].tolist() == [0, 800] and frame["samples_lost"].dtype == np.int64
    assert frame["attribution"][0] == "0.1021;0.2113;0.6866" and pd.isna(frame["attribution"][1])
    weights = [float(w) for w in frame["attribution"][0].split(";")]
    assert weights == [0.1021, 0.2113, 0.6866]


def test_rows_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "killed.csv"
    script = textwrap.dedent(
        f"""
        import os, signal
        from monitor.recorders import CsvRecorder
        from sec2sec.stream import Estimate
        recorder = CsvRecorder({str(path)!r}, ["valence"], {{"source": "test"}})
        for index in range(3):
            recorder.write(Estimate(index, {{"valence": index / 4}}, (), True, True, 8, 1.0, 1, latency_ns=10**8))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    frame = pd.read_csv(path)
    assert frame["window"].tolist() == [0, 1, 2]
    assert frame["valence"].tolist() == [0.0, 0.25, 0.5]
    assert frame["latency_ms"].tolist() == [100.0, 100.0, 100.0]
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["source"] == "test" and sidecar["summary"] is None  # never closed: no summary


def test_sidecar_before_and_after_close(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    given = {"config": {"temporal": "lstm"}, "checkpoint_sha256": "ab12", "untrained": False, "start": "2024-01-01"}
    recorder = CsvRecorder(path, NAMES, given)
    assert sidecar_path(path) == tmp_path / "talk.csv.json"
    before = json.loads((tmp_path / "talk.csv.json").read_text())
    format_version = {"format": "sec2sec-session", "format_version": 2}
    assert before == {**format_version, **given, "columns": HEADER.split(","), "summary": None}
    for index, latency_ms in enumerate([400.0, 100.0, None, 300.0, 200.0]):
        latency_ns = None if latency_ms is None else int(latency_ms * 1e6)
        lost = {"frames_dropped": index, "samples_lost": 100 * index, "samples_restamped": 7 if index == 2 else 0}
        recorder.write(estimate(index, latency_ns=latency_ns, dropped_total=index, gap=1 if index == 3 else 0, **lost))
    recorder.close(RunEnd(EndReason.INTERRUPTED))
    after = json.loads((tmp_path / "talk.csv.json").read_text())
    assert {**after, "summary": None} == before  # only the summary changed
    assert after["summary"] == {
        "windows": 5,
        "first_window": 0,
        "last_window": 4,
        "windows_missing": 1,
        "dropped_total": 4,
        "frames_dropped": 10,  # the loss columns, summed
        "samples_lost": 1000,
        "samples_restamped": 7,
        "latency_p50_ms": 250.0,  # of 100, 200, 300, 400 (the window without a latency is left out)
        "latency_p99_ms": 397.0,  # 300 + 0.97 * (400 - 300)
        "ended_by": "interrupted",
        "message": None,
    }
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file behind"


def test_close_twice_keeps_the_first_summary_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    recorder = CsvRecorder(path, NAMES, {})
    recorder.write(FIRST)
    recorder.close(RunEnd(EndReason.END))
    text = sidecar_path(path).read_text()
    recorder.close(RunEnd.error("too late"))
    assert recorder.closed
    assert sidecar_path(path).read_text() == text
    assert json.loads(text)["summary"]["ended_by"] == "end"
    with pytest.raises(ValueError, match="closed"):
        recorder.write(SECOND)
    assert path.read_text().splitlines() == [HEADER, ROWS[0]]


def test_empty_recording_has_a_summary_without_latency(tmp_path: Path) -> None:
    recorder = CsvRecorder(tmp_path / "empty.csv", NAMES, {})
    recorder.close()
    summary = json.loads((tmp_path / "empty.csv.json").read_text())["summary"]
    assert summary["windows"] == 0 and summary["latency_p50_ms"] is None and summary["latency_p99_ms"] is None


def test_missing_directory_is_a_value_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(ValueError, match="does not exist") as caught:
        CsvRecorder(missing / "talk.csv", NAMES, {})
    assert str(missing) in str(caught.value) and "mkdir -p" in str(caught.value)
    with pytest.raises(ValueError, match=str(missing)):
        JsonlRecorder(missing / "talk.jsonl", NAMES)
    assert not (tmp_path / "no").exists()


def test_a_directory_as_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        CsvRecorder(tmp_path, NAMES, {})


def test_bad_arguments_are_refused_before_any_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    with pytest.raises(ValueError, match="more than once"):
        CsvRecorder(path, ["valence", "valence"], {})
    with pytest.raises(ValueError, match="clash"):
        CsvRecorder(path, ["window"], {})
    with pytest.raises(ValueError, match="empty"):
        CsvRecorder(path, [], {})
    with pytest.raises(ValueError, match="written by the recorder"):
        CsvRecorder(path, NAMES, {"columns": []})
    with pytest.raises(ValueError, match="plain JSON"):
        CsvRecorder(path, NAMES, {"checkpoint": path})
    assert list(tmp_path.iterdir()) == []


def test_an_estimate_without_an_output_is_refused(tmp_path: Path) -> None:
    recorder = CsvRecorder(tmp_path / "talk.csv", NAMES, {})
    with pytest.raises(ValueError, match="arousal"):
        recorder.write(estimate(0, outputs={"valence": 0.5}))
    recorder.close()
    assert (tmp_path / "talk.csv").read_text() == HEADER + "\n"


def test_an_existing_file_is_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "talk.csv"
    path.write_text("old contents\n")
    CsvRecorder(path, NAMES, {}).close()
    assert path.read_text() == HEADER + "\n"


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [1.0, 2.0, 3.0, 4.0, 100.0], list(np.linspace(0, 1, 37))])
@pytest.mark.parametrize("q", [0, 50, 90, 99, 100])
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_jsonl_lines_carry_every_field(tmp_path: Path) -> None:
    path = tmp_path / "talk.jsonl"
    recorder = JsonlRecorder(path, NAMES)
    recorder.write(FIRST)
    assert len(path.read_text().splitlines()) == 1  # flushed before close
    recorder.write(SECOND)
    recorder.close()
    recorder.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {
        "window": 0,
        "start_s": 0.0,
        "end_s": 1.0,
        "valence": 0.25,
        "arousal": 0.7512345678,
        "attribution": [0.1021, 0.2113, 0.6866],
        "video_ok": True,
        "audio_ok": False,
        "frames": 8,
        "audio_coverage": 0.5,
        "latency_ms": 312.346,
        "dropped_total": 0,
        "frames_dropped": 0,
        "samples_lost": 0,
        "samples_restamped": 0,
        "gap": 0,
        "compute_ms": 5.0,
    }
    assert list(first) == list(second) == HEADER.split(",")  # the CSV's columns, outputs in the recorder's order
    assert second["attribution"] == [] and second["latency_ms"] is None
    assert (second["gap"], second["dropped_total"], second["video_ok"]) == (1, 2, False)
    assert (second["frames_dropped"], second["samples_lost"], second["samples_restamped"]) == (3, 800, 8800)
    with pytest.raises(ValueError, match="closed"):
        recorder.write(FIRST)


def test_jsonl_writes_nan_as_null(tmp_path: Path) -> None:
    path = tmp_path / "nan.jsonl"
    with JsonlRecorder(path, NAMES) as recorder:
        recorder.write(estimate(0, outputs={"valence": float("nan"), "arousal": 0.5}, attribution=(float("inf"),)))
    line = json.loads(path.read_text())
    assert (line["valence"], line["arousal"], line["attribution"]) == (None, 0.5, [None])


def test_the_sidecar_gets_the_csv_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        rec = CsvRecorder(tmp_path / "perm.csv", NAMES, {})
        rec.write(FIRST)
        rec.close()
    finally:
        os.umask(previous)
    csv_mode = (tmp_path / "perm.csv").stat().st_mode & 0o777
    assert csv_mode == 0o640 and sidecar_path(tmp_path / "perm.csv").stat().st_mode & 0o777 == csv_mode


def test_a_write_that_fails_part_way_is_cut_back_to_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills in the middle of a row: the half row is removed, the error is raised, and what is on disk
    still reads as a clean CSV."""
    rec = CsvRecorder(tmp_path / "full.csv", NAMES, {})
    rec.write(FIRST)
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left on device"):
        rec.write(SECOND)
    monkeypatch.undo()
    rec.close(RunEnd.error("OSError: [Errno 28] No space left on device"))
    assert (tmp_path / "full.csv").read_text().splitlines() == [HEADER, ROWS[0]]
    assert json.loads(sidecar_path(tmp_path / "full.csv").read_text())["summary"]["windows"] == 1


@pytest.mark.parametrize("target", ["/dev/full", "{tmp}/exists.csv"])
def test_check_writable_probes_without_harm(tmp_path: Path, target: str) -> None:
    from monitor.output_paths import check_writable

    path = Path(target.format(tmp=tmp_path))
    if target == "/dev/full":
        with pytest.raises(ValueError, match="the disk is full"):
            check_writable(path)
        return
    path.write_text("old session\n")
    assert check_writable(path) == path and path.read_text() == "old session\n"  # untouched
    new = tmp_path / "new.csv"
    assert check_writable(new) == new and not new.exists()  # probed, then removed
