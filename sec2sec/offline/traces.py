"""A per-clip trace CSV (continuous labels, e.g. valence / arousal rated while watching) -> one value per second.

Two layouts, told apart by the header:
- one row per second, no time column: row k (after the header) is second k of the clip;
- a `time` column (seconds from the clip's start, any rate, e.g. RECOLA's 40 ms or an annotation tool's
  irregular samples): second k is the mean of the samples with k <= time < k + 1; a second without a
  sample that lies between two samples takes the line between them at its centre k + 0.5; seconds before
  the first or after the last sample have no label (NaN).
An empty cell is an unlabelled sample (NaN). Every output named by the config must be a column.

A trace is checked against its clip's duration: it may run up to `SLACK_SECONDS` + `SLACK_FRACTION` of the
clip past the clip's end (annotation tools sample a little past the last frame), and those seconds are cut;
a trace that runs further is refused with a message that says which unit its times seem to be in
(milliseconds, Unix timestamps, an offset) and what is expected. So the memory a trace takes is bounded by
its clip's length and the file's size, never by the numbers in the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sec2sec.config import NANOS_PER_SECOND
from sec2sec.offline.csv_rows import CsvRow, read_csv_rows

TIME_COLUMN = "time"
SLACK_SECONDS = 1.0
SLACK_FRACTION = 0.05
UNIX_TIME_FROM = 1e8  # seconds since 1970 (March 1973): no clip is that long, so a time from it on is a timestamp


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


def _rows(path: Path, columns: Sequence[str]) -> tuple[list[CsvRow], bool]:
    header, rows = read_csv_rows(path, f"trace {path}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"trace {path} lacks column(s) {', '.join(missing)}; its header is {header}")
    if not rows:
        raise ValueError(f"trace {path} has a header but no rows")
    bad = next((r.problem for r in rows if r.problem), "")
    if bad:
        raise ValueError(bad)
    return rows, TIME_COLUMN in header


def longest_trace_seconds(clip_seconds: float) -> float:
    """How far past a clip's start its trace may run: the clip's length plus the slack (see the module doc)."""
    return clip_seconds * (1 + SLACK_FRACTION) + SLACK_SECONDS


def _unit_hint(first: float, last: float, limit: float) -> str:
    """What the times of a trace that runs to `last` s past a clip allowing `limit` s seem to be in, and the fix."""
    span = last - first
    expected = f"the column holds seconds from the clip's start (0 to {limit:.1f})"
    if first >= 1000 * UNIX_TIME_FROM and span / 1000 <= limit:
        return f"they look like Unix timestamps in milliseconds; {expected}: subtract {first:.0f}, divide by 1000"
    if first >= UNIX_TIME_FROM and span <= limit:
        return f"they look like Unix timestamps (seconds since 1970); {expected}: subtract {first:.0f}"
    if span <= limit:
        return f"they start {first:g} s late; {expected}: subtract the time of the clip's first frame"
    if last / 1000 <= limit:
        return f"they look like milliseconds; {expected}: divide by 1000"
    if last / 1_000_000 <= limit:
        return f"they look like microseconds; {expected}: divide by 1000000"
    return f"{expected}; is it the trace of another clip?"


def resample_to_seconds(times: np.ndarray, values: np.ndarray, seconds: int) -> np.ndarray:
    """Samples (time s, value) -> `seconds` per-second values (see the module docstring); NaN values are
    skipped, samples from `seconds` on are dropped. O(samples + seconds) time and memory."""
    keep = ~np.isnan(values)
    times, values = times[keep], values[keep]
    out = np.full(seconds, np.nan)
    if times.size == 0 or seconds <= 0:
        return out
    inside = (times >= 0) & (times < seconds)
    bins = np.floor(times[inside]).astype(np.int64)
    counts = np.bincount(bins, minlength=seconds)
    sums = np.bincount(bins, weights=values[inside], minlength=seconds)
    sampled = counts > 0
    out[sampled] = sums[sampled] / counts[sampled]
    centres = np.arange(seconds) + 0.5
    between = ~sampled & (centres > times.min()) & (centres < times.max())
    out[between] = np.interp(centres[between], times, values)
    return out


def read_trace(path: str | Path, outputs: Sequence[str], clip_ns: int) -> dict[str, list[float]]:
    """A trace CSV of a clip lasting `clip_ns` ns -> {output: [value of second 0, 1, ...]} (NaN: no label),
    all of one length, at most the clip's whole seconds (rounded up); a ValueError (one line naming the file)
    when the trace runs further past the clip than the slack allows (see the module docstring)."""
    path = Path(path)
    clip_seconds = clip_ns / NANOS_PER_SECOND
    limit, whole = longest_trace_seconds(clip_seconds), math.ceil(clip_seconds)
    rows, timed = _rows(path, outputs)
    if not timed:
        if len(rows) > limit:
            raise ValueError(
                f"trace {path} has {len(rows)} rows, one per second of clip without a {TIME_COLUMN} column, but "
                f"the clip lasts {clip_seconds:.1f} s ({len(rows) / max(clip_seconds, 1e-9):.3g} rows per second); "
                f"add a {TIME_COLUMN} column (seconds from the clip's start) for samples at another rate"
            )
        return {name: [_number(path, r.number, name, r.cells[name]) for r in rows[:whole]] for name in outputs}
    times = np.array([_number(path, r.number, TIME_COLUMN, r.cells[TIME_COLUMN]) for r in rows])
    if np.isnan(times).any() or (times < 0).any() or (np.diff(times) < 0).any():
        raise ValueError(f"trace {path}: column {TIME_COLUMN} must hold seconds >= 0 in increasing order")
    first, last = float(times[0]), float(times[-1])
    if last > limit:
        raise ValueError(
            f"trace {path}, column {TIME_COLUMN}: times run from {first:g} to {last:g}, but the clip lasts "
            f"{clip_seconds:.1f} s; {_unit_hint(first, last, limit)}"
        )
    seconds = min(whole, math.floor(last) + 1)
    out = {}
    for name in outputs:
        values = np.array([_number(path, r.number, name, r.cells[name]) for r in rows])
        out[name] = resample_to_seconds(times, values, seconds).tolist()
    return out


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
