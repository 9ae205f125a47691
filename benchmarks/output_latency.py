"""What each live output adds per window, beside the CSV recorder: the time the pipeline's worker spends in the
output's `write()` (the only cost the pipeline pays), and the time from `write()` to a consumer holding the
estimate (a ZeroMQ SUB socket, an LSL inlet; for the CSV, the row handed to the OS). The real sink classes, a
synthetic estimate every `--pace-ms`, consumers in this process on 127.0.0.1.

    .venv/bin/python benchmarks/output_latency.py [--windows 300] [--pace-ms 10]

The LSL part runs in a network namespace with only loopback (`unshare -n`, liblsl configured for this machine
alone), as the tests do; where unshare is refused it is skipped, never run on the host's network. Also called
by pipeline_latency.py (its last section).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.outlets import machine_only_lsl_config
from monitor.recorders import CsvRecorder
from monitor.snapshot import percentile
from sec2sec.stream import Estimate

NAMES = ("valence", "arousal")


def estimate(index: int) -> Estimate:
    return Estimate(index, {"valence": 0.25, "arousal": 0.75}, (0.5, 0.5), True, True, 8, 1.0, 1000, latency_ns=10**6)


def drive(write: Callable[[Estimate], None], windows: int, pace_ms: float) -> tuple[list[float], dict[int, int]]:
    """Call `write` once per window at the pace; the microseconds each call took and when each started (ns)."""
    costs_us: list[float] = []
    started: dict[int, int] = {}
    for index in range(windows):
        started[index] = time.monotonic_ns()
        write(estimate(index))
        costs_us.append((time.monotonic_ns() - started[index]) / 1e3)
        time.sleep(pace_ms / 1e3)
    return costs_us, started


def figures(costs_us: list[float], delivered_ms: list[float], windows: int) -> dict[str, Any]:
    return {
        "write_p50_us": percentile(costs_us, 50),
        "write_p99_us": percentile(costs_us, 99),
        "delivered_p50_ms": percentile(delivered_ms, 50),
        "delivered_p99_ms": percentile(delivered_ms, 99),
        "received": len(delivered_ms),
        "windows": windows,
    }


def measure_csv(windows: int, pace_ms: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        recorder = CsvRecorder(Path(tmp) / "bench.csv", NAMES, {})
        costs, _ = drive(recorder.write, windows, pace_ms)
        recorder.close()
    return figures(costs, [cost / 1e3 for cost in costs], windows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure_zmq(windows: int, pace_ms: float) -> dict[str, Any]:
    import zmq

    from monitor.outlets import ZmqPublisher

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = ZmqPublisher(endpoint)
    publisher.start(NAMES, {})
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"sec2sec.window")
    sub.connect(endpoint)
    time.sleep(0.5)  # the subscription reaches the publisher before the first message (ZeroMQ's slow joiner)
    arrived: dict[int, int] = {}

    def receive() -> None:
        while len(arrived) < windows and sub.poll(2000):
            body = sub.recv_multipart()[1]
            arrived[json.loads(body)["window"]] = time.monotonic_ns()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    costs, started = drive(publisher.write, windows, pace_ms)
    receiver.join(10)
    publisher.close()
    sub.close(linger=0)
    context.term()
    return figures(costs, [(arrived[i] - started[i]) / 1e6 for i in sorted(arrived)], windows)


def measure_lsl(windows: int, pace_ms: float) -> dict[str, Any]:
    """Only inside a loopback-only namespace (see lsl_in_namespace)."""
    import pylsl

    from monitor.outlets import LslOutlet

    outlet = LslOutlet("sec2sec-bench", "sec2sec-bench", 0.0)
    outlet.start(NAMES, {"software": "benchmark"})
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", "sec2sec-bench", timeout=30)[0])
    inlet.open_stream(timeout=10)
    time.sleep(0.5)
    arrived: dict[int, int] = {}

    def receive() -> None:
        while len(arrived) < windows:
            sample, _ = inlet.pull_sample(timeout=2.0)
            if sample is None:
                return
            arrived[int(sample[-1])] = time.monotonic_ns()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    costs, started = drive(outlet.write, windows, pace_ms)
    receiver.join(10)
    outlet.close()
    return figures(costs, [(arrived[i] - started[i]) / 1e6 for i in sorted(arrived)], windows)


def lsl_in_namespace(windows: int, pace_ms: float) -> dict[str, Any] | str:
    """measure_lsl in a child process in a new network namespace; the figures, or why it was skipped."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "skipped: needs unshare and ip to keep LSL off the network"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"skipped: unshare -n refused ({probe.stderr.strip()})"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "lsl_api.cfg"
        config.write_text(machine_only_lsl_config(f"sec2sec-bench-{uuid.uuid4().hex}"))
        env = {**os.environ, "LSLAPICFG": str(config)}
        cmd = [sys.executable, __file__, "--lsl-child", "--windows", str(windows), "--pace-ms", str(pace_ms)]
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    if done.returncode != 0:
        return f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_outputs(windows: int, pace_ms: float) -> None:
    """The table: per output, write() cost on the pipeline's worker and write -> consumer."""
    print(f"\nlive outputs: {windows} synthetic windows, one every {pace_ms:g} ms, consumers on 127.0.0.1")
    print(f"  {'output':8} {'write p50 us':>12} {'p99 us':>8} {'delivered p50 ms':>17} {'p99 ms':>7} {'received':>9}")
    rows: dict[str, dict[str, Any] | str] = {"csv": measure_csv(windows, pace_ms)}
    try:
        rows["zmq"] = measure_zmq(windows, pace_ms)
    except ImportError:
        rows["zmq"] = "skipped: pyzmq is not installed"
    rows["lsl"] = lsl_in_namespace(windows, pace_ms)
    for name, row in rows.items():
        if isinstance(row, str):
            print(f"  {name:8} {row}")
            continue
        print(
            f"  {name:8} {row['write_p50_us']:12.1f} {row['write_p99_us']:8.1f} {row['delivered_p50_ms']:17.3f} "
            f"{row['delivered_p99_ms']:7.3f} {row['received']:5d}/{row['windows']}"
        )
    print("  write = time on the pipeline's worker per window (goal: under 5 ms); delivered = write -> consumer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--pace-ms", type=float, default=10.0)
    parser.add_argument("--lsl-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lsl_child:
        print(json.dumps(measure_lsl(args.windows, args.pace_ms)))
        return
    print(f"cpu count {os.cpu_count()}")
    report_outputs(args.windows, args.pace_ms)


if __name__ == "__main__":
    main()
