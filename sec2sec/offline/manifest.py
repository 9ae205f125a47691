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

A row with a problem (a missing file, a label that is no number or outside the range, an unknown split name,
a group pinned to two splits, a bad trace, a path already listed on an earlier row, good or bad) is returned
with its `problem` set, naming the row and the column: extraction lists it beside the unreadable clips and
goes on with the others.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sec2sec.config import HeadsConfig
from sec2sec.offline.records import ClipRecord, film_split
from sec2sec.offline.traces import check_trace_range, read_trace, trace_mean

MANIFEST = "manifest.csv"
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


def _manifest_path(root: Path) -> Path:
    path = root / MANIFEST if root.is_dir() else root
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the manifest CSV (or its folder, holding {MANIFEST}) as --root")
    return path


def _read_rows(path: Path, outputs: Sequence[str]) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a UTF-8 CSV file ({exc}); save the manifest as CSV") from None
    if "path" not in header:
        raise ValueError(f"{path}: the header {header} has no `path` column; add one (clip files relative to it)")
    missing = [c for c in outputs if c not in header]
    if missing and "trace" not in header:
        raise ValueError(
            f"{path}: the header lacks label column(s) {', '.join(missing)} named by [model.heads] outputs; "
            "add them, or set outputs to the manifest's label columns"
        )
    return rows, header


def _row_record(base: Path, number: int, row: dict[str, str], heads: HeadsConfig, where: str) -> ClipRecord:
    """One manifest row -> a record; raises ValueError(message naming the row and the column) on a problem."""
    here = f"{where} row {number}"
    relative = row.get("path", "")
    if not relative:
        raise ValueError(f"{here}, column path: empty; give the clip's file relative to the manifest")
    path = (base / relative).resolve() if not Path(relative).is_absolute() else Path(relative)
    if not path.is_file():
        raise ValueError(f"{here}, column path: {path} does not exist")
    split_text = row.get("split", "").lower()
    if split_text and split_text not in SPLIT_NAMES:
        raise ValueError(f"{here}, column split: {row['split']!r} is not a split; use train, validation or test")
    trace = None
    if row.get("trace"):
        trace_path = base / row["trace"]
        if not trace_path.is_file():
            raise ValueError(f"{here}, column trace: {trace_path} does not exist")
        trace = read_trace(trace_path, heads.outputs)
        if heads.task == "regression":
            check_trace_range(trace_path, trace, 0.0, 1.0)
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


def read_manifest(root: str | Path, heads: HeadsConfig) -> list[ClipRecord]:
    """The manifest CSV `root` (or `root/manifest.csv`) -> one record per row, in file order; rows with a
    problem come back with `problem` set (see the module docstring)."""
    path = _manifest_path(Path(root))
    rows, _ = _read_rows(path, heads.outputs)
    records, seen = [], set()
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        try:
            record = _row_record(path.parent, number, row, heads, path.name)
            if record.clip_id in seen:
                raise ValueError(f"{path.name} row {number}, column path: {record.clip_id} is listed twice")
            seen.add(record.clip_id)
        except ValueError as exc:
            clip_id = Path(row["path"]).as_posix() if row.get("path") else f"row {number}"
            clip_id = clip_id if clip_id not in seen else f"{clip_id} (row {number})"
            seen.add(clip_id)  # a later row with this path is listed twice too, so it never takes this id
            record = ClipRecord(clip_id, path.parent / (row.get("path") or ""), clip_id, "", {}, None, str(exc))
        records.append(record)
    if not records:
        raise ValueError(f"{path} lists no clips; add one row per clip under the header")
    order = {r.clip_id: i for i, r in enumerate(records)}
    row_of = {r.clip_id: i + 2 for i, r in enumerate(records)}
    return sorted(_assign_groups(records, path.name, row_of), key=lambda r: order[r.clip_id])
