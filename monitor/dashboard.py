"""The terminal dashboard: pure render functions over an immutable Snapshot, shown by rich's Live.

The pipeline builds a `Snapshot` (everything on screen, nothing else); `render(snapshot)` turns it into a rich
renderable made of named regions (banner, header, outputs, attribution, status, footer) and does no I/O;
`Dashboard` asks for a fresh snapshot at every refresh through `rich.live.Live(get_renderable=...)`.
`plain_line` is the one-line text form for `--no-ui`.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from monitor.queues import call_with_deadline
from monitor.snapshot import HISTORY_SECONDS, Snapshot

if TYPE_CHECKING:
    from monitor.run_end import RunEnd
    from monitor.sources import SourceStatus
    from sec2sec.stream import Estimate

BLOCKS = "▁▂▃▄▅▆▇█"  # sparkline levels, lowest to highest
EIGHTHS = " ▏▎▍▌▋▊▉"  # partial cells of a horizontal bar, 0/8 to 7/8
REGIONS = ("banner", "header", "outputs", "attribution", "status", "footer")
STOP_HINT = "Ctrl-C to stop"
WAITING = "waiting for the first window…"
UNTRAINED = "UNTRAINED MODEL: outputs are not affect estimates (no trained checkpoint, random weights)"


def level(value: float) -> str:
    """One sparkline character for a value in [0, 1]: eight equal bins, [0, 1/8) -> ▁ ... [7/8, 1] -> █.
    Values outside [0, 1] are clamped; NaN is a blank."""
    if math.isnan(value):
        return " "
    return BLOCKS[min(len(BLOCKS) - 1, max(0, int(value * len(BLOCKS))))]


def sparkline(values: Sequence[float], width: int) -> str:
    """The last `width` values as block characters, newest on the right, left-padded with spaces to
    exactly `width` characters."""
    if width < 0:
        raise ValueError(f"sparkline width = {width}; use 0 or more characters")
    shown = list(values)[-width:] if width else []
    return " " * (width - len(shown)) + "".join(level(value) for value in shown)


def bar(value: float, width: int) -> str:
    """A horizontal bar for a value in [0, 1], `width` cells, in eighths of a cell; blank for NaN."""
    if width <= 0:
        return ""
    if math.isnan(value):
        return " " * width
    eighths = round(min(1.0, max(0.0, value)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (EIGHTHS[part] if part else "")
    return text.ljust(width, " " if full < width else "█")[:width]


def format_duration(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_ms(value: float | None) -> str:
    """Milliseconds without decimals, or -- when unknown."""
    return "--" if value is None or math.isnan(value) else f"{value:.0f} ms"


def column_widths(width: int, name_width: int) -> tuple[int, int, int]:
    """Split `width` cells into (name, bar, sparkline) widths for the outputs table; the value column is 5 cells
    and each column is separated by one space. The sparkline gets up to 60 cells first, the bar 10 to 30; on a
    very narrow terminal the bar goes, then the sparkline shrinks."""
    name = max(1, min(name_width, 16, width // 4))
    rest = width - name - 5 - 3
    if rest < 18:
        return name, 0, max(0, rest + 1)
    bar_cells = max(10, min(30, rest - HISTORY_SECONDS))
    return name, bar_cells, min(HISTORY_SECONDS, rest - bar_cells)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis, or padded with spaces to `width`."""
    if width <= 0:
        return ""
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


