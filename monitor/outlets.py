"""Estimates for other programs while the run goes on: a Lab Streaming Layer outlet (`--lsl [NAME]`) and a
ZeroMQ publisher (`--zmq ENDPOINT`).

Both are sinks under the recorders' rules, and the network never holds up the pipeline: `write()` only puts
the estimate on a bounded send queue (when it is full, the oldest waiting estimate is dropped and counted) and
a thread of the outlet's own sends it. A consumer that is missing, slow or never reads costs the pipeline one
queue put per window. The transports buffer for each consumer on their own (ZeroMQ's high-water mark, liblsl's
per-inlet buffer) and drop for a consumer that falls that far behind, which it sees as gaps in `window`. What
they send is the estimate's record (`monitor/fields.py`): the ZeroMQ message is the JSON line, the LSL channels
are its numeric fields under the same names.
Opening (binding the socket, starting liblsl) happens before the model loads, so a port in use or a missing
library is a one-line error at once; the channels, which need the model's outputs, are declared by `start()`.
pylsl and pyzmq are optional (`pip install 'sec2sec-live[lsl]'`, `[zmq]`) and imported only when asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from monitor.fields import Value, check_output_names, lsl_channels, record_of
from monitor.queues import BoundedQueue, Closed, first_line
from monitor.run_end import NORMAL_END, RunEnd
from monitor.snapshot import percentile
from sec2sec.config import NANOS_PER_SECOND

if TYPE_CHECKING:
    from sec2sec.stream import Estimate

SEND_QUEUE = 64  # estimates waiting for the sender thread: a minute of windows
SEND_JOIN_S = 0.5  # close() waits this long for the sender to empty its queue (within the pipeline's 1 s)
ZMQ_HIGH_WATER = 1000  # messages ZeroMQ keeps per subscriber that does not read
ZMQ_LINGER_MS = 200  # how long closing the socket may spend delivering what is queued
LSL_BUFFER_S = 360  # seconds of samples liblsl keeps per inlet (its default)
LSL_LINGER_S = 0.2  # closing waits this long for liblsl to deliver the last samples to connected inlets
WINDOW_TOPIC, SUMMARY_TOPIC = b"sec2sec.window", b"sec2sec.summary"
MACHINE_ONLY_LSL = """\
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
MachineAddresses = {{127.0.0.1}}
AddressesOverride = {{127.0.0.1}}
ListenAddress = 127.0.0.1
[lab]
KnownPeers = {{127.0.0.1}}
SessionID = {session}
[log]
level = -3
"""


def machine_only_lsl_config(session: str) -> str:
    """An lsl_api.cfg (for LSLAPICFG) that confines liblsl to this machine: resolve scope `machine`, only
    127.0.0.1 as address and peer, no IPv6, its own session id, quiet logs. The tests and the benchmark run
    LSL with it (inside a loopback-only network namespace); a user can use it to keep a stream off the
    network."""
    return MACHINE_ONLY_LSL.format(session=session)


CaptureClock = Callable[["Estimate"], "int | None"]  # monotonic ns of the window's end on the capture clock


class QueuedOutlet:
    """A bounded send queue and one sender thread; subclasses define `send` (one estimate, on the sender
    thread, with the monotonic time its sample stands for; True when the transport took it) and `finish`
    (after the last send)."""

    kind = "output"

    def __init__(self) -> None:
        self.name = self.kind
        self.names: tuple[str, ...] = ()
        self.windows = 0
        self.sent = 0
        self._queue: BoundedQueue[tuple[Estimate, int]] = BoundedQueue(SEND_QUEUE)
        self._thread: threading.Thread | None = None
        self._error = ""
        self._latencies_ms: list[float] = []
        self._dropped_total = 0
        self.capture_end_ns: CaptureClock = lambda estimate: None

    @property
    def dropped(self) -> int:
        """Estimates this outlet could not send (its send queue was full)."""
        return self._queue.dropped

    def start(self, names: Sequence[str], meta: dict[str, Any]) -> None:
        """Declare the model's outputs (and, where the transport has one, its description); start sending."""
        self.names = check_output_names(names)
        self._declare(meta)
        self._thread = threading.Thread(target=self._send_all, name=f"{self.kind} sender", daemon=True)
        self._thread.start()

    def _declare(self, meta: dict[str, Any]) -> None:
        """Subclasses: set up what needs the output names (the LSL stream's channels)."""

    def write(self, estimate: Estimate) -> None:
        """Queue the estimate (never blocks); a send that failed earlier is raised here, naming the output."""
        if self._error:
            raise OSError(self._error)
        when_ns = self.capture_end_ns(estimate)
        self._queue.put_latest((estimate, time.monotonic_ns() if when_ns is None else when_ns))
        self.windows += 1
        if estimate.latency_ns is not None:
            self._latencies_ms.append(estimate.latency_ns / 1e6)
        self._dropped_total = max(self._dropped_total, estimate.dropped_total)

    def _send_all(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except Closed:
                return
            if item is None:
                continue
            try:
                if self.send(*item):
                    self.sent += 1
            except Exception as exc:  # noqa: BLE001 - reported by the next write(), which ends the run
                self._error = first_line(exc)
                self._queue.close()
                return

    def send(self, estimate: Estimate, when_ns: int) -> bool:
        raise NotImplementedError

    def finish(self, end: RunEnd) -> None:
        raise NotImplementedError

    def summary(self, end: RunEnd) -> dict[str, Any]:
        """Windows, latency percentiles (ms), dropped windows and how the run ended, as the CSV sidecar's."""
        p50, p99 = percentile(self._latencies_ms, 50), percentile(self._latencies_ms, 99)
        return {
            "windows": self.windows,
            "dropped_total": self._dropped_total,
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
            **end.report(),
            **self.report(),
        }

    def report(self) -> dict[str, Any]:
        """What the sidecar records of this output."""
        return {"sent": self.sent, "send_queue_dropped": self.dropped, "error": self._error or None}

    def close(self, end: RunEnd = NORMAL_END) -> None:
        """Send what is queued (bounded by SEND_JOIN_S), then `finish`. Idempotent."""
        self._queue.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(SEND_JOIN_S)
            if thread.is_alive():
                return  # a send stuck in the transport: leave the resources to the process's exit
        self.finish(end)


class ZmqPublisher(QueuedOutlet):
    """A ZeroMQ PUB socket bound to `endpoint`: per window a two-part message, topic `sec2sec.window` and the
    JSON object the JSONL recorder writes; at the end `sec2sec.summary` and the run's summary."""

    kind = "zmq"

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        try:
            import zmq
        except ImportError:
            raise ValueError("--zmq needs pyzmq: pip install 'sec2sec-live[zmq]' (or pip install pyzmq)") from None
        self.endpoint, self.name = endpoint, f"zmq publisher {endpoint}"
        self._zmq = zmq
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, ZMQ_HIGH_WATER)
        self._socket.setsockopt(zmq.LINGER, ZMQ_LINGER_MS)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._release()
            reason = zmq.strerror(exc.errno) if exc.errno is not None else exc.strerror
            raise ValueError(
                f"--zmq {endpoint}: cannot bind ({reason}); give a free endpoint such as tcp://127.0.0.1:5556"
            ) from None
        self._finished = False
        self.high_water_dropped = 0  # windows ZeroMQ refused at its high-water mark (written by the sender thread)

    def send(self, estimate: Estimate, when_ns: int) -> bool:
        body = json.dumps(record_of(estimate, self.names), allow_nan=False).encode()
        try:
            self._socket.send_multipart([WINDOW_TOPIC, body], flags=self._zmq.NOBLOCK)
        except self._zmq.Again:  # PUB drops past the high-water mark itself; this is the same, counted
            self.high_water_dropped += 1
            return False
        return True

    def report(self) -> dict[str, Any]:
        """The common report, plus the windows dropped at ZeroMQ's high-water mark."""
        return {**super().report(), "high_water_dropped": self.high_water_dropped}

    def finish(self, end: RunEnd) -> None:
        if self._finished:
            return
        self._finished = True
        body = json.dumps(self.summary(end), allow_nan=False).encode()
        with contextlib.suppress(self._zmq.ZMQError):
            self._socket.send_multipart([SUMMARY_TOPIC, body], flags=self._zmq.NOBLOCK)
        self._release()

    def _release(self) -> None:
        self._socket.close(linger=ZMQ_LINGER_MS)
        self._context.term()


