"""`sec2sec plot`: a session CSV written by `sec2sec-live --csv` (and its `<csv>.json` sidecar) -> one PNG.

Panels, top to bottom: every output over time, with the seconds where video or audio was missing shaded and
windows that got no estimate (dropped) greyed; the attention-LSTM's per-second attribution as a heat strip
(only when the CSV has it); latency per window and cumulative drops. The title says where the numbers came
from: the source, the checkpoint (or UNTRAINED) and whether the encoders were pretrained.

The CSV is read by its column names (the layout `monitor.recorders.CsvRecorder` writes): this module does not
import `monitor` (imports go monitor -> sec2sec only).
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

from sec2sec.rows import LOSS_COLUMNS, ROW_COLUMNS  # LOSS_COLUMNS are optional: older CSVs lack them

REQUIRED_COLUMNS = ("window", "start_s", "end_s", "video_ok", "audio_ok", "latency_ms", "dropped_total")
DEFAULT_SIZE = (1600, 900)  # pixels
DPI = 100
MIN_PIXELS = 320
ATTRIBUTION_TITLE = "attention weight on each earlier second / an even split (1 = even; grey: not yet seen)"
FIX = "give the CSV that `sec2sec-live --csv PATH` wrote"


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
    lost: dict[str, np.ndarray]  # LOSS_COLUMNS -> (n,) int64 input each window lost (zeros when not recorded)
    attribution: list[tuple[float, ...]] | None  # per row, oldest second first; None when the CSV has none
    sidecar: dict[str, Any] | None  # None when `<csv>.json` is missing or unreadable


def sidecar_of(path: Path) -> Path:
    """talk.csv -> talk.csv.json (the recorder's naming)."""
    return path.with_name(path.name + ".json")


def default_output(path: str | Path) -> Path:
    """SESSION.csv -> SESSION.png beside it."""
    path = Path(path)
    return path.with_suffix(".png")


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
        "outputs": [float(cell[name]) for name in outputs],
        "video_ok": cell["video_ok"] == "1",
        "audio_ok": cell["audio_ok"] == "1",
        "latency_ms": float(cell["latency_ms"]) if cell["latency_ms"] else math.nan,
        "dropped_total": int(cell["dropped_total"]),
        "lost": [int(cell[name]) if cell.get(name) else 0 for name in LOSS_COLUMNS],
        "attribution": tuple(float(w) for w in attribution.split(";")) if attribution else (),
    }


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar dict, or None (with a warning when it exists but cannot be read)."""
    side = sidecar_of(path)
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
    outputs = [name for name in header if name not in ROW_COLUMNS]
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
        lost={
            name: np.array([row["lost"][k] for row in parsed], dtype=np.int64) for k, name in enumerate(LOSS_COLUMNS)
        },
        attribution=[row["attribution"] for row in parsed] if has_attribution else None,
        sidecar=_read_sidecar(path),
    )


def describe_source(source: Any) -> str:
    """The sidecar's "source" in words."""
    if not isinstance(source, dict):
        return "unknown source"
    if source.get("replay"):
        speed = source.get("speed", 1.0)
        pace = f", {speed:g}x" if isinstance(speed, (int, float)) and speed != 1 else ""
        return f"replay of {source['replay']} ({source.get('clock', '?')} clock{pace})"
    if "camera" in source:
        microphone = source.get("microphone")
        return f"camera {source['camera']} + " + (f"microphone {microphone}" if microphone else "no microphone")
    return "unknown source"


