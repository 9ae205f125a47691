"""What the monitor's edges share about a run in progress: the `Progress` the inference worker records, the
`Snapshot` the dashboard shows (built by the pipeline from it), how many seconds of history it keeps, and the
latency percentiles every report uses (pipeline, recorders' summaries, live outputs)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from monitor.sources import SourceStatus
    from sec2sec.stream import Estimate

HISTORY_SECONDS = 60  # per output, the values the dashboard's sparklines show
LATENCY_SAMPLES = 2000  # the newest latencies that the percentiles are taken over


class Progress:
    """What the worker has produced so far: the latest estimate, how many, each output's recent values and the
    recent latencies (bounded). Not locked by itself: the pipeline reads and writes it under its own lock."""

    def __init__(self, names: Sequence[str]) -> None:
        self.latest: Estimate | None = None
        self.done = 0
        self.virtual_dropped = 0  # windows the virtual clock skipped, as a live run would have dropped them
        self.history = {name: collections.deque[float](maxlen=HISTORY_SECONDS) for name in names}
        self.latencies = collections.deque[float](maxlen=LATENCY_SAMPLES)  # ms

    def record(self, estimate: Estimate) -> None:
        self.latest, self.done = estimate, self.done + 1
        for name, value in estimate.outputs.items():
            self.history[name].append(value)
        if estimate.latency_ns is not None:
            self.latencies.append(estimate.latency_ns / 1e6)

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) in ms over the recent latencies; None without any."""
        latencies = list(self.latencies)
        return percentile(latencies, 50), percentile(latencies, 99)


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboard shows at one instant; built by the pipeline, never changed afterwards."""

    output_names: tuple[str, ...]
    latest: Estimate | None
    history: dict[str, tuple[float, ...]]  # last <= HISTORY_SECONDS values per output, oldest first
    attribution: tuple[float, ...]  # per-second weights over the horizon, oldest first; empty: none
    sources: tuple[SourceStatus, ...]
    windows_done: int
    windows_dropped: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    input_fps: float | None
    untrained: bool  # no trained checkpoint: a red banner says the outputs mean nothing
    pretrained: dict[str, bool] = field(default_factory=dict)  # encoder -> pretrained weights loaded?
    title: str = "sec2sec-live"
    elapsed_s: float = 0.0
    message: str = ""  # last warning or error, one line


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (`np.percentile`,
    method "linear"); None for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q = {q}; use a number in [0, 100]")
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method="linear"))
