"""Dashboard: pure render over a Snapshot (asserted on exported text), sparkline/bar strings, the --no-ui line,
and the Live wrapper's start/stop (no refresh thread left behind)."""

from __future__ import annotations

import dataclasses
import io
import sys
import threading
import time

import pytest
from rich.console import Console, RenderableType
from rich.live import _RefreshThread

from monitor.dashboard import UNTRAINED, Dashboard, bar, column_widths, plain_line, render, sparkline
from monitor.snapshot import Snapshot
from monitor.sources import SourceStatus
from sec2sec.stream import Estimate

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
LATEST = Estimate(
    window=12,
    outputs={"valence": 0.532, "arousal": 0.611},
    attribution=(0.05, 0.1, 0.2, 0.15, 0.3, 0.2),
    video_ok=True,
    audio_ok=False,
    frames=8,
    audio_coverage=0.5,
    compute_ns=250_000_000,
    gap=0,
    latency_ns=312_400_000,
    dropped_total=3,
)
SOURCES = (
    SourceStatus("camera", running=True, items=1234, dropped=0, detail="640x480 @ 30.0 fps"),
    SourceStatus("microphone", running=False, items=10, dropped=2, detail="pulse 48000 Hz", error="device gone"),
)


def snapshot(**changes: object) -> Snapshot:
    """A two-output snapshot mid-run; keyword arguments override fields."""
    base = Snapshot(
        output_names=("valence", "arousal"),
        latest=LATEST,
        history={"valence": (0.0, 0.5, 1.0), "arousal": (0.25, 0.75)},
        attribution=LATEST.attribution,
        sources=SOURCES,
        windows_done=120,
        windows_dropped=3,
        latency_p50_ms=312.4,
        latency_p99_ms=540.6,
        input_fps=29.8,
        untrained=False,
        pretrained={"video": True, "audio": True},
        title="sec2sec-live — replay talk.mp4",
        elapsed_s=121.0,
        message="",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def text_of(renderable: RenderableType, width: int = 100) -> str:
    """What a terminal of `width` columns shows, as plain text."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def line_with(text: str, needle: str) -> str:
    """The one line of `text` that contains `needle`."""
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, (needle, text)
    return lines[0]


def test_sparkline_exact_strings() -> None:
    assert sparkline([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], 9) == "▁▂▃▄▅▆▇██"
    assert sparkline([0.5, 1.0], 4) == "  ▅█"  # padded on the left: the newest value is always at the right edge
    assert sparkline([0.0, 0.3, 0.9], 2) == "▃█"  # only the newest `width` values
    assert sparkline([-1.0, 2.0, float("nan")], 3) == "▁█ "  # clamped; NaN is a gap
    assert sparkline([], 3) == "   "
    assert sparkline([0.5], 0) == ""
    with pytest.raises(ValueError, match="width"):
        sparkline([0.5], -1)


def test_bar_exact_strings() -> None:
    assert bar(0.5, 10) == "█████     "
    assert bar(1.0, 4) == "████"
    assert bar(0.0, 3) == "   "
    assert bar(0.0625, 2) == "▏ "  # one eighth of one cell
    assert bar(0.55, 10) == "█████▌    "
    assert bar(float("nan"), 3) == "   "
    assert bar(2.0, 3) == "███"


def test_render_shows_outputs_values_bars_and_sparklines() -> None:
    text = text_of(render(snapshot()))
    valence, arousal = line_with(text, "valence"), line_with(text, "arousal")
    assert "0.532" in valence and "0.611" in arousal
    # 96 cells inside the panel: name 7, value 5, bar 21, sparkline 60 -> 0.532 * 21 = 11 1/8 cells
    assert column_widths(96, len("valence")) == (7, 21, 60)
    assert " ███████████▏         " in valence
    assert valence.rstrip(" │").endswith(" ▁▅█") and arousal.rstrip(" │").endswith(" ▃▇")
    assert "last 60 s" in text
    assert "sec2sec-live — replay talk.mp4" in text and "0:02:01" in text and "window 12 (12.0-13.0 s)" in text


def test_render_shows_status_latency_dropped_and_sources() -> None:
    text = text_of(render(snapshot(message="camera queue full: dropped 2 frames")))
    assert "29.8 fps" in text
    assert "120 done" in text and "3 dropped" in text
    assert "p50 312 ms" in text and "p99 541 ms" in text
    assert "window 12: video ok (8 frames) audio -- (50%)" in text
    camera = line_with(text, "camera running")
    assert "1234 items" in camera and "0 dropped" in camera and "640x480 @ 30.0 fps" in camera
    assert "microphone failed" in text and "microphone error: device gone" in text
    footer = line_with(text, "Ctrl-C to stop")
    assert "camera queue full: dropped 2 frames" in footer


def test_render_shows_the_attribution_strip_with_the_newest_second_marked() -> None:
    text = text_of(render(snapshot()))
    assert "attribution over the last 6 s" in text
    # weights / peak 0.3 = 0.17, 0.33, 0.67, 0.5, 1, 0.67 -> eighths 1, 2, 5, 4, 7, 5
    assert "-5 s ▂▃▆▅█▆ ◀ now" in text
    assert "newest 0.200 · peak 0.300 at -1 s" in text


def test_long_attribution_keeps_the_newest_seconds_on_a_narrow_terminal() -> None:
    weights = tuple([0.0] * 99 + [1.0])
    text = text_of(render(snapshot(attribution=weights)), width=60)
    strip = line_with(text, "◀ now")
    assert "…" in strip and "█ ◀ now" in strip and len(strip) <= 60


def test_untrained_banner_and_random_encoders() -> None:
    untrained = text_of(render(snapshot(untrained=True, pretrained={"video": False, "audio": True})))
    assert UNTRAINED.split(":")[0] + ":" in untrained and "outputs are not affect estimates" in untrained
    assert "random (not pretrained) encoder weights: video" in untrained
    trained = text_of(render(snapshot()))
    assert "UNTRAINED" not in trained and "random" not in trained
    random_encoders = text_of(render(snapshot(pretrained={"video": False, "audio": False})))
    assert "UNTRAINED" not in random_encoders
    assert "random (not pretrained) encoder weights: video, audio" in random_encoders


def test_waiting_for_the_first_window() -> None:
    text = text_of(render(snapshot(latest=None, history={}, attribution=(), windows_done=0, latency_p50_ms=None)))
    assert "waiting for the first window" in text
    assert line_with(text, "valence").split()[2] == "--"
    assert "p50 --" in text


def test_no_attention_model_says_so() -> None:
    text = text_of(render(snapshot(attribution=())))
    assert "none (this temporal model has no attention weights)" in text


@pytest.mark.parametrize("names", [("valence",), TRAITS])
def test_narrow_terminal_still_shows_every_output(names: tuple[str, ...]) -> None:
    values = {name: 0.1 + 0.2 * i for i, name in enumerate(names)}
    latest = dataclasses.replace(LATEST, outputs=values)
    history = {name: tuple(j / 59 for j in range(60)) for name in names}
    text = text_of(render(snapshot(output_names=names, latest=latest, history=history)), width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    for name, value in values.items():
        assert f"{value:.3f}" in line_with(text, name[:12])  # long names are cut with an ellipsis
    assert "Ctrl-C to stop" in text


@pytest.mark.parametrize("width", [20, 30, 45, 80, 140, 220])
def test_any_width_renders_within_bounds(width: int) -> None:
    text = text_of(render(snapshot(untrained=True, output_names=TRAITS, latest=None)), width=width)
    assert all(len(line) <= width for line in text.splitlines())


def test_column_widths_fill_the_row_exactly() -> None:
    assert column_widths(120, 7) == (7, 30, 60)
    assert column_widths(94, 7) == (7, 19, 60)
    for width in range(10, 200):
        name, bar_cells, spark = column_widths(width, 17)
        used = name + 1 + 5 + 1 + (bar_cells + 1 if bar_cells else 0) + spark
        assert used <= width and (used == width or spark == 60), width


def test_render_is_pure() -> None:
    state = snapshot()
    assert text_of(render(state)) == text_of(render(state))


def test_plain_line() -> None:
    estimate = dataclasses.replace(LATEST, dropped_total=0, audio_ok=False)
    assert (
        plain_line(estimate, ("valence", "arousal"))
        == "[   12.0 s] valence 0.532 arousal 0.611 | video ok audio -- | 8 frames | latency 312 ms | dropped 0"
    )
    late = dataclasses.replace(estimate, latency_ns=None, gap=2, video_ok=False, audio_ok=True)
    assert plain_line(late, ("arousal",)) == (
        "[   12.0 s] arousal 0.611 | video -- audio ok | 8 frames | latency -- | dropped 0 | gap 2"
    )


def refresh_threads() -> list[threading.Thread]:
    """rich's Live refresh threads still running in this process."""
    return [thread for thread in threading.enumerate() if isinstance(thread, _RefreshThread) and thread.is_alive()]


def test_dashboard_refreshes_and_leaves_no_thread_after_stop() -> None:
    calls: list[float] = []

    def get_snapshot() -> Snapshot:
        calls.append(time.monotonic())
        return snapshot()

    file = io.StringIO()
    dashboard = Dashboard(get_snapshot, Console(file=file, width=100), refresh_per_second=50)
    dashboard.stop()  # safe before start
    dashboard.start()
    dashboard.start()  # a second start does nothing
    assert dashboard.running and len(refresh_threads()) == 1
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3, "rich's refresh thread never asked for a snapshot"
    dashboard.stop()
    assert refresh_threads() == []
    dashboard.stop()
    assert not dashboard.running
    assert "valence" in file.getvalue() and "Ctrl-C to stop" in file.getvalue()  # the last frame stays


def test_dashboard_without_auto_refresh_draws_on_request() -> None:
    console = Console(record=True, file=io.StringIO(), width=100)
    dashboard = Dashboard(lambda: snapshot(message="hello"), console, auto_refresh=False)
    dashboard.start()
    assert refresh_threads() == []
    dashboard.refresh()
    dashboard.stop()
    assert "hello" in console.export_text()


def test_dashboard_shows_a_failing_snapshot_instead_of_dying() -> None:
    def broken() -> Snapshot:
        raise RuntimeError("pipeline lock poisoned")

    console = Console(record=True, file=io.StringIO(), width=100)
    dashboard = Dashboard(broken, console, auto_refresh=False)
    dashboard.start()
    dashboard.stop()
    assert "dashboard cannot draw: RuntimeError: pipeline lock poisoned" in console.export_text()
    assert dashboard.last_error == "RuntimeError: pipeline lock poisoned"


class StoppedTerminal(io.StringIO):
    """A terminal that stops scrolling (Ctrl-S, a stalled ssh session): once `stopped` is set, every write
    blocks until `resumed` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped, self.resumed, self.blocked = threading.Event(), threading.Event(), threading.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.stopped.is_set():
            self.blocked.set()
            self.resumed.wait()
        return super().write(text)


def test_a_terminal_that_stops_scrolling_cannot_hold_the_dashboard() -> None:
    """rich's refresh thread blocks in a write while holding its lock: stop() still returns within its bound
    (the display is left to its threads, named in `abandoned`), and stderr was never redirected into it."""
    terminal = StoppedTerminal()
    dashboard = Dashboard(snapshot, Console(file=terminal, force_terminal=True, width=100), refresh_per_second=20)
    real_stderr = sys.stderr
    dashboard.start()
    try:
        assert sys.stderr is real_stderr  # warnings go to the real stderr, not through the stuck console
        terminal.stopped.set()
        assert terminal.blocked.wait(5), "the refresh thread never wrote"
        stopper = threading.Thread(target=dashboard.stop, daemon=True)
        started = time.monotonic()
        stopper.start()
        stopper.join(20)
        assert not stopper.is_alive(), "Dashboard.stop() hung on a stopped terminal"
        assert time.monotonic() - started < 3 * Dashboard.JOIN_TIMEOUT_S
        assert dashboard.abandoned == ["dashboard stop"] and not dashboard.running
    finally:
        terminal.resumed.set()
    assert sys.stderr is real_stderr


def test_a_stopped_terminal_cannot_hold_the_dashboard_start() -> None:
    terminal = StoppedTerminal()
    terminal.stopped.set()
    dashboard = Dashboard(snapshot, Console(file=terminal, force_terminal=True, width=100))
    starter = threading.Thread(target=dashboard.start, daemon=True)
    starter.start()
    starter.join(20)
    try:
        assert not starter.is_alive(), "Dashboard.start() hung on a stopped terminal"
        assert dashboard.abandoned == ["dashboard start"]
    finally:
        terminal.resumed.set()
        dashboard.stop()


def test_dashboard_refuses_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="refresh_per_second"):
        Dashboard(snapshot, refresh_per_second=0)
