"""`--dataset manifest`: the user's own clips, listed in one CSV file.

Columns (header names; order free, extra columns ignored):
- `path` (required): the clip's file, relative to the CSV's folder (or absolute);
- one column per output of the config (`[model.heads] outputs`), holding the clip's label: a score in
  [0, 1] for `task = "regression"`, any number for `task = "binary"` (made 0/1 by `train.label_threshold`);
  a cell may be empty when the row has a trace (the clip label is then the trace's mean);
- `group` (optional): clips of one group (a person, a session) always land in the same split; default: the
  clip is its own group;
- `split` (optional): `train`, `validation` (or `val`) or `test` pins the clip (and its group); empty: the
  group is assigned by a seeded group-disjoint split (70 / 10 / 20 % of the clips, `--split official`);
- `trace` (optional): a per-second label CSV for the clip, relative to the manifest (see `traces`).

A row with a problem (more cells than the header has columns, a cell that is not UTF-8, a missing file, a
path that runs into a loop of symbolic links, a label that is no number or outside the range, an unknown split
name, a group pinned to two splits, a bad trace or one that runs far past its clip, a file already listed on an
earlier row, good or bad, however its path is spelt) is returned with its `problem` set, naming the row and the
column: extraction lists it beside the unreadable clips and goes on with the others. A file listed twice is
found by what it is (device and inode: `sub/../a.mp4`, an absolute path and a link to it are one file); the
later row is the problem, and the earlier one too when the two rows give other labels or pin other splits
(which one is right cannot be told). A header that names a column twice is refused (see `csv_rows`).
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sec2sec.config import HeadsConfig
from sec2sec.media import file_duration_ns
from sec2sec.offline.csv_rows import CsvRow, read_csv_rows
from sec2sec.offline.records import ClipRecord, film_split
from sec2sec.offline.traces import check_trace_range, read_trace, trace_mean

MANIFEST = "manifest.csv"
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
FileId = tuple[int, int]  # (st_dev, st_ino): one file, however its path is spelt


def _manifest_path(root: Path) -> Path:
    path = root / MANIFEST if root.is_dir() else root
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the manifest CSV (or its folder, holding {MANIFEST}) as --root")
    return path


def _read_rows(path: Path, outputs: Sequence[str]) -> list[CsvRow]:
    header, rows = read_csv_rows(path, path.name)
    if "path" not in header:
        raise ValueError(f"{path}: the header {header} has no `path` column; add one (clip files relative to it)")
    missing = [c for c in outputs if c not in header]
    if missing and "trace" not in header:
        raise ValueError(
            f"{path}: the header lacks label column(s) {', '.join(missing)} named by [model.heads] outputs; "
            "add them, or set outputs to the manifest's label columns"
        )
    return rows


def _file(base: Path, given: str, here: str, column: str) -> tuple[Path, FileId]:
    """The regular file a cell names (relative to the manifest's folder, or absolute) and its identity; a
    ValueError naming the row and the column when it is missing, not a file, or cannot be reached."""
    at = f"{here}, column {column}:"
    loop = f"{at} {given} runs into a loop of symbolic links; link the file itself"
    path = Path(given) if Path(given).is_absolute() else base / given
    try:
        path = path.resolve()
        info = os.stat(path)
    except RuntimeError:  # Path.resolve() on a loop of symbolic links (Python 3.11; 3.13 raises OSError)
        raise ValueError(loop) from None
    except ValueError:  # a NUL character
        raise ValueError(f"{at} {given!r} holds a NUL character; give the file's path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(loop) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ValueError(f"{at} {path} does not exist") from None
        raise ValueError(f"{at} {given} cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{at} {path} is not a file (a folder or a device); give a clip's file")
    return (path if not Path(given).is_absolute() else Path(given)), (info.st_dev, info.st_ino)


def file_id(base: Path, given: str) -> FileId | None:
    """The identity of the file a path cell names, None when it names none."""
    try:
        return _file(base, given, "", "path")[1] if given else None
    except ValueError:
        return None


def _row_trace(base: Path, given: str, clip: Path, heads: HeadsConfig, here: str) -> dict[str, list[float]]:
    """The row's trace, read against its clip's duration (see `traces`)."""
    trace_path, _ = _file(base, given, here, "trace")
    try:
        clip_ns = file_duration_ns(clip)
    except ValueError as exc:
        raise ValueError(f"{here}, column path: {exc}") from None
    if clip_ns <= 0:
        raise ValueError(f"{here}, column path: {clip} has no timed frames or samples, so its trace cannot be placed")
    try:
        trace = read_trace(trace_path, heads.outputs, clip_ns)
        if heads.task == "regression":
            check_trace_range(trace_path, trace, 0.0, 1.0)
    except ValueError as exc:
        raise ValueError(f"{here}, column trace: {exc}") from None
    return trace


def _row_record(base: Path, number: int, row: dict[str, str], heads: HeadsConfig, where: str) -> ClipRecord:
    """One manifest row -> a record; raises ValueError(message naming the row and the column) on a problem."""
    here = f"{where} row {number}"
    relative = row.get("path", "")
    if not relative:
        raise ValueError(f"{here}, column path: empty; give the clip's file relative to the manifest")
    path, _ = _file(base, relative, here, "path")
    split_text = row.get("split", "").lower()
    if split_text and split_text not in SPLIT_NAMES:
        raise ValueError(f"{here}, column split: {row['split']!r} is not a split; use train, validation or test")
    trace = _row_trace(base, row["trace"], path, heads, here) if row.get("trace") else None
    targets = {}
    for name in heads.outputs:
        text = row.get(name, "")
        if not text:
            if trace is None or name not in trace_mean(trace):
                raise ValueError(f"{here}, column {name}: empty, and the row has no trace with labels for it")
            targets[name] = trace_mean(trace)[name]
            continue
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{here}, column {name}: {text!r} is not a number") from None
        if not math.isfinite(value) or (heads.task == "regression" and not 0.0 <= value <= 1.0):
            raise ValueError(f"{here}, column {name}: {text} is outside [0, 1] (task = regression)")
        targets[name] = value
    clip_id = Path(relative).as_posix()
    return ClipRecord(clip_id, path, row.get("group") or clip_id, SPLIT_NAMES.get(split_text, ""), targets, trace)


def _assign_groups(records: list[ClipRecord], where: str, row_of: dict[str, int]) -> list[ClipRecord]:
    """Groups pinned by a `split` cell take that split (two different pins: every row of the group is a
    problem); the other groups get a seeded group-disjoint split."""
    pins: dict[str, set[str]] = {}
    for r in records:
        if not r.problem and r.split:
            pins.setdefault(r.group, set()).add(r.split)
    out, free = [], []
    for r in records:
        if r.problem:
            out.append(r)
        elif len(pins.get(r.group, ())) > 1:
            both = " and ".join(sorted(pins[r.group]))
            message = f"{where} row {row_of[r.clip_id]}, column split: group {r.group!r} is pinned to {both}; "
            message += "pin one split per group (or leave it empty on all but one row)"
            out.append(replace(r, problem=message))
        elif r.group in pins:
            out.append(replace(r, split=next(iter(pins[r.group]))))
        else:
            free.append(r)
    return out + film_split(free, seed=0) if free else out


def _same_files(records: list[ClipRecord], numbers: list[int], files: list[FileId | None], where: str) -> None:
    """Mark (in place) every row whose file an earlier row lists (see the module docstring)."""
    first: dict[FileId, int] = {}
    for i, key in enumerate(files):
        if key is None:
            continue
        j = first.setdefault(key, i)
        if j == i or records[i].problem:
            continue
        a, b = records[j], records[i]
        records[i] = replace(
            b,
            problem=f"{where} row {numbers[i]}, column path: {b.clip_id} is the file {a.clip_id} of row {numbers[j]}; "
            "list each clip once",
        )
        if not a.problem and (a.targets != b.targets or (a.split and b.split and a.split != b.split)):
            records[j] = replace(
                a,
                problem=f"{where} row {numbers[j]}, column path: {a.clip_id} is listed again on row {numbers[i]} "
                f"(as {b.clip_id}) with other labels or split; keep the row that is right and remove the other",
            )


def _problem_record(base: Path, row: CsvRow, message: str, seen: set[str]) -> ClipRecord:
    """The record of a row that cannot be used; its id never takes a later row's (a path listed twice)."""
    given = row.cells.get("path", "")
    clip_id = Path(given).as_posix() if given else f"row {row.number}"
    clip_id = clip_id if clip_id not in seen else f"{clip_id} (row {row.number})"
    return ClipRecord(clip_id, base / given, clip_id, "", {}, None, message)


def read_manifest(root: str | Path, heads: HeadsConfig) -> list[ClipRecord]:
    """The manifest CSV `root` (or `root/manifest.csv`) -> one record per row, in file order; rows with a
    problem come back with `problem` set (see the module docstring)."""
    path = _manifest_path(Path(root))
    base = path.parent
    records: list[ClipRecord] = []
    numbers: list[int] = []
    files: list[FileId | None] = []
    seen: set[str] = set()
    for row in _read_rows(path, heads.outputs):
        try:
            if row.problem:
                raise ValueError(row.problem)
            record = _row_record(base, row.number, row.cells, heads, path.name)
            if record.clip_id in seen:
                raise ValueError(f"{path.name} row {row.number}, column path: {record.clip_id} is listed twice")
        except (ValueError, OSError, RuntimeError) as exc:  # whatever the row holds, it is that row's problem
            record = _problem_record(base, row, str(exc), seen)
        seen.add(record.clip_id)  # a later row with this path is listed twice too, so it never takes this id
        records.append(record)
        numbers.append(row.number)
        files.append(None if row.problem else file_id(base, row.cells.get("path", "")))
    if not records:
        raise ValueError(f"{path} lists no clips; add one row per clip under the header")
    _same_files(records, numbers, files, path.name)
    order = {r.clip_id: i for i, r in enumerate(records)}
    row_of = {r.clip_id: n for r, n in zip(records, numbers, strict=True)}
    return sorted(_assign_groups(records, path.name, row_of), key=lambda r: order[r.clip_id])
