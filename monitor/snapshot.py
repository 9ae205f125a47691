"""What the monitor's edges share about a run in progress: the `Snapshot` the dashboard shows (built by the
pipeline), how many seconds of history it keeps, and the latency percentiles every report uses (pipeline,
recorders' summaries, live outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from monitor.sources import SourceStatus
    from sec2sec.stream import Estimate

HISTORY_SECONDS = 60  # per output, the values the dashboard's sparklines show


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
