"""End-to-end figures of the monitor as a user runs it: start-up, CPU per second of video, latency.

    .venv/bin/python benchmarks/pipeline_latency.py [--seconds 60] [--clocks virtual realtime] [--threads 1 2]
        [--sizes 640x360 1920x1080] [--skip-startup] [--skip-cpu] [--config PATH] [--markdown]

1. Start-up (the `sec2sec-live` command to its first estimate, a 640x360 clip): the default path
   (`--precision auto`, whose start includes the check of bfloat16 against float32) and `--precision float32`,
   the first run of each and the median of --startup-runs more (3). Nothing is built or cached on a first
   run, so the goal is first run <= later runs + 1 s.
2. CPU-seconds per second of video (the child process's user + system time from its first estimate to its last,
   over the seconds of video between them; the offline clock, so the process runs as fast as it can,
   nothing idles and no window is dropped) at each size, default and float32, in one run. Goal: <= 0.75 at
   640x360 on a 2-core machine.
3. For each torch thread count and clock, latency p50/p99, real-time factor (RTF = wall seconds of processing
   per second of media; below 1 keeps up), windows dropped and the median per-window compute (the default
   path). Goals: zero drops with the realtime clock; p50 latency <= per-window compute + 50 ms.
4. The live outputs (LSL, ZeroMQ) beside the CSV recorder: time per window on the pipeline's worker and
   write -> consumer (output_latency.py; `--output-windows 0` skips it). Goal: under 5 ms per window.
`--markdown` prints the tables of 1-3 as Markdown (for docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from output_latency import report_outputs
from soak import soak, write_soak_clip
from tables import cpu_name, print_table

LIVE = [sys.executable, "-m", "monitor.cli"]
CHILD: list[str] = []  # arguments every child gets (--config), set by main


def startup_s(clip: Path, extra: list[str], tmp: Path) -> float:
    """Seconds from starting `sec2sec-live` to its first row on disk (the first estimate)."""
    csv = tmp / f"startup-{time.monotonic_ns()}.csv"
    started = time.monotonic()
    cmd = [*LIVE, "--replay", str(clip), "--clock", "virtual", "--no-ui", "--duration", "3", "--csv", str(csv)]
    child = subprocess.Popen([*cmd, *CHILD, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while child.poll() is None and first is None:
        try:
            if csv.read_text().count("\n") >= 2:  # header + one row
                first = time.monotonic() - started
        except OSError:  # not there yet, or being replaced
            pass
        time.sleep(0.02)
    stderr = child.communicate()[1].decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(f"sec2sec-live exited with {child.returncode}: {stderr.strip().splitlines()[-1:]}")
    return first if first is not None else time.monotonic() - started


def latency(clip: Path, clock: str, threads: int, extra: list[str]) -> dict[str, float]:
    """One replay through a child `sec2sec-live` with --jsonl; its rows summarised."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "out.jsonl"
        cmd = [*LIVE, "--replay", str(clip), "--clock", clock, "--no-ui", "--jsonl", str(jsonl)]
        started = time.perf_counter()
        done = subprocess.run([*cmd, "--threads", str(threads), *CHILD, *extra], capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"sec2sec-live exited with {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    latencies = sorted(r["latency_ms"] for r in rows)
    return {
        "windows": len(rows),
        "dropped": rows[-1]["dropped_total"] if rows else 0,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "compute": statistics.median(r["compute_ms"] for r in rows),
        "rtf": wall / len(rows) if rows else float("nan"),  # each row is one second of media (start-up included)
    }


def size_of(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def report_startup(clip: Path, tmp: Path, modes: dict[str, list[str]], later_runs: int, markdown: bool) -> None:
    rows = []
    for mode, extra in modes.items():
        first = startup_s(clip, extra, tmp)
        later = statistics.median(startup_s(clip, extra, tmp) for _ in range(later_runs))
        rows.append([mode, f"{first:.1f}", f"{later:.1f}", "yes" if first <= later + 1 else "NO"])
    print("\nstart-up to the first estimate (s)")
    headers = ["path", "first run", f"later runs (median of {later_runs})", "goal first <= later + 1 s"]
    print_table(headers, rows, markdown)


def report_cpu(sizes: list[str], seconds: int, tmp: Path, modes: dict[str, list[str]], markdown: bool) -> None:
    print(f"\nCPU-seconds per second of video ({seconds} s clips, 30 fps, offline clock)")
    rows = []
    for size in sizes:
        width, height = size_of(size)
        clip = write_soak_clip(tmp / f"cpu_{size}.mp4", width, height, seconds, 30)
        found = {mode: soak(clip, size, seconds, "offline", 1.0, [*CHILD, *extra]) for mode, extra in modes.items()}
        default, fp32 = (found[mode].cpu_per_second for mode in modes)
        goal = ("yes" if default <= 0.75 else "NO") if size == "640x360" else "-"
        windows = min(r.windows for r in found.values())
        rows.append([size, f"{default:.3f}", f"{fp32:.3f}", f"{default / fp32:.2f}x", str(windows), goal])
    headers = ["size", *(f"{mode} CPU-s/s" for mode in modes), "default/float32", "windows", "goal <= 0.75"]
    print_table(headers, rows, markdown)


def report_latency(args: argparse.Namespace, tmp: Path, mode: str, extra: list[str]) -> None:
    clip = write_soak_clip(tmp / "latency.mp4", 640, 360, args.seconds, 30)
    print(f"\n{args.seconds} s clip at 640x360, {mode}")
    rows = []
    for threads in args.threads:
        for clock in args.clocks:
            r = latency(clip, clock, threads, extra)
            ok = "yes" if r["p50"] <= r["compute"] + 50 else "NO"
            counts = [str(threads), clock, str(r["windows"]), str(r["dropped"])]
            times = [f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['compute']:.0f}", f"{r['rtf']:.2f}"]
            rows.append([*counts, *times, ok])
    headers = ["threads", "clock", "windows", "dropped", "p50 ms", "p99 ms", "compute ms", "RTF"]
    print_table([*headers, "goal p50 <= compute + 50"], rows, args.markdown)
    print("RTF = real-time factor: wall seconds of processing per second of media (< 1 keeps up; lower is better)")


def main() -> None:
    import torch

    from sec2sec.precision import resolve_precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clocks", nargs="+", default=["virtual", "realtime"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1920x1080"])
    parser.add_argument("--skip-startup", action="store_true", help="no start-up figures")
    parser.add_argument("--skip-cpu", action="store_true", help="no CPU-per-second figures")
    parser.add_argument("--startup-runs", type=int, default=3, help="start-ups after the first, per path")
    parser.add_argument("--config", help="TOML config for every run (default: the built-in default config)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--output-windows", type=int, default=300, help="windows per live output (0: skip them)")
    args = parser.parse_args()
    CHILD.extend(["--config", args.config] if args.config else [])
    default = f"default (auto: {resolve_precision('auto', torch.device('cpu'))})"
    modes = {default: [], "float32": ["--precision", "float32"]}
    print(f"sec2sec-live, {args.config or 'default config'}; {cpu_name()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_startup:
            clip = write_soak_clip(tmp / "startup.mp4", 640, 360, 4, 30)
            report_startup(clip, tmp, modes, args.startup_runs, args.markdown)
        if not args.skip_cpu:
            report_cpu(args.sizes, args.seconds, tmp, modes, args.markdown)
        if args.output_windows:
            report_outputs(args.output_windows, pace_ms=10.0)
        report_latency(args, tmp, default, modes[default])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the largest sec2sec-live run {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
