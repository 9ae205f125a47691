"""The Python API (monitor/api.py): whole-file estimates equal the CLI's CSV, a live loop that is left stops the
run, and the documented example runs as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers.configs import small_toml
from helpers.pulse_fixture import PulseServer, pulse_server  # noqa: F401 - pulse_server is a fixture

from monitor.api import EndReason, LiveRun, RunEnd, RunFailed, estimate_file, live, load_model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"
EXAMPLE_PAGE = ROOT / "README.md"
API_PAGE = ROOT / "docs" / "python-api.md"  # opens with the same example


def first_python_block(page: Path) -> str:
    """The first ```python ... ``` block of a Markdown page, as written there."""
    match = re.search(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    assert match is not None, f"{page} has no ```python block"
    return match.group(1)


def test_estimate_file_equals_the_cli_csv(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "cli.csv"
    cmd = [sys.executable, "-m", "monitor.cli", "--replay", str(DEMO), "--config", str(small), "--clock", "offline"]
    done = subprocess.run([*cmd, "--no-ui", "--duration", "4", "--csv", str(csv)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(csv)
    records = estimate_file(DEMO, load_model(config=small), duration=4)
    assert [list(record) for record in records] == [list(rows.columns)] * 4
    for record, (_, row) in zip(records, rows.iterrows(), strict=True):
        assert record["window"] == row["window"] and record["end_s"] == row["end_s"]
        assert record["valence"] == pytest.approx(row["valence"], abs=1e-6)
        assert record["arousal"] == pytest.approx(row["arousal"], abs=1e-6)
        assert record["attribution"] == pytest.approx([float(w) for w in row["attribution"].split(";")], abs=1e-4)
        assert (record["video_ok"], record["audio_ok"], record["frames"]) == (1, 1, row["frames"])
        assert record["latency_ms"] > 0 and record["dropped_total"] == 0


def test_leaving_the_loop_stops_the_run(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "loop.csv"
    run = live(replay=DEMO, clock="realtime", model=load_model(config=small), csv=csv)
    assert isinstance(run, LiveRun) and run.outputs == ("valence", "arousal")
    seen = []
    for estimate in run:
        seen.append(estimate.window)
        if len(seen) == 2:
            left = time.monotonic()
            break
    stopped_in = time.monotonic() - left
    assert seen[0] == 0 and seen[1] > 0 and run.end == RunEnd(EndReason.STOPPED) and stopped_in < 5
    replay = run.pipeline.sources[0]
    assert replay._thread is not None and not replay._thread.is_alive()  # the decoder thread was joined
    rows = pd.read_csv(csv)
    assert list(rows["window"][:2]) == seen and len(rows) <= 3  # a window in flight may still be written
    assert json.loads(Path(f"{csv}.json").read_text())["summary"]["ended_by"] == "stopped"
    with pytest.raises(RuntimeError, match="iterated once"):
        next(iter(run))


def test_a_run_that_fails_raises_after_its_estimates(small: Path, media: Path) -> None:
    model = load_model(config=small)
    with pytest.raises(ValueError, match="no such file; check the path given to --replay"):
        live(replay=media / "no_such_file.mp4", model=model)
    run = live(replay=DEMO, clock="offline", model=model, duration=3)
    run.pipeline.sinks.append(FailingSink(at=1))
    seen = []
    with pytest.raises(RunFailed, match="failing sink failed at window 1: OSError: disk gone"):
        for estimate in run:
            seen.append(estimate.window)
    assert seen == [0]


class FailingSink:
    name = "failing sink"

    def __init__(self, at: int) -> None:
        self.at = at

    def write(self, estimate: object) -> None:
        if getattr(estimate, "window", 0) >= self.at:
            raise OSError("disk gone")

    def close(self, end: RunEnd) -> None:
        pass


def test_the_documented_example_runs_as_written(tmp_path: Path) -> None:
    """The first ```python block of the README, run as a user runs it (from the repository root); the API's
    own page opens with the same block."""
    code = first_python_block(EXAMPLE_PAGE)
    assert first_python_block(API_PAGE) == code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "0", "1", "2"], done.stdout
    assert all(float(value) <= 1 for line in lines[:3] for value in line.split()[1:3])
    assert lines[5].endswith(" ms") and "'valence'" in lines[5]


def test_the_package_re_exports_the_api_without_importing_torch() -> None:
    code = "import sys, monitor; assert 'torch' not in sys.modules; print(monitor.load_model.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "monitor.api", done.stderr


@pytest.mark.audio_device
def test_a_live_loop_over_the_microphone(pulse_server: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    """`for estimate in live(mic=...)`: live windows from a real PortAudio device (a PulseAudio tone); leaving
    the loop closes the device."""
    config = tmp_path / "audio.toml"
    config.write_text(small_toml("audio"))
    run = live(mic="pulse", model=load_model(config=config))
    estimates = []
    for estimate in run:
        estimates.append(estimate)
        if len(estimates) == 3:
            break
    assert [e.window for e in estimates] == [0, 1, 2] and all(e.audio_ok and not e.video_ok for e in estimates)
    assert estimates[-1].audio_coverage > 0.9 and run.end == RunEnd(EndReason.STOPPED)
    microphone = run.pipeline.sources[0]
    assert microphone.status.running is False and microphone._stream is None  # stopped and closed
