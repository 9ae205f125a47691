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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from monitor.losses import LossLedger
from monitor.queues import BoundedQueue, Closed, call_with_deadline, first_line
from monitor.replay import CLOCKS as REPLAY_CLOCKS
from monitor.run_end import EndReason, RunEnd
from monitor.sinks import SINK_CLOSE_TIMEOUT_S, Sink, SinkFailed, SinkSet
from monitor.snapshot import Progress, Snapshot
from monitor.sources import InputQueue, Source, SourceEnd
from sec2sec.config import NANOS_PER_SECOND
from sec2sec.media import AudioChunk, FrameTick, VideoFrame
from sec2sec.stream import AffectStream, Estimate
from sec2sec.windows import Window, Windower

CLOCKS = ("live", *REPLAY_CLOCKS)  # live capture, or one of the replay clocks
IN_FLIGHT_TIMEOUT_S = 3.0  # shutdown waits this long for the window being computed (one window: ~0.5 s here)
SINK_WRITE_TIMEOUT_S = 10.0  # one write to a sink this long is stuck (a pipe or FIFO nobody reads, a stalled disk)
SOURCE_STOP_TIMEOUT_S = 3.0  # per source; a device whose stop blocks in its driver (an unplugged USB mic) is abandoned
STALL_TIMEOUT_S = 30.0  # a replay decoder that makes no progress this long ends the run (exit 1)
INFERENCE_TIMEOUT_S = 120.0  # one model step this long is stuck, not slow (a window takes ~0.5 s here)
POLL_S = 0.05  # how often a waiting loop looks at the stop event


