"""`python -m sec2sec ...` as the tests run it: in one process, or under torchrun with N CPU processes (gloo)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_sec2sec(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sec2sec ARGS --device cpu`, or the same under torchrun with `processes` processes; fails the
    test with the command's output when it exits non-zero."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "sec2sec", *args, "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def read_metrics(run: Path) -> list[dict[str, str]]:
    """The rows of a training run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))
