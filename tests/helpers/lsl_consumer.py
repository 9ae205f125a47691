"""The LSL side of tests/test_outlets.py, run INSIDE a network namespace that has only loopback (the test starts
it with `unshare -n`, LSLAPICFG pointing at a machine-only config). Writes what it saw as JSON.

    python tests/lsl_consumer.py OUT.json run NAME -- <sec2sec-live arguments>   # the CLI + a reading inlet
    python tests/lsl_consumer.py OUT.json idle NAME -- <sec2sec-live arguments>  # an inlet that never reads
    python tests/lsl_consumer.py OUT.json gap NAME                               # LslOutlet with missing windows
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pylsl

RESOLVE_S = 180.0  # the CLI loads and warms up its model before the stream exists


def stream_info(inlet: pylsl.StreamInlet) -> dict[str, Any]:
    """Name, rate, source id, channel labels/units and the description's plain values."""
    info = inlet.info(timeout=10)
    desc = info.desc()
    labels, units = [], []
    channel = desc.child("channels").child("channel")
    while not channel.empty():
        labels.append(channel.child_value("label"))
        units.append(channel.child_value("unit"))
        channel = channel.next_sibling()
    keys = ("software", "model", "checkpoint", "checkpoint_sha256", "untrained", "window_s", "horizon_s")
    return {
        "name": info.name(),
        "type": info.type(),
        "rate": info.nominal_srate(),
        "source_id": info.source_id(),
        "labels": labels,
        "units": units,
        "desc": {key: desc.child_value(key) for key in keys},
    }


def pull_until_quiet(inlet: pylsl.StreamInlet, done: Any, quiet_s: float = 3.0) -> list[dict[str, Any]]:
    """Every sample, with its timestamp and this process's LSL time at receipt, until the outlet is gone, or
    `done()` and no sample came for `quiet_s`."""
    samples: list[dict[str, Any]] = []
    last = time.monotonic()
    while True:
        try:
            sample, stamp = inlet.pull_sample(timeout=0.05)
        except pylsl.util.LostError:  # the outlet was destroyed (the run ended) and every sample was read
            return samples
        now = pylsl.local_clock()
        if sample is not None:
            samples.append({"values": sample, "ts": stamp, "received": now})
            last = time.monotonic()
        elif done() and time.monotonic() - last > quiet_s:
            return samples


def with_cli(out: Path, mode: str, name: str, cli: list[str]) -> None:
    child = subprocess.Popen([sys.executable, "-m", "monitor.cli", *cli], stderr=subprocess.PIPE, text=True)
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=RESOLVE_S)
    result: dict[str, Any] = {"resolved": len(found)}
    if found:
        inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=False)
        inlet.open_stream(timeout=10)
        result["info"] = stream_info(inlet)
        if mode == "run":
            result["samples"] = pull_until_quiet(inlet, lambda: child.poll() is not None)
        else:  # idle: connected, never pulls, until the CLI ends
            child.wait(timeout=600)
    result["stderr"] = child.communicate(timeout=600)[1]
    result["returncode"] = child.returncode
    out.write_text(json.dumps(result))


def with_gaps(out: Path, name: str) -> None:
    """An LslOutlet at rate 1 gets windows 0, 1 and 4 (window 4 says 2 were missing): the inlet must see five
    samples, NaN for windows 2 and 3, one second apart."""
    from monitor.outlets import LslOutlet
    from sec2sec.stream import Estimate

    outlet = LslOutlet(name, "sec2sec-gap-test", 1.0)
    outlet.capture_end_ns = lambda estimate: origin + (estimate.window + 1) * 1_000_000_000
    origin = time.monotonic_ns()
    outlet.start(("valence",), {"software": "test"})
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, timeout=30)[0])
    inlet.open_stream(timeout=10)
    for index, gap in ((0, 0), (1, 0), (4, 2)):
        outlet.write(Estimate(index, {"valence": index / 10}, (), True, True, 8, 1.0, 1000, gap=gap))
    outlet.close()
    samples = pull_until_quiet(inlet, lambda: True, quiet_s=1.0)
    out.write_text(json.dumps({"samples": samples, "origin_lsl": origin / 1e9}, allow_nan=True))


def main() -> None:
    out, mode, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "gap":
        with_gaps(out, name)
    else:
        with_cli(out, mode, name, sys.argv[5:])


if __name__ == "__main__":
    main()