class Pipeline:
    """Wire sources, windower, stream and sinks together. `run()` blocks until the end of the input, the
    window limit, `stop()` (from a signal handler or another thread) or an error, and returns what ended it
    (`RunEnd`: the reason, and for an error one line naming what failed; the first end is the one kept).

    Every wait is bounded or wakes on the stop event; a failure in any thread ends the run; shutdown lets the
    window in flight finish (bounded by `IN_FLIGHT_TIMEOUT_S`), then closes every sink so the recorders write
    their summaries. Threads that could not be joined are listed in `abandoned` (the CLI then exits hard).
    """

    def __init__(
        self,
        stream: AffectStream,
        sources: Sequence[Source],
        inputs: InputQueue,
        windower: Windower,
        sinks: Sequence[Sink],
        *,
        clock: str,
        max_windows: int | None = None,
        window_queue: int = 2,
        title: str = "sec2sec-live",
        untrained: bool = False,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        inference_timeout_s: float = INFERENCE_TIMEOUT_S,
        sink_timeout_s: float | None = None,
    ) -> None:
        sink_timeout_s = SINK_WRITE_TIMEOUT_S if sink_timeout_s is None else sink_timeout_s
        if clock not in CLOCKS:
            raise ValueError(f"clock {clock!r} is not allowed; use one of {', '.join(CLOCKS)}")
        if min(stall_timeout_s, inference_timeout_s, sink_timeout_s) <= 0:
            raise ValueError(
                f"stall_timeout_s = {stall_timeout_s}, inference_timeout_s = {inference_timeout_s}, "
                f"sink_timeout_s = {sink_timeout_s}; give positive numbers of seconds"
            )
        self.stream, self.sources, self.inputs, self.windower = stream, list(sources), inputs, windower
        self.outputs, self.clock, self.max_windows = SinkSet(sinks), clock, max_windows
        self.origin_ns = 0  # live: the monotonic time at which run() starts the sources; replay: media time
        self.title, self.untrained = title, untrained
        self.stall_ns = int(stall_timeout_s * NANOS_PER_SECOND)
        self.inference_ns = int(inference_timeout_s * NANOS_PER_SECOND)
        self.sink_ns = int(sink_timeout_s * NANOS_PER_SECOND)
        self.windows: BoundedQueue[Window] = BoundedQueue(window_queue)
        self.names = tuple(stream.config.heads.outputs)
        self._progress = Progress(self.names)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = False
        self._shut_down = threading.Event()  # set once stop() has closed everything
        self._end: RunEnd | None = None  # what ended the run: the first end reported
        self.message = ""  # the dashboard's last warning or error, one line
        self.abandoned: list[str] = []  # threads still running after shutdown gave up on them
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._busy: tuple[int, int] | None = None  # (window index, monotonic start) of the step in progress
        self._virtual_free_ns = 0
        self._frames: collections.deque[int] = collections.deque(maxlen=256)  # arrival times of recent frames
        self._started_ns = time.monotonic_ns()
        self.on_estimate: Callable[[Estimate], None] | None = None
        self.losses = LossLedger()  # input lost at the edges, by window; each row takes its window's share
        inputs.on_drop = self._input_dropped
        for source in self.sources:  # a source that can tell what it lost (the microphone) files it here
            source.on_loss = self.losses.add

    def _input_dropped(self, item: object) -> None:
        """A frame or chunk the full input queue displaced (live: the windowing thread fell behind)."""
        if isinstance(item, (VideoFrame, FrameTick)):
            self.losses.add(item.t_ns // NANOS_PER_SECOND, frames=1)
        elif isinstance(item, AudioChunk):
            samples = len(item.samples) * self.stream.config.audio.sample_rate // item.sample_rate
            self.losses.add(item.first_sample // item.sample_rate, samples=samples)

    # ---- the windowing loop (caller's thread) -------------------------------------------------------

    def run(self) -> RunEnd:
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
            self._settle(RunEnd(EndReason.INTERRUPTED))
        except Exception as exc:  # noqa: BLE001 - any failure here ends the run with its message
            self._fail(f"windowing failed: {first_line(exc)}")
        finally:
            self.stop()
        return self.end

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self.inputs.get(timeout=POLL_S)
            except Closed:
                return
            if self._stalled():
                return
            now_ns = time.monotonic_ns() - self.origin_ns if self.clock == "live" else None
            if isinstance(item, (VideoFrame, FrameTick)):
                self.windower.push_frame(item)
                self._frames.append(time.monotonic_ns())
            elif isinstance(item, AudioChunk):
                self.windower.push_audio(item)
            elif isinstance(item, SourceEnd):
                self._source_ended(item)
                return
            if self._emit(self.windower.ready(now_ns)):
                return

    def _stalled(self) -> bool:
        """End the run (True) when a replay's decoder has made no progress for `stall_ns`, one model step
        has run for `inference_ns`, or one write to a sink has not returned for `sink_ns`."""
        now = time.monotonic_ns()
        if self.clock != "live":
            for source in self.sources:
                if source.stalled_ns(now) > self.stall_ns:
                    self._fail(f"{source.name}: no data for {self.stall_ns / NANOS_PER_SECOND:g} s (decoder stalled)")
                    return True
        busy = self._busy
        if busy is not None and now - busy[1] > self.inference_ns:
            self._fail(f"inference stalled: window {busy[0]} has run for {self.inference_ns / NANOS_PER_SECOND:g} s")
            return True
        writing = self.outputs.writing
        if writing is not None and now - writing[1] > self.sink_ns:
            self._fail(
                f"{writing[0]}: a write has not returned for {self.sink_ns / NANOS_PER_SECOND:g} s "
                "(a pipe or FIFO nobody reads, or a stalled disk); the rows written before it are kept"
            )
            return True
        return False

    def _source_ended(self, end: SourceEnd) -> None:
        """A source that ends (a file at its end, a device that failed) ends the run after the windows its
        data completes; a failure ends it as an error."""
        if end.error:
            self.message = f"{end.name}: {end.error}"
        if not self._emit(self.windower.finish()):
            self._drain()
        if end.error:
            self._fail(self.message)
        else:
            self._settle(RunEnd(EndReason.END))

    def _emit(self, windows: Iterable[Window]) -> bool:
        """Hand closed windows to the worker; True when the run must end (window limit, or stopping)."""
        for window in windows:
            if self.max_windows is not None and window.index >= self.max_windows:
                self._drain()
                self._settle(RunEnd(EndReason.DURATION))
                return True
            window = replace(window, closed_ns=time.monotonic_ns())
            if self.clock in ("virtual", "offline"):
                while not self.windows.put_wait(window, timeout=POLL_S):
                    if self._stop.is_set() or self.windows.closed or self._stalled():
                        return True
            else:
                self.windows.put_latest(window)
        return self._stop.is_set()

    def _drain(self) -> None:
        """Let the worker finish every queued window; returns early when the run is stopped or stalls."""
        self.windows.close()
        while self._worker.is_alive() and not self._stop.is_set() and not self._stalled():
            self._worker.join(POLL_S)

    def request_stop(self, reason: EndReason) -> None:
        """Ask `run()` to end (safe from a signal handler: it only sets an event)."""
        self._settle(RunEnd(reason))

    def _settle(self, end: RunEnd) -> None:
        """End the run: the first end is the one kept (and reported); every end wakes the waiting loops."""
        if self._end is None:
            self._end = end
        self._stop.set()

    def _fail(self, message: str) -> None:
        """End the run as an error; the first failure is the one reported."""
        if self._end is None:
            self.message = message
        self._settle(RunEnd.error(message))

    # ---- the inference worker (its own thread) ------------------------------------------------------

    def _work(self) -> None:
        """Take windows until the queue is closed and drained, or the run stops (the window in flight is
        finished and written; queued ones are not started)."""
        window: Window | None = None
        try:
            while not self._stop.is_set():
                try:
                    window = self.windows.get(timeout=0.1)
                except Closed:
                    return
                if window is None or (self.clock == "virtual" and self._virtual_drop(window)):
                    continue
                self._busy = (window.index, time.monotonic_ns())
                estimate = self.stream.step(window)
                self._busy = None
                lost = self.losses.take(window.index)
                self._publish(
                    replace(
                        estimate,
                        latency_ns=self._latency(window, estimate),
                        dropped_total=self.dropped,
                        frames_dropped=lost.frames_dropped,
                        samples_lost=lost.samples_lost,
                        samples_restamped=lost.samples_restamped,
                    )
                )
        except SinkFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported as the reason the run ended
            where = f" at window {window.index}" if window is not None else ""
            self._fail(f"inference failed{where}: {first_line(exc)}")
        finally:
            self._busy = None

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
        while self.windows.wait_count(q, timeout=POLL_S) < q:
            if self.windows.closed or self._stop.is_set():  # the input ended before window i + Q
                return False
        with self._lock:
            self._progress.virtual_dropped += 1
        return True

    def _publish(self, estimate: Estimate) -> None:
        """Write the estimate to every sink (all of them, even after one failed), then count it as done;
        a failed sink is raised as SinkFailed naming it."""
        failure = self.outputs.write(estimate)
        if failure is None:  # shutdown closed the sinks (the worker had been given up on)
            return
        with self._lock:
            self._progress.record(estimate)
        if failure:
            raise SinkFailed(failure)
        if self.on_estimate is not None:
            self.on_estimate(estimate)

    # ---- shutdown and observation ------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self.windows.dropped + self._progress.virtual_dropped

    def stop(self, reason: EndReason = EndReason.STOPPED, message: str = "") -> None:
        """Idempotent and bounded: close the queues, let the worker finish the window in flight, close every
        sink (recorders write their summaries), then stop the sources (releasing devices). Every step has a
        deadline, so a device or sink stuck in its driver cannot hold up the others. Safe from any thread.
        `reason` (and `message`) say what ended the run, unless something ended it already."""
        self._settle(RunEnd(reason, message))
        with self._lock:
            stopping_elsewhere, self._stopped = self._stopped, True
        if stopping_elsewhere:  # another thread is shutting down: wait (bounded) until it is done
            self._shut_down.wait(self.shutdown_bound_s)
            return
        try:
            self._shut_down_everything()
        finally:
            self._shut_down.set()

    @property
    def shutdown_bound_s(self) -> float:
        """The longest `stop()` can take: the window in flight, each sink's close (and a write in progress),
        each source's stop, every step at its deadline (e.g. 11 s with a camera, a microphone and a CSV)."""
        return (
            IN_FLIGHT_TIMEOUT_S
            + SINK_CLOSE_TIMEOUT_S * (len(self.sinks) + 1)
            + SOURCE_STOP_TIMEOUT_S * len(self.sources)
        )

    def _shut_down_everything(self) -> None:
        """Sinks close before the sources stop: the summary is on disk even if a device's stop blocks."""
        self.inputs.close()  # first: wakes a replay blocked on a full queue; live sources' puts now do nothing
        self.windows.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=IN_FLIGHT_TIMEOUT_S)
            if self._worker.is_alive():
                self.abandoned.append("inference")
        self._close_sinks()
        self._stop_sources()

    def _stop_sources(self) -> None:
        """Stop each source in a helper thread with a deadline; one that does not return is abandoned."""
        for source in self.sources:
            name = source.name
            returned, error = call_with_deadline(source.stop, SOURCE_STOP_TIMEOUT_S, f"stop {name}")
            self.abandoned += source.abandoned  # a source that bounds its own stop
            if not returned:
                self.abandoned.append(f"stop {name}")
                self.message = self.message or (
                    f"{name} did not stop within {SOURCE_STOP_TIMEOUT_S:g} s (device gone?); left behind"
                )
            elif error:
                self.message = self.message or f"{name} did not stop cleanly: {error}"

    def _close_sinks(self) -> None:
        """Close every sink, each bounded (the CSV summary is written even when stdout is a pipe nobody reads).
        A sink that cannot close changes the end as `RunEnd.after_close_failure` says."""
        for name, problem, left_behind in self.outputs.close(self.end):
            if left_behind:
                self.abandoned.append(f"close {name}")
            before, self._end = self.end, self.end.after_close_failure(f"{name} {problem}")
            self.message = self._end.message if self._end.failed and not before.failed else self.message or problem

    @property
    def end(self) -> RunEnd:
        """What ended the run (`stopped` if asked before anything ended it; set by `run()` and `stop()`)."""
        return self._end or RunEnd(EndReason.STOPPED)

    @property
    def sinks(self) -> list[Sink]:
        """The sinks in writing order (the list itself: a caller may add one before `run()`)."""
        return self.outputs.sinks

    @property
    def unwritten(self) -> int:
        """Estimates computed after the sinks were closed (only when the worker was given up on)."""
        return self.outputs.unwritten

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
            p50, p99 = p.latency_percentiles()
        return Snapshot(
            output_names=self.names,
            latest=latest,
            history=history,
            attribution=latest.attribution if latest else (),
            sources=tuple(source.status for source in self.sources),
            windows_done=done,
            windows_dropped=self.dropped,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            input_fps=self._input_fps(),
            untrained=self.untrained,
            pretrained=self.stream.model.pretrained,
            title=self.title,
            elapsed_s=(time.monotonic_ns() - self._started_ns) / NANOS_PER_SECOND,
            message=self.message,
        )

    def summary(self) -> dict[str, float | int | str | None]:
        """Totals for the closing line and the API: windows done, windows dropped, latency p50 and p99 (ms), and
        what ended the run (`ended_by`, `message`: `RunEnd.report`)."""
        with self._lock:
            p50, p99 = self._progress.latency_percentiles()
            done = self._progress.done
        return {
            "windows": done,
            "dropped": self.dropped,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            **self.end.report(),
        }
