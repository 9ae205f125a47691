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


def _run_benchmark(script: str, *args: str, timeout: int = 600) -> list[str]:
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_train_epoch_prints_its_figures() -> None:
    lines = _run_benchmark("train_epoch.py", "--clips", "12", "--seconds", "2", "--batch-size", "4")
    assert lines[0].startswith("one epoch: 12 clips x 2 s, batch 4, ")
    figures = {line.split(":")[0]: line.split(":")[1].split()[0] for line in lines[1:4]}
    assert set(figures) == {"seconds per epoch", "clips/s", "peak memory (max RSS)"}
    assert float(figures["seconds per epoch"]) > 0 and float(figures["clips/s"]) > 0
    loss = float(lines[4].split()[2])
    assert 0.3 < loss < 1.5  # BCE on random labels, one epoch from a fresh model
