"""Live outputs (monitor/outlets.py): a ZeroMQ subscriber and an LSL inlet get every window of a replay, with the
CSV's values; a consumer that never reads changes nothing; a stuck transport never blocks the pipeline.

Network rules: ZeroMQ only on tcp://127.0.0.1. Everything that creates an LSL outlet or inlet runs in a network
namespace of its own with only loopback (`unshare -n`, then `ip link set lo up`) and a liblsl config that keeps
discovery on this machine; where unshare is refused the LSL tests are skipped, never run on the host's network.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from helpers.configs import small_toml
from helpers.pulse_fixture import PulseServer, pulse_server  # noqa: F401 - pulse_server is a fixture

from monitor.outlets import machine_only_lsl_config
from sec2sec import __version__

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"


FLAGS = ["video_ok", "audio_ok", "gap", "window"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "monitor.cli", *map(str, args)]


def in_loopback_namespace(cmd: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in a new network namespace holding only loopback, liblsl confined to this machine; skip
    the test (never fall back to the host's network) where that namespace cannot be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("the LSL tests need unshare and ip (util-linux, iproute2) to run in a loopback-only namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n refused ({probe.stderr.strip()}): the LSL tests run only without a network")
    config = tmp_path / "lsl_api.cfg"
    config.write_text(machine_only_lsl_config(f"sec2sec-test-{uuid.uuid4().hex}"))
    env = {**os.environ, "LSLAPICFG": str(config)}
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", *cmd], env=env, capture_output=True, text=True, timeout=timeout
    )


def consumer(tmp_path: Path, mode: str, name: str, *cli: str | Path) -> dict[str, Any]:
    out = tmp_path / f"{mode}.json"
    cmd = [
        sys.executable,
        str(ROOT / "tests" / "helpers" / "lsl_consumer.py"),
        str(out),
        mode,
        name,
        "--",
        *map(str, cli),
    ]
    done = in_loopback_namespace(cmd, tmp_path)
    assert done.returncode == 0 and out.exists(), done.stderr
    return json.loads(out.read_text())


def test_lsl_inlet_gets_every_window_with_the_csv_values(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "lsl.csv"
    cli = ("--replay", DEMO, "--config", small, "--clock", "realtime", "--duration", "4", "--no-ui", "--csv", csv)
    seen = consumer(tmp_path, "run", "sec2sec-test", *cli, "--lsl", "sec2sec-test")
    assert seen["returncode"] == 0, seen["stderr"]
    info = seen["info"]
    assert info["name"] == "sec2sec-test" and info["type"] == "Affect" and info["rate"] == 1.0
    assert info["labels"] == ["valence", "arousal", *FLAGS]
    assert info["units"] == ["0-1", "0-1", "flag", "flag", "windows", "index"]
    assert info["desc"]["untrained"] == "true" and info["desc"]["software"] == f"sec2sec-live {__version__}"
    assert info["desc"]["model"] == "attention_lstm over both" and info["desc"]["window_s"] == "1"
    assert info["source_id"].startswith("sec2sec-") and len(info["source_id"]) == 24
    rows, samples = pd.read_csv(csv), seen["samples"]
    assert len(samples) == len(rows) == 4
    for sample, (_, row) in zip(samples, rows.iterrows(), strict=True):
        valence, arousal, video_ok, audio_ok, gap, window = sample["values"]
        assert (window, video_ok, audio_ok, gap) == (row["window"], row["video_ok"], row["audio_ok"], 0)
        assert valence == pytest.approx(row["valence"], abs=1e-6) and arousal == pytest.approx(row["arousal"], abs=1e-6)
        # back-dated to the window's end: the estimate came a latency after it (plus closing and delivery)
        delay = sample["received"] - sample["ts"]
        assert row["latency_ms"] / 1000 - 0.005 <= delay <= row["latency_ms"] / 1000 + 1.0, (delay, row)
    stamps = [sample["ts"] for sample in samples]
    assert [b - a for a, b in itertools.pairwise(stamps)] == pytest.approx([1.0] * 3, abs=1e-3)
    outputs = json.loads(Path(f"{csv}.json").read_text())["summary"]["outputs"]
    assert outputs == {"lsl": {"sent": 4, "send_queue_dropped": 0, "error": None, "gap_samples_not_sent": 0}}


@pytest.mark.slow
@pytest.mark.audio_device
def test_lsl_live_microphone_samples_are_stamped_on_the_capture_clock(
    pulse_server: PulseServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A live run (a real PortAudio device fed by PulseAudio, whose unix socket works inside the namespace):
    a regular 1 Hz stream whose samples sit exactly one second apart, at the windows' ends on the capture clock,
    each arriving one latency later."""
    config, csv = tmp_path / "audio.toml", tmp_path / "mic.csv"
    config.write_text(small_toml("audio"))
    cli = ("--mic", "pulse", "--config", config, "--duration", "4", "--no-ui", "--csv", csv)
    seen = consumer(tmp_path, "run", "sec2sec-mic", *cli, "--lsl", "sec2sec-mic")
    assert seen["returncode"] == 0, seen["stderr"]
    assert seen["info"]["rate"] == 1.0 and seen["info"]["labels"] == ["valence", "arousal", *FLAGS]
    rows, samples = pd.read_csv(csv), seen["samples"]
    assert [s["values"][-1] for s in samples] == list(rows["window"]) == [0, 1, 2, 3]
    assert all(s["values"][3] == 1 and s["values"][2] == 0 for s in samples)  # audio_ok, no video
    stamps = [sample["ts"] for sample in samples]
    # exact on the capture clock; mapping it onto LSL's clock reads two clocks a few microseconds apart
    assert [b - a for a, b in itertools.pairwise(stamps)] == pytest.approx([1.0] * 3, abs=1e-4)
    for sample, latency_ms in zip(samples, rows["latency_ms"], strict=True):
        assert latency_ms / 1000 - 0.005 <= sample["received"] - sample["ts"] <= latency_ms / 1000 + 1.0


