"""Smoke runs of the benchmarks with tiny arguments, so that none of them can rot unseen: each must run to the
end and print its figures (the figures themselves are measured by running the benchmarks for real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_soak_prints_every_figure_beside_its_goal(small: Path, tmp_path: Path) -> None:
    args = ["--minutes", "0.05", "--sizes", "160x90", "320x180", "--fps", "10", "--sample-s", "0.5"]
    result = subprocess.run(
        [sys.executable, "benchmarks/soak.py", *args, "--config", str(small), "--cache", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "soak: virtual clock, 10 fps, content 320x240 scaled to each size"
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert set(rows) == {"160x90", "320x180"} and all(row[5] in ("3", "4") and row[6] == "0" for row in rows.values())
    assert float(rows["160x90"][2]) > 100  # peak RSS in MB of a process that loaded torch
    assert "peak 320x180 - peak 160x90 =" in result.stdout
    assert "CPU per second of video, 320x180 / 160x90" in result.stdout
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["soak_160x90_3s_10fps.mp4", "soak_320x180_3s_10fps.mp4"]