def title_of(session: Session) -> str:
    """Two lines: the file and source; the checkpoint (or UNTRAINED), encoders and the run's summary."""
    side = session.sidecar
    first = f"{session.path.name}: "
    if side is None:
        return first + f"no sidecar {sidecar_of(session.path).name}: source and model unknown"
    first += describe_source(side.get("source"))
    if side.get("untrained", side.get("checkpoint") is None):
        model = "UNTRAINED model (random heads): not affect estimates"
    else:
        model = f"checkpoint {side.get('checkpoint')}"
    pretrained = side.get("pretrained_encoders")
    if isinstance(pretrained, dict) and pretrained:
        encoders = ", ".join(f"{name} {'pretrained' if flag else 'RANDOM'}" for name, flag in pretrained.items())
        model += f"; encoders: {encoders}"
    summary = side.get("summary")
    if isinstance(summary, dict):
        p50, p99 = summary.get("latency_p50_ms"), summary.get("latency_p99_ms")
        latency = f", latency p50 {p50:.0f} / p99 {p99:.0f} ms" if p50 is not None and p99 is not None else ""
        model += (
            f"\n{summary.get('windows', '?')} windows, {summary.get('dropped_total', '?')} dropped{latency}; "
            f"ended by {summary.get('ended_by', '?')}"
        )
    else:
        model += "\nno summary in the sidecar: the run did not close cleanly"
    return f"{first}\n{model}"


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index pairs of the maximal runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def with_breaks(session: Session, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) at window centres with a NaN between windows that are not adjacent, so lines break at gaps."""
    centres = (session.start_s + session.end_s) / 2
    gap_after = np.flatnonzero(np.diff(session.window) != 1)
    x = np.insert(centres, gap_after + 1, np.nan)
    y = np.insert(values.astype(np.float64), gap_after + 1, np.nan)
    return x, y


def attribution_grid(session: Session) -> np.ndarray:
    """(H, n) attribution relative to an even split: row j is the weight window i gave to the second j seconds
    before it (0 = itself) times the number of seconds it attended over, so 1 means an even share and the
    shrinking 1/t of a history that is still filling up does not dominate. NaN where the second was not in the
    window's history; H is the longest attribution in the file."""
    if session.attribution is None:
        raise ValueError(f"{session.path.name} has no attribution column values (only attention models write them)")
    horizon = max(len(weights) for weights in session.attribution)
    grid = np.full((horizon, len(session.attribution)), np.nan)
    for column, weights in enumerate(session.attribution):
        if weights:
            grid[: len(weights), column] = np.asarray(weights[::-1]) * len(weights)
    return grid


def _shade_missing(ax: Any, session: Session) -> list[Any]:
    """Shade seconds without video / without audio / with no estimate at all; legend handles for those present."""
    from matplotlib.patches import Patch

    handles = []
    styles = (
        (~session.video_ok, "no video", "#e4572e"),
        (~session.audio_ok, "no audio", "#1f77b4"),
    )
    for missing, label, colour in styles:
        spans = runs(missing)
        for first, last in spans:
            ax.axvspan(session.start_s[first], session.end_s[last], color=colour, alpha=0.18, lw=0)
        if spans:
            handles.append(Patch(color=colour, alpha=0.3, label=label))
    gaps = np.flatnonzero(np.diff(session.window) > 1)
    for k in gaps:
        ax.axvspan(session.end_s[k], session.start_s[k + 1], color="0.55", alpha=0.35, lw=0, hatch="//")
    if len(gaps):
        handles.append(Patch(facecolor="0.55", alpha=0.5, hatch="//", label="dropped"))
    return handles


