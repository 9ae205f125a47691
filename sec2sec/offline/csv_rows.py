"""A user's CSV table (a manifest, Hume-Reaction's `data_info.csv`, a trace) -> its header and its rows, where
one row's fault is that row's problem, never the whole file's.

The file is refused (ValueError, one line naming it) when it cannot be read, when its header is not UTF-8 text,
or when the header names a column twice (the later column's cells would silently replace the earlier one's).
A row is returned with `problem` set, naming the row (and the column where there is one), when it has more
cells than the header has columns (an unquoted comma in a cell shifts every later cell), when a cell holds
bytes that are not UTF-8, or when the csv module cannot parse it (a cell over its field size limit); the
other rows go on.
Rows are numbered by the line they start on (the header is line 1): the number an editor shows, and a
spreadsheet's row number when no cell spans lines. Blank lines are skipped; a short row's missing cells are
empty, and so are the cells under a header cell left empty (a spreadsheet's trailing columns).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

QUOTE_FIX = 'a cell that holds a comma must be quoted ("Smith, J")'


@dataclass(frozen=True)
class CsvRow:
    """One row: the line it starts on, its cells by column name (stripped), and why it cannot be used ("")."""

    number: int
    cells: dict[str, str]
    problem: str = ""


def _not_utf8(text: str) -> bool:
    """True when `text` (decoded with errors="surrogateescape") holds bytes that were not UTF-8 (they decode to
    lone surrogates, which UTF-8 cannot encode)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _header(path: Path, cells: list[str]) -> list[str]:
    header = [c.strip() for c in cells]
    if any(_not_utf8(c) for c in header):
        raise ValueError(f"{path} is not a UTF-8 CSV file (its header holds other bytes); save it as UTF-8 CSV")
    seen: dict[str, int] = {}
    for k, name in enumerate(header, start=1):
        if name and name in seen:
            raise ValueError(
                f"{path}: the header names column {name!r} twice (columns {seen[name]} and {k}); "
                "rename or remove one of them"
            )
        seen[name] = k
    return header


def _row(header: list[str], cells: list[str], number: int, where: str) -> CsvRow:
    """One parsed row -> its CsvRow; a row with a problem keeps the cells it has that are text (so a reader can
    name the clip), under the header's names."""
    here = f"{where} row {number}"
    row = {name: cell.strip() for name, cell in zip(header, cells, strict=False) if name}
    row.update({name: "" for name in header[len(cells) :] if name})
    bad = [name for name, cell in row.items() if _not_utf8(cell)]
    text = {name: cell for name, cell in row.items() if name not in bad}
    if bad:
        return CsvRow(
            number, text, f"{here}, column {bad[0]}: holds bytes that are not UTF-8 text; save the file as UTF-8"
        )
    if len(cells) > len(header):
        return CsvRow(
            number,
            text,
            f"{here}: {len(cells)} cells, but the header has {len(header)} columns ({header[0]} to {header[-1]}); "
            f"{QUOTE_FIX}",
        )
    return CsvRow(number, row)


def read_csv_rows(path: str | Path, where: str) -> tuple[list[str], list[CsvRow]]:
    """The CSV file `path` -> (its header, its rows) (see the module docstring); `where` names the file in a
    row's problem ("manifest.csv" -> "manifest.csv row 5, column path: ..."). An empty file has header []."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror or exc})") from None
    rows: list[CsvRow] = []
    header: list[str] | None = None
    with f:
        reader = csv.reader(f)
        line = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if header is None:
                    raise ValueError(f"{path}: its header is not CSV ({exc}); save the file as CSV") from None
                rows.append(CsvRow(line, {}, f"{where} row {line}: not CSV ({exc})"))
                line = reader.line_num + 1
                continue
            number, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = _header(path, cells)
            else:
                rows.append(_row(header, cells, number, where))
    return header or [], rows
