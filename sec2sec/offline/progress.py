"""The progress bar the offline commands share: description, bar, done / total, a free-text note, times."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console, remaining: bool = True) -> Progress:
    """A rich Progress whose tasks carry a `note` field; `remaining` adds the estimated time left."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, *([TimeRemainingColumn()] if remaining else []), console=console)
