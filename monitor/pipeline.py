"""The pipeline: sources (threads) -> input queue -> windower (this thread) -> window queue -> inference
worker (one thread) -> sinks, with a snapshot for the dashboard and one idempotent `stop()`.

Clocks: `live` (camera/microphone: grace timeouts close windows when a source is silent, the window queue
keeps the newest windows and counts drops), `realtime` replay (paced input, live drop policy, latency
on the wall clock), `virtual` replay (no sleeping; latency and drops simulated as if the windows had
arrived live at their end times) and `offline` replay (lossless, latency = compute time).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from monitor.dashboard import Snapshot
from monitor.queues import BoundedQueue, Closed
from monitor.recorders import percentile
from monitor.sources import SourceEnd, SourceStatus
from sec2sec.config import NANOS_PER_SECOND
from sec2sec.media import AudioChunk, VideoFrame
from sec2sec.stream import AffectStream, Estimate
from sec2sec.windows import Window, Windower

CLOCKS = ("live", "realtime", "virtual", "offline")
HISTORY_SECONDS = 60
JOIN_TIMEOUT_S = 2.0


class Source(Protocol):
    """What the pipeline needs of a capture edge (CameraSource, MicrophoneSource, FileReplay)."""

    name: str

    def start(self, origin_ns: int | None = None) -> None:
        """Start capturing; live sources stamp time from `origin_ns` (monotonic ns) when it is given."""

    def stop(self) -> None: ...

    @property
    def status(self) -> SourceStatus: ...


class Sink(Protocol):
    """Receives every estimate on the worker thread; closed once at the end."""

    def write(self, estimate: Estimate) -> None: ...

    def close(self, ended_by: str = "end") -> None: ...


@dataclass
class _Progress:
    """What the worker has produced so far (read by `snapshot()` under the pipeline's lock)."""

    latest: Estimate | None = None
    done: int = 0
    virtual_dropped: int = 0
    history: dict[str, collections.deque[float]] | None = None
    latencies: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=2000))