def lsl_source_id(host: str, source: str, model_id: str) -> str:
    """A stable id from the machine, the input and the model, so LabRecorder reconnects after a restart."""
    digest = hashlib.sha256(f"{host}\n{source}\n{model_id}".encode()).hexdigest()[:16]
    return f"sec2sec-{digest}"


class LslOutlet(QueuedOutlet):
    """A Lab Streaming Layer outlet named `name`, type "Affect", double channels named as the record's fields
    (`monitor/fields.py::lsl_channels`): the model's outputs, then video_ok, audio_ok, gap (windows missing
    before this one) and window (the window's index), each with the field's unit. One sample per window,
    time-stamped in LSL's clock at the window's end on the capture clock (the camera's and microphone's), or,
    where the capture clock is not real time (offline and virtual replay), when the estimate was made.
    `rate` 1.0 (live, or times --speed for a realtime replay) gives a regular stream in which a window that
    produced no estimate is a NaN sample; 0 an irregular one."""

    kind = "lsl"

    def __init__(self, name: str, source_id: str, rate: float) -> None:
        super().__init__()
        if not name.strip():
            raise ValueError("--lsl needs a non-empty stream name (or no value: the name is 'sec2sec')")
        self.stream_name, self.name, self.source_id, self.rate = name, f"lsl outlet {name!r}", source_id, rate
        self._lsl = import_pylsl()
        self._outlet: Any = None
        self.gap_samples_not_sent = 0  # NaN samples of missed windows beyond liblsl's buffer, not pushed
        try:  # liblsl starts its servers (ports, discovery) here: a failure is bad input, before the model
            check = self._lsl.StreamInfo(f"{name} (start-up check)", "Check", 1, 0.0, source_id=f"{source_id}-check")
            probe = self._lsl.StreamOutlet(check)
        except Exception as exc:  # noqa: BLE001 - pylsl raises RuntimeError or ValueError subclasses
            problem = f"liblsl cannot create an outlet ({exc})"
            raise ValueError(f"--lsl {name}: {problem}; check LSLAPICFG or lsl_api.cfg") from None
        del probe

    def _declare(self, meta: dict[str, Any]) -> None:
        lsl = self._lsl
        channels = lsl_channels(self.names)
        info = lsl.StreamInfo(self.stream_name, "Affect", len(channels), self.rate, lsl.cf_double64, self.source_id)
        desc = info.desc()
        xml = desc.append_child("channels")
        for label, field in channels:
            channel = xml.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", field.unit)
            channel.append_child_value("type", "Affect" if field.per_output else "Flag")
        for key, value in meta.items():
            desc.append_child_value(key, "" if value is None else str(value))
        try:
            self._outlet = lsl.StreamOutlet(info, chunk_size=1, max_buffered=LSL_BUFFER_S)
        except Exception as exc:  # noqa: BLE001 - as in __init__
            raise ValueError(f"--lsl {self.stream_name}: liblsl cannot create the outlet ({exc})") from None

    def send(self, estimate: Estimate, when_ns: int) -> bool:
        lsl = self._lsl
        stamp = lsl.local_clock() - (time.monotonic_ns() - when_ns) / NANOS_PER_SECOND
        labels = [label for label, _ in lsl_channels(self.names)]
        if self.rate > 0:  # a regular stream keeps one sample per window: NaN for the windows that were missed
            period = 1.0 / self.rate
            for k in range(self._gap_samples(estimate.gap), 0, -1):
                missed = [float(estimate.window - k) if label == "window" else math.nan for label in labels]
                self._outlet.push_sample(missed, stamp - k * period)
        record = record_of(estimate, self.names)
        self._outlet.push_sample([_number(record[label]) for label in labels], stamp)
        return True

    def _gap_samples(self, gap: int) -> int:
        """How many NaN samples stand for `gap` missed windows: at most what liblsl buffers for an inlet
        (LSL_BUFFER_S at the stream's rate; older ones would be dropped anyway). The rest are counted as not
        sent (on the sender thread, which alone writes the counter)."""
        pushed = min(gap, max(1, int(LSL_BUFFER_S * self.rate)))
        self.gap_samples_not_sent += gap - pushed
        return pushed

    def report(self) -> dict[str, Any]:
        """The common report, plus the NaN samples of missed windows beyond liblsl's buffer (not pushed)."""
        return {**super().report(), "gap_samples_not_sent": self.gap_samples_not_sent}

    def finish(self, end: RunEnd) -> None:
        outlet, self._outlet = self._outlet, None
        if outlet is not None and outlet.have_consumers():
            time.sleep(LSL_LINGER_S)  # liblsl sends asynchronously: let the last samples leave before the end
        del outlet  # pylsl destroys the outlet with the object: consumers see the stream end


def _number(value: Value) -> float:
    """A record's value as an LSL channel's double: a flag 1.0 or 0.0, None (not finite, not measured) NaN."""
    if value is None:
        return math.nan
    if isinstance(value, list):
        raise TypeError("a list (the attribution) is not an LSL channel")
    return float(value)


def import_pylsl() -> Any:
    """pylsl with liblsl loaded, or a ValueError that says how to install them."""
    try:
        import pylsl
    except ImportError:
        raise ValueError("--lsl needs pylsl: pip install 'sec2sec-live[lsl]' (or pip install pylsl)") from None
    except RuntimeError as exc:  # pylsl found no liblsl
        problem = first_line(exc, with_type=False)
        raise ValueError(f"--lsl: pylsl cannot load liblsl ({problem}); pip install pylsl brings one") from None
    return pylsl


def host_name() -> str:
    return socket.gethostname()
