"""The session plot: a session CSV written by `sec2sec-live --csv` (and its `<csv>.json` sidecar) -> one PNG,
drawn by `sec2sec-live plot SESSION.csv`.

Panels, top to bottom: every output over time, with the seconds where video or audio was missing shaded and
windows that got no estimate (dropped) greyed; the attention-LSTM's per-second attribution as a heat strip
(only when the CSV has it); latency per window and cumulative drops. The title says where the numbers came
from: the source, the checkpoint (or UNTRAINED) and whether the encoders were pretrained.

The CSV is read by `monitor.session_csv` (the format's one home, beside the recorder that writes it); this
module only draws. matplotlib is imported inside the functions that draw, so importing this module is light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from monitor.session_csv import Session, sidecar_path

DEFAULT_SIZE = (1600, 900)  # pixels
DPI = 100
MIN_PIXELS = 320
ATTRIBUTION_TITLE = "attention weight on each earlier second / an even split (1 = even; grey: not yet seen)"


def default_output(path: str | Path) -> Path:
    """SESSION.csv -> SESSION.png beside it."""
    path = Path(path)
    return path.with_suffix(".png")


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
        return first + f"no sidecar {sidecar_path(session.path).name}: source and model unknown"
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
        ended = summary.get("ended_by", "?") + (f": {summary['message']}" if summary.get("message") else "")
        model += (
            f"\n{summary.get('windows', '?')} windows, {summary.get('dropped_total', '?')} dropped{latency}; "
            f"ended by {ended}"
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
