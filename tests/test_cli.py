"""`sec2sec-live` and `sec2sec` as a user runs them: subprocesses, exit codes, one-line errors, files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers.configs import small_toml

from monitor.fields import columns
from sec2sec.config import shipped_config_names

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"


def live(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "monitor.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_file.mp4", "no such file; check the path given to --replay"),
        ("empty.mp4", "the file is empty (0 bytes)"),
        ("not_a_video.mp4", "not a readable audio/video file"),
    ],
)
def test_unreadable_replay_files(media: Path, small: Path, name: str, message: str) -> None:
    started = time.monotonic()
    result = live("--replay", media / name, "--config", small, "--no-ui")
    assert result.returncode == 2 and message in error_line(result)
    assert time.monotonic() - started < 30


def test_no_video_stream_runs_audio_only_with_video_ok_0(media: Path, small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    result = live(
        "--replay",
        media / "audio_only_no_video_stream.mov",
        "--config",
        small,
        "--clock",
        "offline",
        "--no-ui",
        "--csv",
        csv,
    )
    assert result.returncode == 0, result.stderr
    assert "has no video stream: running audio-only, every window has video_ok=0" in result.stderr
    rows = pd.read_csv(csv)
    assert len(rows) == 8 and rows["video_ok"].eq(0).all() and rows["audio_ok"].eq(1).all()
    assert rows["frames"].eq(0).all()


def test_no_video_stream_is_refused_by_a_vision_only_model(media: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "vision.toml"
    cfg.write_text(small_toml("video"))
    result = live("--replay", media / "audio_only_no_video_stream.mov", "--config", cfg, "--no-ui")
    assert result.returncode == 2
    assert "has no video and this model uses video only" in error_line(result)


def test_no_audio_track_runs_with_audio_ok_0(media: Path, small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "v.csv"
    result = live(
        "--replay",
        media / "carphone_qcif_no_audio.mp4",
        "--config",
        small,
        "--clock",
        "offline",
        "--no-ui",
        "--csv",
        csv,
    )
    assert result.returncode == 0, result.stderr
    assert "has no audio: running video-only" in result.stderr
    rows = pd.read_csv(csv)
    assert len(rows) == 4 and rows["audio_ok"].eq(0).all() and rows["audio_coverage"].eq(0).all()


def test_file_shorter_than_a_window_gives_one_partial_row(media: Path, small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "s.csv"
    result = live(
        "--replay", media / "grid_speaker_0.6s.mp4", "--config", small, "--clock", "offline", "--no-ui", "--csv", csv
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(csv)
    assert len(rows) == 1 and rows.loc[0, "frames"] == 15 and 0.55 < rows.loc[0, "audio_coverage"] < 0.65


@pytest.mark.parametrize(
    ("name", "rows_at_least"),
    [
        pytest.param("talking_face_truncated_60pct.mp4", 11, marks=pytest.mark.slow),
        ("grid_speaker_corrupted_bytes.mpg", 3),
    ],
)
def test_damaged_files_keep_every_row_and_report_the_skip(
    media: Path, small: Path, tmp_path: Path, name: str, rows_at_least: int
) -> None:
    csv = tmp_path / "d.csv"
    result = live("--replay", media / name, "--config", small, "--clock", "offline", "--no-ui", "--csv", csv)
    assert result.returncode == 0, result.stderr
    assert "damaged packets skipped" in result.stderr
    rows = pd.read_csv(csv)
    assert len(rows) >= rows_at_least and list(rows["window"]) == list(range(len(rows)))
    summary = json.loads(Path(str(csv) + ".json").read_text())["summary"]
    assert summary["windows"] == len(rows) and summary["input"]["file"]["damaged_packets_skipped"] >= 1


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "error: --device 'tpu' is not allowed; use auto (a CUDA GPU when there is one, else the CPU)"),
        pytest.param(
            "cuda:1",
            "error: --device cuda:1: no CUDA GPU is available here; use --device cpu (or auto)",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_bad_device_is_one_error_line(media: Path, small: Path, device: str, message: str) -> None:
    result = live("--replay", media / "grid_speaker_0.6s.mp4", "--config", small, "--device", device, "--no-ui")
    assert result.returncode == 2 and error_line(result).startswith(message), result.stderr


def test_camera_index_that_does_not_exist(small: Path) -> None:
    started = time.monotonic()
    result = live("--camera", "97", "--no-mic", "--config", small, "--no-ui")
    assert result.returncode == 2 and "camera 97 could not be opened" in error_line(result)
    assert result.stderr.strip().splitlines() == [error_line(result)]  # OpenCV's own log stays quiet
    assert time.monotonic() - started < 30


def test_microphone_name_that_matches_nothing(small: Path) -> None:
    result = live("--mic", "no-such-microphone-xyz", "--config", small, "--no-ui")
    assert result.returncode == 2
    line = error_line(result)
    assert "no-such-microphone-xyz" in line or "PortAudio" in line or "no audio input device" in line


def test_contradictory_options(small: Path) -> None:
    for args, message in [
        ((), "give an input: --camera N (live), --mic N or --no-camera (microphone only), --replay FILE"),
        (("--replay", DEMO, "--camera", "0"), "--replay takes video and audio from the file"),
        (("--replay", DEMO, "--speed", "0"), "--speed 0.0 must be > 0"),
        (("--replay", DEMO, "--mic", "1"), "--replay takes video and audio from the file"),
        (("--camera", "0", "--no-camera"), "--camera and --no-camera contradict each other"),
        (("--no-camera", "--no-mic"), "--no-camera and --no-mic leave nothing to record"),
        (("--camera", DEMO), f"--camera {DEMO} is a file; replay files with --replay {DEMO}"),
        (("--replay", DEMO, "--checkpoint", ROOT / "pyproject.toml"), "not a readable checkpoint (not a torch file)"),
    ]:
        result = live(*args, "--config", small, "--no-ui")
        assert result.returncode == 2 and message in error_line(result), args


def test_offline_replay_with_every_output(small: Path, tmp_path: Path) -> None:
    csv, jsonl = tmp_path / "demo.csv", tmp_path / "demo.jsonl"
    result = live(
        "--replay",
        DEMO,
        "--config",
        small,
        "--clock",
        "offline",
        "--no-ui",
        "--csv",
        csv,
        "--jsonl",
        jsonl,
        "--duration",
        "5",
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(csv)
    assert list(rows.columns) == list(columns(("valence", "arousal")))  # the fields' table (test_fields.py)
    assert list(rows["window"]) == [0, 1, 2, 3, 4] and rows["valence"].between(0, 1).all()
    assert [len(a.split(";")) for a in rows["attribution"]] == [1, 2, 3, 4, 5]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [list(r) for r in records] == [list(rows.columns)] * 5 and [r["window"] for r in records] == [0, 1, 2, 3, 4]
    assert records[2]["valence"] == pytest.approx(rows.loc[2, "valence"], abs=1e-6)
    sidecar = json.loads(Path(str(csv) + ".json").read_text())
    assert sidecar["untrained"] is True and sidecar["pretrained_encoders"] == {"video": False, "audio": False}
    assert sidecar["summary"]["ended_by"] == "duration" and sidecar["config"]["video"]["frames_per_window"] == 4
    assert result.stdout.count("valence") == 5 and "5 windows, 0 dropped" in result.stderr


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40 s demo clip: a loaded machine drops windows under the realtime clock, and the run must still be
    going when the signal arrives."""
    from monitor.demo_clip import write_demo_clip

    return write_demo_clip(tmp_path_factory.mktemp("long") / "long.mp4", seconds=40)


