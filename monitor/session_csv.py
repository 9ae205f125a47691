"""The monitor's session CSV in one home: its columns (what `CsvRecorder` in `monitor/recorders.py` writes),
where its JSON sidecar lives, and how a recorded session is read back (`read_session`, which the session plot,
`monitor/session_plot.py`, draws).

A row is one estimate's record (`monitor/fields.py`: `window, start_s, end_s, <one column per model output>,
attribution, video_ok, ...`); the sidecar of `talk.csv` is `talk.csv.json`. Reading goes by column name, so
columns added later do not break it, and a CSV of format version 1 (no `gap`, `compute_ms`, and before them no
loss columns) reads too. This module is light (numpy and the standard library; no torch, no matplotlib).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.fields import LOSS_FIELDS, OWN_FIELDS

# What a CSV must have to be read as a session; the loss columns are optional (older CSVs lack them).
REQUIRED_COLUMNS = ("window", "start_s", "end_s", "video_ok", "audio_ok", "latency_ms", "dropped_total")
FIX = "give the CSV that `sec2sec-live --csv PATH` wrote"


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of a CSV file lives: the same name with `.json` appended (talk.csv -> talk.csv.json)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class Session:
    """A recorded session, one entry per CSV row (n rows, in file order)."""

    path: Path
    window: np.ndarray  # (n,) int64
    start_s: np.ndarray  # (n,) float64
    end_s: np.ndarray  # (n,) float64
    outputs: dict[str, np.ndarray]  # name -> (n,) float64, in column order
    video_ok: np.ndarray  # (n,) bool
    audio_ok: np.ndarray  # (n,) bool
    latency_ms: np.ndarray  # (n,) float64, NaN where the pipeline did not set it
    dropped_total: np.ndarray  # (n,) int64
    lost: dict[str, np.ndarray]  # LOSS_FIELDS -> (n,) int64 input each window lost (zeros when not recorded)
    attribution: list[tuple[float, ...]] | None  # per row, oldest second first; None when the CSV has none
    sidecar: dict[str, Any] | None  # None when `<csv>.json` is missing or unreadable


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows; a CSV that cannot be read is a one-line ValueError."""
    if not path.exists():
        raise ValueError(f"session CSV {str(path)!r} does not exist; check the path ({FIX})")
    if not path.is_file():
        raise ValueError(f"session CSV {str(path)!r} is not a file; {FIX}")
    try:
        with path.open(encoding="utf-8", newline="") as file:
            lines = list(csv.reader(file))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{str(path)!r} is not a session CSV ({type(error).__name__}); {FIX}") from error
    if not lines:
        raise ValueError(f"{str(path)!r} is empty, not a session CSV; {FIX}")
    header = lines[0]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{str(path)!r} is not a session CSV: no column(s) {', '.join(missing)}; {FIX}")
    rows = [(number, cells) for number, cells in enumerate(lines[1:], start=2) if cells]
    if not rows:
        raise ValueError(
            f"{str(path)!r} has a header but no rows (the run ended before its first window closed); "
            "record at least one second and plot again"
        )
    return header, rows


def _parse_row(header: list[str], cells: list[str], outputs: list[str]) -> dict[str, Any]:
    """One row's cells -> typed values (KeyError/ValueError on a malformed row)."""
    if len(cells) != len(header):
        raise ValueError(f"{len(cells)} cells for {len(header)} columns")
    cell = dict(zip(header, cells, strict=True))
    attribution = cell.get("attribution", "")
    return {
        "window": int(cell["window"]),
        "start_s": float(cell["start_s"]),
        "end_s": float(cell["end_s"]),
        "outputs": [float(cell[name]) if cell[name] else math.nan for name in outputs],  # empty: not finite
        "video_ok": cell["video_ok"] == "1",
        "audio_ok": cell["audio_ok"] == "1",
        "latency_ms": float(cell["latency_ms"]) if cell["latency_ms"] else math.nan,
        "dropped_total": int(cell["dropped_total"]),
        "lost": [int(cell[name]) if cell.get(name) else 0 for name in LOSS_FIELDS],
        "attribution": tuple(float(w) for w in attribution.split(";")) if attribution else (),
    }


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar dict, or None (with a warning when it exists but cannot be read)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        content = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"sidecar {str(side)!r} is unreadable ({error}); the title will lack its details", stacklevel=2)
        return None
    return content if isinstance(content, dict) else None


def read_session(path: str | Path) -> Session:
    """Read a session CSV and its sidecar. A last row cut short (a killed run) is skipped with a warning;
    any other malformed row, a file that is not a session CSV, or one without rows is a ValueError."""
    path = Path(path)
    header, rows = _read_rows(path)
    outputs = [name for name in header if name not in OWN_FIELDS]
    if not outputs:
        raise ValueError(f"{str(path)!r} has no output columns (e.g. valence); {FIX}")
    parsed = []
    for position, (number, cells) in enumerate(rows):
        try:
            parsed.append(_parse_row(header, cells, outputs))
        except (KeyError, ValueError) as error:
            if position == len(rows) - 1 and position > 0:
                warnings.warn(f"{path.name} line {number} is cut short ({error}); skipped", stacklevel=2)
                continue
            raise ValueError(f"{str(path)!r} line {number} is malformed ({error}); {FIX}") from error
    has_attribution = any(row["attribution"] for row in parsed)
    return Session(
        path=path,
        window=np.array([row["window"] for row in parsed], dtype=np.int64),
        start_s=np.array([row["start_s"] for row in parsed], dtype=np.float64),
        end_s=np.array([row["end_s"] for row in parsed], dtype=np.float64),
        outputs={name: np.array([row["outputs"][k] for row in parsed]) for k, name in enumerate(outputs)},
        video_ok=np.array([row["video_ok"] for row in parsed], dtype=bool),
        audio_ok=np.array([row["audio_ok"] for row in parsed], dtype=bool),
        latency_ms=np.array([row["latency_ms"] for row in parsed], dtype=np.float64),
        dropped_total=np.array([row["dropped_total"] for row in parsed], dtype=np.int64),
        lost={name: np.array([row["lost"][k] for row in parsed], dtype=np.int64) for k, name in enumerate(LOSS_FIELDS)},
        attribution=[row["attribution"] for row in parsed] if has_attribution else None,
        sidecar=_read_sidecar(path),
    )