class _OutputsTable:
    """Name, value, bar and sparkline per output, laid out for the width it is given (pure; no wrapping)."""

    def __init__(
        self, names: Sequence[str], values: Sequence[float | None], history: Sequence[Sequence[float]]
    ) -> None:
        self.names, self.values, self.history = tuple(names), tuple(values), tuple(history)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(20, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        name_width = max([len("output"), *(len(name) for name in self.names)])
        name_cells, bar_cells, spark_cells = column_widths(options.max_width, name_width)
        header = Text(f"{clip('output', name_cells)} {'value':>5} ", style="bold", no_wrap=True)
        if bar_cells:
            header.append(clip("0 … 1", bar_cells) + " ")
        header.append(clip(f"last {spark_cells} s", spark_cells))
        yield header
        for name, value, history in zip(self.names, self.values, self.history, strict=True):
            number = "--" if value is None else f"{value:.3f}"
            row = Text(clip(name, name_cells), style="bold", no_wrap=True)
            row.append(f" {number:>5} ")
            if bar_cells:
                row.append(bar(math.nan if value is None else value, bar_cells), style="green")
                row.append(" ")
            row.append(sparkline(history, spark_cells), style="cyan")
            yield row


class _Strip:
    """The attribution strip: one block per second, scaled to the peak second, the newest second marked.
    When there are more seconds than columns, the oldest are cut and an ellipsis says so."""

    MARK = "◀ now"

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = tuple(weights)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = len(f"-{len(self.weights)} s ") + len(self.weights) + len(self.MARK) + 2
        return Measurement(min(width, 20), width).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        peak = max(self.weights)
        scaled = [weight / peak if peak > 0 else 0.0 for weight in self.weights]
        room = max(2, options.max_width - len(f"-{len(scaled)} s ") - len(self.MARK) - 1)
        shown = len(scaled) if len(scaled) <= room else room - 1  # one cell for the ellipsis
        blocks = sparkline(scaled, shown)
        text = Text(f"-{shown - 1} s ", style="dim", no_wrap=True)
        if shown < len(scaled):
            text.append("…", style="dim")
        text.append(blocks[:-1], style="magenta")
        text.append(blocks[-1:], style="bold reverse magenta")
        text.append(" " + self.MARK, style="bold")
        yield text


def render_banner(snapshot: Snapshot) -> RenderableType | None:
    """Red banner for an untrained model; a yellow note for encoders running on random weights; else None."""
    random_encoders = [name for name, pretrained in snapshot.pretrained.items() if not pretrained]
    note = f"random (not pretrained) encoder weights: {', '.join(random_encoders)}" if random_encoders else ""
    if snapshot.untrained:
        body = Text(UNTRAINED, style="bold")
        if note:
            body.append("\n" + note)
        return Panel(body, style="bold white on red", border_style="red")
    if note:
        return Text(note, style="yellow")
    return None


def render_header(snapshot: Snapshot) -> RenderableType:
    """Title on the left; elapsed time and the newest window on the right."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    latest = snapshot.latest
    where = WAITING if latest is None else f"window {latest.window} ({latest.start_s:.1f}-{latest.end_s:.1f} s)"
    grid.add_row(Text(snapshot.title, style="bold"), Text(f"{format_duration(snapshot.elapsed_s)}  {where}"))
    return grid


def render_outputs(snapshot: Snapshot) -> RenderableType:
    """One row per output: name, value (3 decimals), bar over [0, 1], and the last 60 s as a sparkline."""
    latest = snapshot.latest
    values = [None if latest is None else latest.outputs.get(name) for name in snapshot.output_names]
    history = [snapshot.history.get(name, ()) for name in snapshot.output_names]
    table = _OutputsTable(snapshot.output_names, [None if v is None else float(v) for v in values], history)
    subtitle = WAITING if latest is None else None
    return Panel(table, title="outputs", title_align="left", subtitle=subtitle, subtitle_align="left")


def render_attribution(snapshot: Snapshot) -> RenderableType:
    """The per-second attribution strip over the horizon, with the newest second's weight and the peak."""
    weights = snapshot.attribution
    if not weights:
        reason = WAITING if snapshot.latest is None else "none (this temporal model has no attention weights)"
        return Panel(Text(reason, style="dim"), title="attribution", title_align="left")
    peak_at = max(range(len(weights)), key=weights.__getitem__)
    numbers = Text(
        f"newest {weights[-1]:.3f} · peak {weights[peak_at]:.3f} at -{len(weights) - 1 - peak_at} s", style="dim"
    )
    title = f"attribution over the last {len(weights)} s (oldest → newest)"
    return Panel(Group(_Strip(weights), numbers), title=title, title_align="left")


def source_lines(sources: Iterable[SourceStatus]) -> list[Text]:
    """One line per source (state, counters, detail), plus a red line for its error if it has one."""
    lines: list[Text] = []
    for source in sources:
        failed = bool(source.error)
        state, style = ("failed", "red") if failed else (("running", "green") if source.running else ("stopped", "dim"))
        line = Text("● ", style=style)
        line.append(f"{source.name} {state}", style="bold")
        line.append(f"  {source.items} items  {source.dropped} dropped")
        if source.detail:
            line.append(f"  {source.detail}", style="dim")
        lines.append(line)
        if failed:
            lines.append(Text(f"  {source.name} error: {source.error}", style="bold red"))
    return lines


def latest_line(latest: Estimate | None) -> Text:
    """The newest window's inputs: video/audio flags, frames, audio coverage, gap."""
    if latest is None:
        return Text(WAITING, style="dim")
    text = Text(f"window {latest.window}: ")
    text.append("video ok" if latest.video_ok else "video --", style="green" if latest.video_ok else "red")
    text.append(f" ({latest.frames} frames) ")
    text.append("audio ok" if latest.audio_ok else "audio --", style="green" if latest.audio_ok else "red")
    text.append(f" ({latest.audio_coverage:.0%})")
    if latest.gap:
        text.append(f"  {latest.gap} missing before it", style="yellow")
    return text


def render_status(snapshot: Snapshot) -> RenderableType:
    """Input rate, window counts, latency percentiles, the newest window's inputs, one line per source."""
    fps = "--" if snapshot.input_fps is None else f"{snapshot.input_fps:.1f} fps"
    windows = Text(f"{snapshot.windows_done} done  ")
    windows.append(f"{snapshot.windows_dropped} dropped", style="yellow" if snapshot.windows_dropped else "")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("input", fps)
    grid.add_row("windows", windows)
    grid.add_row("latency", f"p50 {format_ms(snapshot.latency_p50_ms)}  p99 {format_ms(snapshot.latency_p99_ms)}")
    grid.add_row("latest", latest_line(snapshot.latest))
    lines = source_lines(snapshot.sources) or [Text("no sources", style="dim")]
    return Panel(Group(grid, *lines), title="status", title_align="left")


def render_footer(snapshot: Snapshot) -> RenderableType:
    """The last warning or error on the left, the stop hint on the right."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1, overflow="fold")
    grid.add_column(justify="right", no_wrap=True)
    grid.add_row(Text(snapshot.message, style="yellow"), Text(STOP_HINT, style="dim"))
    return grid


def render_regions(snapshot: Snapshot) -> dict[str, RenderableType]:
    """The named regions, top to bottom (a region with nothing to show, like the banner of a trained model,
    is left out)."""
    regions: dict[str, RenderableType | None] = {
        "banner": render_banner(snapshot),
        "header": render_header(snapshot),
        "outputs": render_outputs(snapshot),
        "attribution": render_attribution(snapshot),
        "status": render_status(snapshot),
        "footer": render_footer(snapshot),
    }
    return {name: region for name, region in regions.items() if region is not None}


def render(snapshot: Snapshot) -> RenderableType:
    """The whole dashboard for one snapshot. Pure: no I/O, no clock, no state; the width comes from the console
    it is printed on (narrow terminals get shorter sparklines and bars, never a crash)."""
    return Group(*render_regions(snapshot).values())


def plain_line(estimate: Estimate, output_names: Sequence[str]) -> str:
    """One line per window for `--no-ui`, e.g.
    `[   12.0 s] valence 0.532 arousal 0.611 | video ok audio -- | 8 frames | latency 312 ms | dropped 0`."""
    values = " ".join(f"{name} {estimate.outputs.get(name, math.nan):.3f}" for name in output_names)
    flags = f"video {'ok' if estimate.video_ok else '--'} audio {'ok' if estimate.audio_ok else '--'}"
    latency = "--" if estimate.latency_ns is None else f"{estimate.latency_ns / 1e6:.0f} ms"
    parts = [
        f"[{estimate.start_s:7.1f} s] {values}",
        flags,
        f"{estimate.frames} frames",
        f"latency {latency}",
        f"dropped {estimate.dropped_total}",
    ]
    if estimate.gap:
        parts.append(f"gap {estimate.gap}")
    return " | ".join(parts)


class PlainPrinter:
    """`--no-ui`: one line per window on stdout."""

    name = "stdout"

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def write(self, estimate: Estimate) -> None:
        print(plain_line(estimate, self.names), flush=True)

    def close(self, end: RunEnd) -> None:
        sys.stdout.flush()


class Dashboard:
    """rich Live over `render(get_snapshot())`, redrawn `refresh_per_second` times a second by rich's thread.

    `stop()` joins that thread (rich's own `Live.stop` only signals it), so no thread is left behind. Do not call
    `stop()` while holding a lock that `get_snapshot` takes: the refresh thread may be waiting on it.

    A terminal that stops reading (Ctrl-S, a stalled ssh session, a pipe nobody reads) blocks rich inside a
    `write` while it holds its lock; `start()` and `stop()` therefore run with a deadline (`JOIN_TIMEOUT_S`)
    and leave a stuck display to its threads (named in `abandoned`) instead of waiting for ever. Rich does not
    redirect stdout or stderr: warnings reach the real stderr, not this console."""

    JOIN_TIMEOUT_S = 2.0

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot],
        console: Console | None = None,
        refresh_per_second: float = 4.0,
        *,
        auto_refresh: bool = True,
    ) -> None:
        if refresh_per_second <= 0:
            raise ValueError(f"refresh_per_second = {refresh_per_second}; use a positive rate, e.g. 4")
        self.get_snapshot = get_snapshot
        self.console = console if console is not None else Console()
        self.refresh_per_second = refresh_per_second
        self.auto_refresh = auto_refresh
        self.last_error: str = ""
        self.abandoned: list[str] = []  # display threads left blocked in a write (a terminal that stopped reading)
        self._live: Live | None = None
        self._lock = threading.Lock()

    def renderable(self) -> RenderableType:
        """The current frame; if building the snapshot fails, a red line with the error instead of a dead display."""
        try:
            return render(self.get_snapshot())
        except Exception as error:  # noqa: BLE001 - a failing snapshot must not kill rich's refresh thread
            self.last_error = f"{type(error).__name__}: {error}"
            return Text(f"dashboard cannot draw: {self.last_error}", style="bold red")

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._live is not None

    def start(self) -> None:
        """Start the live display (does nothing if already started); bounded, see the class docstring."""
        with self._lock:
            if self._live is not None:
                return
            live = Live(
                get_renderable=self.renderable,
                console=self.console,
                auto_refresh=self.auto_refresh,
                refresh_per_second=self.refresh_per_second,
                screen=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live = live
        returned, _ = call_with_deadline(live.start, self.JOIN_TIMEOUT_S, "dashboard start")
        if not returned:
            self.abandoned.append("dashboard start")

    def refresh(self) -> None:
        """Redraw now (for auto_refresh=False); does nothing when not started."""
        live = self._live
        if live is not None:
            live.refresh()

    def stop(self) -> None:
        """Stop the display, leave the last frame on screen and join rich's refresh thread. Idempotent; safe
        before start(); bounded: returns within about 2 x `JOIN_TIMEOUT_S` even when the terminal is stuck."""
        with self._lock:
            live, self._live = self._live, None
        if live is None:
            return
        thread = getattr(live, "_refresh_thread", None)  # rich's Live.stop() signals this thread but does not join it
        returned, _ = call_with_deadline(live.stop, self.JOIN_TIMEOUT_S, "dashboard stop")
        if not returned:
            self.abandoned.append("dashboard stop")
            return
        if isinstance(thread, threading.Thread) and thread is not threading.current_thread():
            thread.join(self.JOIN_TIMEOUT_S)
            if thread.is_alive():
                self.abandoned.append(thread.name)
