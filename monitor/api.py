"""The Python API under `sec2sec-live`: load a model, estimate a whole file, or iterate a live run.

    from monitor.api import estimate_file, live, load_model

    model = load_model(checkpoint="runs/liris/best.pt")       # or load_model(config="configs/default.toml")
    records = estimate_file("talk.mp4", model)                # one record per second: record["valence"], ...
    for estimate in live(camera=0, model=model):              # leaving the loop stops the run
        ...

A run is built by `monitor/assembly.py::open_pipeline`, as the CLI's is: the API passes an `Options`, which
carries the CLI's field names (`monitor/run_options.py`), so there is one way to build a run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.assembly import model_for_run, open_pipeline
from monitor.fields import Value, record_of
from monitor.run_end import EndReason, RunEnd, RunFailed
from monitor.run_options import PATH_FIELDS, LoadedModel, Options, check_args

if TYPE_CHECKING:
    from monitor.pipeline import Pipeline
    from sec2sec.stream import Estimate

__all__ = [
    "EndReason",
    "LiveRun",
    "LoadedModel",
    "Options",
    "RunEnd",
    "RunFailed",
    "estimate_file",
    "live",
    "load_model",
    "record_of",
]

ESTIMATE_QUEUE = 64  # estimates waiting for a `for` loop that is busy (a live run drops windows meanwhile)
STOP_MARGIN_S = 2.0  # leaving a live loop waits the pipeline's shutdown bound plus this (noticing the request)


def load_model(checkpoint: str | Path | None = None, config: str | Path | None = None) -> LoadedModel:
    """A trained model from `checkpoint` (a .pt from `sec2sec train`; `config`, when given too, must match
    it), or an untrained one from a TOML `config` (default: the built-in default.toml values), seeded so that
    every load gives the same weights. Raises ValueError naming the problem."""
    return model_for_run(Options(checkpoint=checkpoint, config=config))


class LiveRun:
    """A running pipeline seen as an iterator of `Estimate`s, one per window, in order.

    `for estimate in run:` starts the run (sources, then the pipeline in a thread of its own) and ends when the
    input ends, the `duration` is reached, or the loop is left (`break`, an exception, Ctrl-C): leaving it
    stops the pipeline, releases camera and microphone and closes every output, within seconds. A loop body
    slower than the input holds up estimates, never capture: a live run drops windows meanwhile (counted in
    `dropped_total`), an offline replay waits. A run that fails raises RunFailed after its last estimate;
    `end` says what ended the run (a `RunEnd`: `end.reason`, `end.message`).
    Use it once; `with live(...) as run:` stops it on leaving the block even if it was never iterated."""

    def __init__(self, pipeline: Pipeline) -> None:
        from monitor.queues import BoundedQueue

        self.pipeline = pipeline
        self.outputs = pipeline.names
        self.end: RunEnd | None = None  # what ended the run, once it has ended
        self._estimates: BoundedQueue[Estimate] = BoundedQueue(ESTIMATE_QUEUE)
        self._thread: threading.Thread | None = None
        pipeline.on_estimate = self._put

    def _put(self, estimate: Estimate) -> None:
        """On the pipeline's worker: hand the estimate to the loop; give up once the loop has been left."""
        while not self._estimates.put_wait(estimate, timeout=0.1):
            if self._estimates.closed:
                return

    def _run(self) -> None:
        try:
            self.end = self.pipeline.run()
        finally:
            self._estimates.close()

    def __iter__(self) -> Iterator[Estimate]:
        from monitor.queues import Closed

        if self._thread is not None:
            raise RuntimeError("a live run is iterated once; call live(...) again for another run")
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()
        try:
            while True:
                try:
                    estimate = self._estimates.get(timeout=0.1)
                except Closed:
                    break
                if estimate is not None:
                    yield estimate
        finally:
            self.close()
        failure = None if self.end is None else self.end.exception()
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Stop the run (idempotent, bounded): the loop's queue first, so the worker never waits on it."""
        self._estimates.close()
        self.pipeline.request_stop(EndReason.STOPPED)
        if self._thread is None:
            self.pipeline.stop()
            self.end = self.pipeline.end
        else:
            self._thread.join(self.pipeline.shutdown_bound_s + STOP_MARGIN_S)

    def summary(self) -> dict[str, Any]:
        """Windows, drops, latency p50/p99 (ms) and what ended the run."""
        return self.pipeline.summary()

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def live(options: Options | None = None, **fields: Any) -> LiveRun:
    """Open a run (the sources, the model, its warm-up and the outputs) and return it, not yet started:
    `for estimate in live(camera=0, model=model):`, `live(replay="talk.mp4", clock="virtual")`,
    `live(no_camera=True)` for the microphone alone. Fields are `Options`' (the CLI's option names).
    Raises ValueError (one line) for bad input before the model loads."""
    args = replace(options or Options(), **fields)
    paths: dict[str, Any] = {key: str(getattr(args, key)) for key in PATH_FIELDS if getattr(args, key) is not None}
    args = replace(args, **paths)  # the sidecar records them as text
    check_args(args)
    pipeline = open_pipeline(args)
    return LiveRun(pipeline)


def estimate_file(path: str | Path, model: LoadedModel | None = None, **fields: Any) -> list[dict[str, Value]]:
    """Every second of a media file, as fast as the model allows (the offline clock: nothing dropped), as one
    record per window (`record_of`: the CSV's fields, as the JSON lines have them). `model` from `load_model()`
    (default: an untrained model from the built-in config); other fields as `Options` (e.g. `duration=10`,
    `csv="x.csv"`)."""
    with live(replay=path, clock="offline", model=model, **fields) as run:
        return [record_of(estimate, run.outputs) for estimate in run]