def _time_axis(ax: Any, span_s: float) -> None:
    """Seconds for sessions up to ten minutes; beyond, h:mm:ss at whole minutes (at most ~10 ticks)."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    if span_s <= 600:
        ax.set_xlabel("time since the start (s)")
        return
    step = next((s for s in (60, 120, 300, 600, 900, 1800, 3600, 7200) if span_s / s <= 10), 3600 * 4)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda s, _: f"{int(s) // 3600}:{int(s) % 3600 // 60:02d}:00"))
    ax.set_xlabel("time since the start (h:mm:ss)")


def plot_session(session: Session, out: str | Path, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Render `session` to a PNG of exactly `size` (width, height) pixels at `out`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(
            f"cannot write {str(out)!r}: directory {str(out.parent)!r} does not exist; create it or use -o"
        )
    width, height = size
    if min(width, height) < MIN_PIXELS:
        raise ValueError(f"picture size {width}x{height} is too small; use at least {MIN_PIXELS}x{MIN_PIXELS}")
    has_attribution = session.attribution is not None
    ratios = [3.0, 1.1, 1.5] if has_attribution else [3.0, 1.5]
    with plt.rc_context({"font.size": 11, "axes.titlesize": 11, "axes.spines.top": False}):
        fig, axes = plt.subplots(
            len(ratios), 1, sharex=True, figsize=(width / DPI, height / DPI), dpi=DPI, height_ratios=ratios
        )
        try:
            fig.subplots_adjust(left=0.06, right=0.87, top=0.88, bottom=0.08, hspace=0.12)
            fig.suptitle(title_of(session), x=0.06, ha="left", fontsize=12)
            _plot_outputs(axes[0], session)
            if has_attribution:
                _plot_attribution(axes[1], session)
            _plot_latency(axes[-1], session)
            span = float(session.end_s.max() - session.start_s.min())
            axes[-1].set_xlim(session.start_s.min(), session.end_s.max())
            _time_axis(axes[-1], span)
            try:
                fig.savefig(out, dpi=DPI)
            except OSError as error:
                raise ValueError(f"cannot write {str(out)!r}: {error.strerror or error}; use -o elsewhere") from error
        finally:
            plt.close(fig)
    return out


def _plot_outputs(ax: Any, session: Session) -> None:
    handles = _shade_missing(ax, session)
    for name, values in session.outputs.items():
        x, y = with_breaks(session, values)
        ax.plot(x, y, marker="o", markersize=3 if len(values) <= 120 else 0, lw=1.6, label=name)
    values = np.concatenate(list(session.outputs.values()))
    values = values[np.isfinite(values)]
    if values.size and np.all((values >= 0) & (values <= 1)):  # sigmoid outputs: the whole [0, 1] scale
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_ylabel("output")
    lines = ax.get_lines()[: len(session.outputs)]
    ax.legend(handles=[*lines, *handles], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def _plot_attribution(ax: Any, session: Session) -> None:
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    grid = attribution_grid(session)
    horizon = grid.shape[0]
    # Columns on the full window range, so dropped windows stay blank and the x axis stays in seconds.
    first, last = int(session.window.min()), int(session.window.max())
    full = np.full((horizon, last - first + 1), np.nan)
    full[:, session.window - first] = grid
    top = max(2.0, float(np.nanmax(grid)))
    image = ax.imshow(
        full,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=colormaps["RdBu_r"].with_extremes(bad="0.72"),
        norm=TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=top),
        extent=(float(session.start_s.min()), float(session.end_s.max()), -0.5, horizon - 0.5),
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    ax.set_ylabel("seconds\nback")
    ax.set_title(ATTRIBUTION_TITLE, loc="left", fontsize=10)
    bar = ax.inset_axes((1.01, 0.0, 0.015, 1.0))
    ax.figure.colorbar(image, cax=bar, label="weight / even share")


def _plot_latency(ax: Any, session: Session) -> None:
    x, y = with_breaks(session, session.latency_ms)
    (latency,) = ax.plot(x, y, color="#2a9d8f", lw=1.4, marker="." if len(x) <= 300 else None, label="latency (ms)")
    ax.set_ylabel("latency (ms)")
    finite = session.latency_ms[np.isfinite(session.latency_ms)]
    ax.set_ylim(0, 1.4 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0)  # room for the legend
    ax.grid(axis="y", alpha=0.3)
    drops = ax.twinx()
    (dropped,) = drops.step(
        np.append(session.start_s, session.end_s[-1]),
        np.append(session.dropped_total, session.dropped_total[-1]),
        where="post",
        color="#c1121f",
        lw=1.4,
        label="windows dropped (cumulative)",
    )
    drops.set_ylabel("windows dropped")
    drops.set_ylim(0, max(1, int(session.dropped_total.max())) * 1.4)
    drops.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(handles=[latency, dropped], loc="upper left", ncol=2, framealpha=0.85)