@pytest.mark.parametrize(
    ("sig", "code", "ended"),
    [pytest.param(signal.SIGINT, 130, "interrupted", marks=pytest.mark.slow), (signal.SIGTERM, 143, "terminated")],
)
def test_signals_stop_cleanly_and_keep_rows(
    small: Path, long_clip: Path, tmp_path: Path, sig: int, code: int, ended: str
) -> None:
    csv = tmp_path / "sig.csv"
    cmd = [
        sys.executable,
        "-m",
        "monitor.cli",
        "--replay",
        str(long_clip),
        "--config",
        str(small),
        "--no-ui",
        "--csv",
        str(csv),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not csv.exists() or len(csv.read_text().splitlines()) < 3):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the signal could be sent"
    os.kill(proc.pid, sig)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert time.monotonic() - sent < 30  # only a hang exceeds this (the run stops in a few seconds)
    rows = pd.read_csv(csv)
    assert len(rows) >= 2 and list(rows["window"]) == list(range(len(rows)))
    assert json.loads(Path(str(csv) + ".json").read_text())["summary"]["ended_by"] == ended


def test_a_config_by_name_and_an_unknown_name(tmp_path: Path) -> None:
    """--config takes a shipped name; an unknown one is one line listing the names, before the model loads."""
    result = live("--replay", DEMO, "--config", "first_impresions", "--no-ui", "--csv", tmp_path / "a.csv")
    assert result.returncode == 2 and not (tmp_path / "a.csv").exists()
    line = error_line(result)
    names = ", ".join(shipped_config_names())
    assert line.startswith(f"error: no shipped config is named 'first_impresions'; use one of {names}")
    assert line.endswith("or pass the path of a TOML file")


def test_help_shows_defaults() -> None:
    result = live("--help")
    assert result.returncode == 0
    assert "--clock {realtime,virtual,offline}" in result.stdout and "(default: realtime)" in result.stdout
    assert "(default: 0)" in result.stdout and "(default: auto)" in result.stdout  # --threads, --device
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "default: the training clip length)" in text and "clip length) (default" not in text
    assert "sec2sec-live plot SESSION.csv: draw a recorded session as a PNG (see sec2sec-live plot --help)" in text


def test_describe_prints_the_real_model(small: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sec2sec", "describe", "--config", str(small)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "video encoder" in result.stdout and "r2plus1d_18" in result.stdout
    assert "9+16 tokens" in result.stdout and "attention_lstm" in result.stdout
    assert "video: RANDOM, audio: RANDOM" in result.stdout
    text = " ".join(result.stdout.split())  # rich wraps long lines at the terminal width
    assert "video tokens: r2plus1d_18 layer4 map (512, 1, 7, 7) for 4 frames of 112x112 -> grid 1 x 3 x 3" in text
    assert "audio tokens: resnet18 layer4 map (512, 4, 7) for an MFCC image of 112x224 -> grid 4 x 4" in text


@pytest.mark.slow
def test_untrained_runs_are_reproducible(small: Path, tmp_path: Path) -> None:
    """Without a checkpoint the model is random but seeded: two replays of one file give the same rows."""
    outputs = []
    for name in ("one.csv", "two.csv"):
        result = live(
            "--replay",
            DEMO,
            "--config",
            small,
            "--clock",
            "offline",
            "--no-ui",
            "--csv",
            tmp_path / name,
            "--duration",
            "2",
        )
        assert result.returncode == 0, result.stderr
        outputs.append(pd.read_csv(tmp_path / name)[["valence", "arousal", "attribution"]])
    pd.testing.assert_frame_equal(outputs[0], outputs[1])