class Pipeline:
    """Wire sources, windower, stream and sinks together. `run()` blocks until the end of the input, the
    window limit, `stop()` (from a signal handler or another thread) or an error, and returns what ended it.
    """

    def __init__(
        self,
        stream: AffectStream,
        sources: Sequence[Source],
        inputs: BoundedQueue,
        windower: Windower,
        sinks: Sequence[Sink],
        *,
        clock: str,
        max_windows: int | None = None,
        window_queue: int = 2,
        title: str = "sec2sec-live",
        untrained: bool = False,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock {clock!r} is not allowed; use one of {', '.join(CLOCKS)}")
        self.stream, self.sources, self.inputs, self.windower = stream, list(sources), inputs, windower
        self.sinks, self.clock, self.max_windows = list(sinks), clock, max_windows
        self.origin_ns = 0  # live: the monotonic time at which run() starts the sources; replay: media time
        self.title, self.untrained = title, untrained
        self.windows: BoundedQueue[Window] = BoundedQueue(window_queue)
        self.names = tuple(stream.config.heads.outputs)
        self._progress = _Progress(history={n: collections.deque(maxlen=HISTORY_SECONDS) for n in self.names})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = False
        self._ended_by = ""
        self.message = ""
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._virtual_free_ns = 0
        self._frames = collections.deque(maxlen=256)  # monotonic arrival times of recent video frames
        self._started_ns = time.monotonic_ns()
        self.on_estimate: Callable[[Estimate], None] | None = None

    # ---- the windowing loop (caller's thread) -------------------------------------------------------

    def run(self) -> str:
        """Start everything, window the input until something ends the run, stop, and say what ended it."""
        self._started_ns = time.monotonic_ns()
        self._worker.start()
        try:
            if self.clock == "live":
                self.origin_ns = time.monotonic_ns()  # window 0 starts now, after the model's warm-up
            for source in self.sources:
                source.start(self.origin_ns if self.clock == "live" else None)
            self._loop()
        except KeyboardInterrupt:
            self._end("interrupted")
        except Exception as exc:  # noqa: BLE001 - any failure here ends the run with its message
            self._end(f"error: {type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            self.stop()
        return self._ended_by

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.inputs.get(timeout=0.05)
            except Closed:
                return
            now_ns = time.monotonic_ns() - self.origin_ns if self.clock == "live" else None
            if isinstance(item, VideoFrame):
                self.windower.push_frame(item)
                self._frames.append(time.monotonic_ns())
            elif isinstance(item, AudioChunk):
                self.windower.push_audio(item)
            elif isinstance(item, SourceEnd):
                if self._source_ended(item):
                    return
            if self._emit(self.windower.ready(now_ns)):
                return

    def _source_ended(self, end: SourceEnd) -> bool:
        """A file ends the run after its last windows; a live source's failure is reported."""
        if end.error:
            self.message = f"{end.name}: {end.error}"
        if end.name == "file" or end.name == "camera":
            if not self._emit(self.windower.finish()):
                self._drain()
            self._end("end" if not end.error else f"end ({end.name}: {end.error})")
            return True
        return False

    def _emit(self, windows: list[Window]) -> bool:
        """Hand closed windows to the worker; True when the window limit (--duration) was reached."""
        for window in windows:
            if self.max_windows is not None and window.index >= self.max_windows:
                self._drain()
                self._end("duration")
                return True
            window = replace(window, closed_ns=time.monotonic_ns())
            if self.clock in ("virtual", "offline"):
                self.windows.put_wait(window)
            else:
                self.windows.put_latest(window)
        return False

    def _drain(self) -> None:
        """Let the worker finish every queued window, then return."""
        self.windows.close()
        self._worker.join()

    def request_stop(self, reason: str) -> None:
        """Ask `run()` to end (safe from a signal handler: it only sets an event)."""
        self._end(reason)

    def _end(self, reason: str) -> None:
        if not self._ended_by:
            self._ended_by = reason
        self._stop.set()

    # ---- the inference worker (its own thread) ------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                try:
                    window = self.windows.get(timeout=0.1)
                except Closed:
                    return
                if window is None:
                    if self._stop.is_set():
                        return
                    continue
                if self.clock == "virtual" and self._virtual_drop(window):
                    continue
                estimate = self.stream.step(window)
                self._publish(replace(estimate, latency_ns=self._latency(window, estimate), dropped_total=self.dropped))
        except Exception as exc:  # noqa: BLE001 - reported as the reason the run ended
            self.message = f"inference failed: {type(exc).__name__}: {exc}".splitlines()[0]
            self._end(f"error: {self.message}")

    def _latency(self, window: Window, estimate: Estimate) -> int:
        """Window close -> estimate. Virtual: as if window i arrived live at its end time and the model
        worked on windows one at a time; offline: compute time only."""
        if self.clock == "offline":
            return estimate.compute_ns
        if self.clock == "virtual":
            started = max(window.end_ns, self._virtual_free_ns)
            self._virtual_free_ns = started + estimate.compute_ns
            return self._virtual_free_ns - window.end_ns
        return time.monotonic_ns() - (window.closed_ns or time.monotonic_ns())

    def _virtual_drop(self, window: Window) -> bool:
        """Virtual clock: would this window have been dropped live? Live, window i is dropped when window
        i + Q (Q = queue size) closes before the model is free to take i; windows come in index order, so
        that window exists exactly when Q windows are queued behind i. Such windows are skipped and counted."""
        q = self.windows.maxsize
        if (window.index + q + 1) * NANOS_PER_SECOND > self._virtual_free_ns:
            return False
        if self.windows.wait_count(q) < q:  # the input ended before window i + Q
            return False
        with self._lock:
            self._progress.virtual_dropped += 1
        return True

    def _publish(self, estimate: Estimate) -> None:
        with self._lock:
            p = self._progress
            p.latest, p.done = estimate, p.done + 1
            for name, value in estimate.outputs.items():
                p.history[name].append(value)
            if estimate.latency_ns is not None:
                p.latencies.append(estimate.latency_ns / 1e6)
        for sink in self.sinks:
            sink.write(estimate)
        if self.on_estimate is not None:
            self.on_estimate(estimate)

    # ---- shutdown and observation ------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self.windows.dropped + self._progress.virtual_dropped

    def stop(self, reason: str = "stopped") -> None:
        """Idempotent: stop sources (releasing devices), the worker and the sinks; safe from any thread."""
        self._end(reason)
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.inputs.close()  # first: wakes a replay blocked on a full queue
        for source in self.sources:
            source.stop()
        self.windows.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=JOIN_TIMEOUT_S)
        for sink in self.sinks:
            sink.close(self._ended_by)

    @property
    def ended_by(self) -> str:
        return self._ended_by

    def _input_fps(self) -> float | None:
        times = list(self._frames)
        if len(times) < 2 or times[-1] == times[0]:
            return None
        return (len(times) - 1) * NANOS_PER_SECOND / (times[-1] - times[0])

    def snapshot(self) -> Snapshot:
        """An immutable picture of the run for the dashboard."""
        with self._lock:
            p = self._progress
            latest, done = p.latest, p.done
            history = {name: tuple(values) for name, values in p.history.items()}
            latencies = list(p.latencies)
        return Snapshot(
            output_names=self.names,
            latest=latest,
            history=history,
            attribution=latest.attribution if latest else (),
            sources=tuple(source.status for source in self.sources),
            windows_done=done,
            windows_dropped=self.dropped,
            latency_p50_ms=percentile(latencies, 50),
            latency_p99_ms=percentile(latencies, 99),
            input_fps=self._input_fps(),
            untrained=self.untrained,
            pretrained=self.stream.model.pretrained,
            title=self.title,
            elapsed_s=(time.monotonic_ns() - self._started_ns) / NANOS_PER_SECOND,
            message=self.message,
        )

    def summary(self) -> dict[str, float | int | str | None]:
        """Totals for the closing line and the sidecar."""
        with self._lock:
            latencies = list(self._progress.latencies)
            done = self._progress.done
        return {
            "windows": done,
            "dropped": self.dropped,
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p99_ms": percentile(latencies, 99),
            "ended_by": self._ended_by,
        }
