"""Python warnings as one `warning: ...` line on stderr, for both commands (`sec2sec`, `sec2sec-live`)."""

from __future__ import annotations

import sys


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: object = None,
) -> None:
    """Warnings as one `warning: ...` line on stderr (no file/line noise for users)."""
    print(f"warning: {message}", file=sys.stderr)