def test_lsl_regular_stream_marks_missing_windows_with_nan(tmp_path: Path) -> None:
    out = tmp_path / "gap.json"
    cmd = [sys.executable, str(ROOT / "tests" / "helpers" / "lsl_consumer.py"), str(out), "gap", "sec2sec-gap"]
    done = in_loopback_namespace(cmd, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert [s["values"][-1] for s in samples] == [0, 1, 2, 3, 4]
    assert [s["values"][0] for s in samples][:2] == pytest.approx([0.0, 0.1], abs=1e-9)
    assert all(math.isnan(v) for s in samples[2:4] for v in s["values"][:-1]) and samples[4]["values"][0] == 0.4
    ends = [result["origin_lsl"] + i + 1 for i in range(5)]
    assert [s["ts"] for s in samples] == pytest.approx(ends, abs=1e-3)


def test_lsl_nan_samples_for_a_long_gap_stop_at_what_liblsl_buffers() -> None:
    """A jump of 10^6 missed windows pushes only the newest LSL_BUFFER_S * rate NaN samples (an inlet's buffer);
    the rest are counted in the report as not sent. A fake liblsl: no stream is created."""
    from monitor import outlets
    from sec2sec.stream import Estimate

    pushed: list[tuple[list[float], float]] = []
    lsl = outlets.LslOutlet.__new__(outlets.LslOutlet)  # __init__ would load pylsl and start liblsl
    outlets.QueuedOutlet.__init__(lsl)
    lsl._lsl = SimpleNamespace(local_clock=lambda: 5000.0)
    lsl._outlet = SimpleNamespace(push_sample=lambda sample, stamp: pushed.append((sample, stamp)))
    lsl.names, lsl.rate, lsl.gap_samples_not_sent = ("valence",), 2.0, 0
    index, gap = 1_000_000, 999_999
    lsl.send(Estimate(index, {"valence": 0.5}, (), True, True, 8, 1.0, 1000, gap=gap), time.monotonic_ns())
    limit = int(outlets.LSL_BUFFER_S * 2.0)
    assert len(pushed) == limit + 1 and pushed[-1][0] == [0.5, 1.0, 1.0, gap, index]
    assert [sample[-1] for sample, _ in pushed[:-1]] == list(range(index - limit, index))  # the newest missed
    assert all(math.isnan(v) for sample, _ in pushed[:-1] for v in sample[:-1])
    assert lsl.report()["gap_samples_not_sent"] == gap - limit
    pushed.clear()
    lsl.send(Estimate(index + 3, {"valence": 0.5}, (), True, True, 8, 1.0, 1000, gap=2), time.monotonic_ns())
    assert len(pushed) == 3 and lsl.report()["gap_samples_not_sent"] == gap - limit  # a short gap: all of it


@pytest.mark.slow
def test_an_lsl_inlet_that_never_reads_changes_nothing(small: Path, tmp_path: Path) -> None:
    # realtime: the stream lives ~4 s, long enough to be resolved (offline, 4 windows end in a blink)
    base = ("--replay", DEMO, "--config", small, "--clock", "realtime", "--duration", "4", "--no-ui")
    alone, idle = tmp_path / "alone.csv", tmp_path / "idle.csv"
    done = subprocess.run(live_cmd(*base, "--csv", alone), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = consumer(tmp_path, "idle", "sec2sec-idle", *base, "--csv", idle, "--lsl", "sec2sec-idle")
    assert seen["returncode"] == 0 and seen["resolved"] == 1, seen["stderr"]
    columns = ["window", "valence", "arousal", "attribution", "video_ok", "audio_ok", "frames", "dropped_total"]
    pd.testing.assert_frame_equal(pd.read_csv(alone)[columns], pd.read_csv(idle)[columns])
    summary = json.loads(Path(f"{idle}.json").read_text())["summary"]
    assert summary["outputs"]["lsl"]["send_queue_dropped"] == 0 and summary["dropped_total"] == 0


def subscribe(endpoint: str, *, read: bool) -> tuple[threading.Thread, list[tuple[bytes, dict[str, Any]]]]:
    """A SUB socket on `endpoint` in a thread: it collects messages until the summary (or never reads)."""
    import zmq

    got: list[tuple[bytes, dict[str, Any]]] = []
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"sec2sec.")
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.connect(endpoint)

    def run() -> None:
        deadline = time.monotonic() + 300
        try:
            while read and time.monotonic() < deadline:
                if sub.poll(100):
                    topic, body = sub.recv_multipart()
                    got.append((topic, json.loads(body)))
                    if topic == b"sec2sec.summary":
                        return
            while not read and time.monotonic() < deadline and not got:
                time.sleep(0.1)  # connected, never reads; the test appends a marker when it is done
        finally:
            sub.close(linger=0)
            context.term()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_zmq_subscriber_gets_every_window_as_the_jsonl_line(small: Path, tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    thread, got = subscribe(endpoint, read=True)
    csv, jsonl = tmp_path / "zmq.csv", tmp_path / "zmq.jsonl"
    cli = ("--replay", DEMO, "--config", small, "--clock", "offline", "--duration", "4", "--no-ui")
    done = subprocess.run(
        live_cmd(*cli, "--csv", csv, "--jsonl", jsonl, "--zmq", endpoint), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    thread.join(30)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [topic for topic, _ in got] == [b"sec2sec.window"] * 4 + [b"sec2sec.summary"]
    assert [body for _, body in got[:4]] == lines
    assert [body["valence"] for _, body in got[:4]] == pytest.approx(list(pd.read_csv(csv)["valence"]))
    summary = got[4][1]
    assert (summary["windows"], summary["ended_by"], summary["sent"], summary["send_queue_dropped"]) == (
        4,
        "duration",
        4,
        0,
    )
    sidecar = json.loads(Path(f"{csv}.json").read_text())["summary"]
    assert sidecar["outputs"] == {"zmq": {"sent": 4, "send_queue_dropped": 0, "error": None, "high_water_dropped": 0}}


def test_zmq_high_water_drops_are_counted_apart_from_the_send_queue() -> None:
    """A window ZeroMQ refuses (zmq.Again at its high-water mark) is not sent and is counted by the sender
    thread in high_water_dropped, not in the send queue's count."""
    import zmq

    from monitor import outlets
    from sec2sec.stream import Estimate

    publisher = outlets.ZmqPublisher(f"tcp://127.0.0.1:{free_port()}")
    real = publisher._socket

    class Full:
        def send_multipart(self, parts: list[bytes], flags: int = 0) -> None:
            raise zmq.Again()

        def close(self, linger: int | None = None) -> None:
            real.close(linger=linger)

    publisher._socket = Full()
    publisher.start(("valence",), {})
    for window in range(3):
        publisher.write(Estimate(window, {"valence": 0.5}, (), True, True, 8, 1.0, 1000))
    publisher.close()
    assert publisher.report() == {"sent": 0, "send_queue_dropped": 0, "error": None, "high_water_dropped": 3}


@pytest.mark.slow
def test_a_zmq_subscriber_that_never_reads_changes_nothing(small: Path, tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    thread, marker = subscribe(endpoint, read=False)
    # realtime: the stream lives ~4 s, long enough to be resolved (offline, 4 windows end in a blink)
    base = ("--replay", DEMO, "--config", small, "--clock", "realtime", "--duration", "4", "--no-ui")
    alone, idle = tmp_path / "alone.csv", tmp_path / "idle.csv"
    for csv, extra in ((alone, ()), (idle, ("--zmq", endpoint))):
        done = subprocess.run(live_cmd(*base, "--csv", csv, *extra), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    marker.append((b"", {}))
    thread.join(5)
    columns = ["window", "valence", "arousal", "attribution", "video_ok", "audio_ok", "frames", "dropped_total"]
    pd.testing.assert_frame_equal(pd.read_csv(alone)[columns], pd.read_csv(idle)[columns])


def test_a_stuck_transport_never_blocks_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender hangs in the transport: write() still returns at once, the overflow is counted, and close()
    gives up after SEND_JOIN_S instead of waiting."""
    from monitor import outlets
    from sec2sec.stream import Estimate

    entered, release = threading.Event(), threading.Event()

    def stuck(self: Any, estimate: Any, when_ns: int) -> None:
        entered.set()
        release.wait()

    monkeypatch.setattr(outlets.ZmqPublisher, "send", stuck)
    publisher = outlets.ZmqPublisher(f"tcp://127.0.0.1:{free_port()}")
    publisher.start(("valence",), {})
    window = 0
    publisher.write(Estimate(window, {"valence": 0.5}, (), True, True, 8, 1.0, 1000))
    assert entered.wait(5)
    started = time.monotonic()
    for window in range(1, 200):
        publisher.write(Estimate(window, {"valence": 0.5}, (), True, True, 8, 1.0, 1000))
    assert time.monotonic() - started < 2  # 199 queue puts; generous for a busy machine
    assert publisher.dropped == 199 - outlets.SEND_QUEUE and publisher.windows == 200
    started = time.monotonic()
    publisher.close()
    assert time.monotonic() - started < outlets.SEND_JOIN_S + 2  # gave up on the stuck sender, did not wait
    release.set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--zmq", "tcp://127.0.0.1:{port}"), "cannot bind (Address already in use)"),
        (("--zmq", "bogus://x"), "--zmq bogus://x: cannot bind (Protocol not supported)"),
        (("--lsl", " "), "--lsl needs a non-empty stream name"),
    ],
)
def test_outputs_that_cannot_open_fail_before_the_model_loads(small: Path, args: tuple[str, ...], message: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = live_cmd("--replay", DEMO, "--config", small, "--no-ui", *(a.format(port=port) for a in args))
        started = time.monotonic()
        done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and time.monotonic() - started < 20


@pytest.mark.parametrize(
    ("module", "raises", "args", "message"),
    [
        ("pylsl", "ImportError('No module named pylsl')", ("--lsl",), "--lsl needs pylsl: pip install"),
        (
            "pylsl",
            "RuntimeError('LSL binary library file was not found.')",
            ("--lsl",),
            "--lsl: pylsl cannot load liblsl (LSL binary library file was not found.)",
        ),
        ("zmq", "ImportError('No module named zmq')", ("--zmq", "tcp://127.0.0.1:1"), "--zmq needs pyzmq: pip install"),
    ],
)
def test_a_missing_library_is_one_line_before_the_model_loads(
    small: Path, tmp_path: Path, module: str, raises: str, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / f"{module}.py").write_text(f"raise {raises}\n")  # shadows the installed package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    cli = live_cmd("--replay", DEMO, "--config", small, "--no-ui", *args)
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr


@pytest.mark.slow
def test_the_documented_subscriber_prints_every_window(small: Path, tmp_path: Path) -> None:
    """docs/live-outputs.md's ten-line subscriber, as written but for the port, against a replay."""
    page = (ROOT / "docs" / "live-outputs.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    port = free_port()
    subscriber = subprocess.Popen(
        [sys.executable, "-c", code.replace("5556", str(port))], stdout=subprocess.PIPE, text=True
    )
    time.sleep(1.0)  # connected before the first window (PUB/SUB keeps no history)
    cli = ("--replay", DEMO, "--config", small, "--clock", "offline", "--duration", "3", "--no-ui")
    done = subprocess.run(live_cmd(*cli, "--zmq", f"tcp://127.0.0.1:{port}"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    printed = subscriber.communicate(timeout=60)[0].splitlines()
    assert subscriber.returncode == 0 and [line.split()[0] for line in printed] == ["0", "1", "2"], printed
    assert all(line.endswith("True True") and 0 <= float(line.split()[1]) <= 1 for line in printed)
