"""Running `tests/helpers/fault_runner.py` (the CLI with one fault planted) as a child process: start it, wait
for the phase it reports on stderr, and collect its exit code and stderr lines, each wait bounded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
HANG_S = 60  # only a hang takes this long


def start(fault: str, n: int, *args: str | Path, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(RUNNER), fault, str(n), "--", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def wait_for_phase(proc: subprocess.Popen[str], name: str) -> list[str]:
    """Read stderr until the runner says `PHASE name`; the lines read so far."""
    lines: list[str] = []
    deadline = time.monotonic() + HANG_S
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == f"PHASE {name}":
            return lines
    raise AssertionError(f"never reached phase {name}: {lines}")


def finish(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    _, stderr = proc.communicate(timeout=HANG_S)
    return proc.returncode, stderr.splitlines()
