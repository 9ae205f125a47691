"""End-to-end latency of the monitor on a 60 s clip, as a user runs it.

    .venv/bin/python benchmarks/pipeline_latency.py [--seconds 60] [--clocks virtual realtime] [--threads 2]

For each clock it replays a generated clip through `sec2sec-live` (default config, no UI) and prints latency
p50/p99, the real-time factor (RTF = wall seconds of processing per second of media; below 1 keeps up, lower
is better), windows dropped, the median per-window compute and peak RSS. Goals on this 2-core machine: zero
drops with the realtime clock; p50 latency <= per-window compute + 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from monitor.cli import main as sec2sec_live
from monitor.demo_clip import write_demo_clip


def run_clock(clip: Path, clock: str, threads: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "out.jsonl"
        args = ["--replay", str(clip), "--clock", clock, "--no-ui", "--jsonl", str(jsonl), "--threads", str(threads)]
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = sec2sec_live([*args, *extra])
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    if code != 0:
        raise SystemExit(f"sec2sec-live exited with {code}")
    latencies = sorted(r["latency_ms"] for r in rows)
    return {
        "windows": len(rows),
        "dropped": rows[-1]["dropped_total"] if rows else 0,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "compute": statistics.median(r["compute_ns"] / 1e6 for r in rows),
        "rtf": wall / len(rows) if rows else float("nan"),  # each row is one second of media
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clocks", nargs="+", default=["virtual", "realtime"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="pass --compile to sec2sec-live")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_demo_clip(Path(tmp) / "clip.mp4", seconds=args.seconds)
        extra = ["--compile"] if args.compile else []
        print(
            f"{args.seconds} s clip, default config, {args.threads} torch threads{', compiled' if args.compile else ''}"
        )
        header = f"{'clock':9} {'windows':>7} {'dropped':>7} {'p50 ms':>7} {'p99 ms':>7} {'compute':>8} {'RTF':>6}"
        print(header + "  goal p50<=compute+50")
        for clock in args.clocks:
            r = run_clock(clip, clock, args.threads, extra)
            ok = "yes" if r["p50"] <= r["compute"] + 50 else "NO"
            print(
                f"{clock:9} {r['windows']:7d} {r['dropped']:7d} {r['p50']:7.0f} {r['p99']:7.0f} {r['compute']:8.0f} "
                f"{r['rtf']:6.2f}  {ok}"
            )
    print("RTF = real-time factor: wall seconds of processing per second of media (< 1 keeps up; lower is better)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
