"""Printing a benchmark's table as aligned text or, with --markdown, as a Markdown table (for docs/)."""

from __future__ import annotations

import platform
from pathlib import Path


def print_table(headers: list[str], rows: list[list[str]], markdown: bool) -> None:
    """Rows of cells (already formatted) under `headers`: numbers right-aligned in text, pipes in Markdown."""
    if markdown:  # blank lines around it: a Markdown table cannot follow a paragraph line directly
        print()
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" for _ in headers) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))

    print(line(headers).rstrip())
    for row in rows:
        print(line(row).rstrip())


def _is_number(cell: str) -> bool:
    core = cell.strip().removesuffix("%").removesuffix("x").replace(".", "", 1).lstrip("-")
    return core.isdigit() or cell.strip() == "-"


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
