"""The output edge: what the pipeline needs of a sink (the CSV and JSONL recorders, `--no-ui`'s printer, the
live outlets), and `SinkSet`, which writes each estimate to all of them on the inference worker and closes them
at shutdown, each close bounded by a deadline so that a sink stuck in the OS cannot hold up the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from monitor.queues import call_with_deadline, first_line

if TYPE_CHECKING:
    from monitor.run_end import RunEnd
    from sec2sec.stream import Estimate

SINK_CLOSE_TIMEOUT_S = 1.0  # per sink; a sink stuck in the OS (a pipe nobody reads) is abandoned, not waited on


class Sink(Protocol):
    """Receives every estimate on the worker thread; closed once at the end with how the run ended (a recorder
    writes it into its summary). `name` names it in error messages ("csv recorder talk.csv")."""

    name: str

    def write(self, estimate: Estimate) -> None: ...

    def close(self, end: RunEnd) -> None: ...


class SinkFailed(Exception):
    """A sink raised while writing an estimate; the message names the sink and the window."""


class SinkSet:
    """A run's sinks (a plain list, `sinks`, in writing order). The worker writes through `write`; shutdown
    closes them with `close`, after which writes are counted in `unwritten` instead of made. `writing` says
    which sink is being written and since when, so the pipeline can tell a write that never returns."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.unwritten = 0  # estimates computed after the sinks were closed (only when a thread was abandoned)
        self.writing: tuple[str, int] | None = None  # (sink name, monotonic start) of the write in progress
        self._lock = threading.Lock()  # held while the worker writes; `close` takes it (bounded) first
        self._closed = False

    def write(self, estimate: Estimate) -> str | None:
        """Write to every sink, all of them even after one failed. Returns "" when all took it, the first
        failure as one line naming the sink and window, or None when the sinks are already closed."""
        failure = ""
        with self._lock:
            if self._closed:
                self.unwritten += 1
                return None
            for sink in self.sinks:
                self.writing = (sink.name, time.monotonic_ns())
                try:
                    sink.write(estimate)
                except Exception as exc:  # noqa: BLE001 - named and reported as the reason the run ended
                    failure = failure or f"{sink.name} failed at window {estimate.window}: {first_line(exc)}"
                finally:
                    self.writing = None
        return failure

    def close(self, end: RunEnd) -> list[tuple[str, str, bool]]:
        """Close each sink in a helper thread with `SINK_CLOSE_TIMEOUT_S` (a write in progress gets as long to
        finish). Returns (sink name, problem, left behind) for each sink that did not close: a timeout (its
        helper thread "close <name>" is left behind) or an error, one line each; empty when all closed."""
        locked = self._lock.acquire(timeout=SINK_CLOSE_TIMEOUT_S)
        self._closed = True
        if locked:
            self._lock.release()
        problems: list[tuple[str, str, bool]] = []
        for sink in self.sinks:
            name = sink.name
            close = lambda sink=sink: sink.close(end)  # noqa: E731 - bound per sink
            returned, error = call_with_deadline(close, SINK_CLOSE_TIMEOUT_S, f"close {name}")
            if not returned:
                problems.append((name, f"did not close within {SINK_CLOSE_TIMEOUT_S:g} s", True))
            elif error:
                problems.append((name, f"could not be closed: {error}", False))
        return problems
