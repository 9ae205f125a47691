"""A per-clip trace CSV (continuous labels, e.g. valence / arousal rated while watching) -> one value per second.

Two layouts, told apart by the header:
- one row per second, no time column: row k (after the header) is second k of the clip;
- a `time` column (seconds from the clip's start, any rate, e.g. RECOLA's 40 ms or an annotation tool's
  irregular samples): second k is the mean of the samples with k <= time < k + 1; a second without a
  sample that lies between two samples takes the line between them at its centre k + 0.5; seconds before
  the first or after the last sample have no label (NaN).
An empty cell is an unlabelled sample (NaN). Every output named by the config must be a column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TIME_COLUMN = "time"


def _number(path: Path, row: int, column: str, text: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path} row {row}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path} row {row}, column {column}: {text!r} is not a finite number")
    return value


def _rows(path: Path, columns: Sequence[str]) -> tuple[list[dict[str, str]], bool]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except OSError as exc:
        raise ValueError(f"trace {path} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"trace {path} is not a UTF-8 CSV file ({exc})") from None
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"trace {path} lacks column(s) {', '.join(missing)}; its header is {header}")
    if not rows:
        raise ValueError(f"trace {path} has a header but no rows")
    return [{k.strip(): (v or "") for k, v in r.items() if k is not None} for r in rows], TIME_COLUMN in header


def resample_to_seconds(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Samples (time s, value) -> per-second values (see the module docstring); NaN values are skipped."""
    keep = ~np.isnan(values)
    times, values = times[keep], values[keep]
    if times.size == 0:
        return np.zeros(0)
    n = math.floor(times.max()) + 1
    out = np.full(n, np.nan)
    bins = np.floor(times).astype(np.int64)
    for k in range(n):
        inside = values[bins == k]
        if inside.size:
            out[k] = inside.mean()
        elif times.min() < k + 0.5 < times.max():
            out[k] = float(np.interp(k + 0.5, times, values))
    return out


def read_trace(path: str | Path, outputs: Sequence[str]) -> dict[str, list[float]]:
    """A trace CSV -> {output: [value of second 0, 1, ...]} (NaN: no label), all of one length."""
    path = Path(path)
    rows, timed = _rows(path, outputs)
    if not timed:
        return {name: [_number(path, i, name, r[name]) for i, r in enumerate(rows, start=2)] for name in outputs}
    times = np.array([_number(path, i, TIME_COLUMN, r[TIME_COLUMN]) for i, r in enumerate(rows, start=2)])
    if np.isnan(times).any() or (times < 0).any() or (np.diff(times) < 0).any():
        raise ValueError(f"trace {path}: column {TIME_COLUMN} must hold seconds >= 0 in increasing order")
    per_second = {}
    for name in outputs:
        values = np.array([_number(path, i, name, r[name]) for i, r in enumerate(rows, start=2)])
        per_second[name] = resample_to_seconds(times, values)
    n = max(len(v) for v in per_second.values())
    return {k: [*v.tolist(), *[math.nan] * (n - len(v))] for k, v in per_second.items()}


def check_trace_range(path: Path, trace: dict[str, list[float]], low: float, high: float) -> None:
    """Refuse a trace value outside [low, high] (regression outputs), naming the second and the column."""
    for name, values in trace.items():
        for k, v in enumerate(values):
            if not math.isnan(v) and not low <= v <= high:
                raise ValueError(f"trace {path} second {k}, column {name}: {v:g} is outside [{low:g}, {high:g}]")


def trace_mean(trace: dict[str, list[float]]) -> dict[str, float]:
    """The clip-level value of each output: the mean over its labelled seconds (NaN-free outputs only)."""
    out = {}
    for name, values in trace.items():
        labelled = [v for v in values if not math.isnan(v)]
        if labelled:
            out[name] = float(np.mean(labelled))
    return out
