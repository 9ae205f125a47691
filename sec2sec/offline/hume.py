"""`--dataset hume`: Hume-Reaction, the dataset of the ABAW5 emotional reaction intensity (ERI) challenge, as
downloaded:

    ROOT/data_info.csv        File_ID,Split,Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise,Age,Country
                              [00001],Train,0.12,0.53,...
    ROOT/train/mp4/00001.mp4  (audio also as ROOT/train/wav/00001.wav; the mp4 carries both streams)
    ROOT/val/mp4/...   ROOT/test/mp4/...

`File_ID` is written with brackets; `Split` is Train / Val / Test (the official split; Val is the split
results are reported on, since the organisers withheld the Test labels: Test rows have empty intensities,
are extracted but never scored). The seven intensities lie in [0, 1]; the outputs are named in snake case
(`empathic_pain`). Age and Country are not used. A row with a problem (no video file, a bad intensity, an
unknown split, a `File_ID` an earlier row already lists, a row that is not CSV: see `csv_rows`) is returned
with `problem` set, naming the row and the column, and extraction goes on. Of two rows with one `File_ID`,
the later is the problem, and the earlier too when the two give other intensities or splits (which one is
right cannot be told).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from sec2sec.offline.csv_rows import read_csv_rows
from sec2sec.offline.records import ClipRecord

INFO = "data_info.csv"
HUME_EMOTIONS = {
    "adoration": "Adoration",
    "amusement": "Amusement",
    "anxiety": "Anxiety",
    "disgust": "Disgust",
    "empathic_pain": "Empathic-Pain",
    "fear": "Fear",
    "surprise": "Surprise",
}
HUME_SPLITS = {"train": ("train", "train"), "val": ("validation", "val"), "test": ("test", "test")}


def _video(root: Path, folder: str, clip_id: str) -> Path | None:
    for candidate in (root / folder / "mp4" / f"{clip_id}.mp4", root / folder / f"{clip_id}.mp4"):
        if candidate.is_file():
            return candidate
    return None


def _intensities(row: dict[str, str], here: str, withheld: bool) -> dict[str, float]:
    cells = {name: (row.get(column) or "").strip() for name, column in HUME_EMOTIONS.items()}
    if withheld and not any(cells.values()):
        return {}
    out = {}
    for name, text in cells.items():
        column = HUME_EMOTIONS[name]
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{here}, column {column}: {text!r} is not a number in [0, 1]") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{here}, column {column}: {text} is outside [0, 1]")
        out[name] = value
    return out


def _record(root: Path, number: int, row: dict[str, str]) -> ClipRecord:
    here = f"{INFO} row {number}"
    clip_id = (row.get("File_ID") or "").strip().strip("[]").strip()
    if not clip_id:
        raise ValueError(f"{here}, column File_ID: empty")
    split_text = (row.get("Split") or "").strip()
    if split_text.lower() not in HUME_SPLITS:
        raise ValueError(f"{here}, column Split: {split_text!r} is not Train, Val or Test")
    split, folder = HUME_SPLITS[split_text.lower()]
    path = _video(root, folder, clip_id)
    if path is None:
        raise ValueError(f"{here}, column File_ID: {root / folder / 'mp4' / (clip_id + '.mp4')} does not exist")
    targets = _intensities(row, here, withheld=split == "test")
    return ClipRecord(clip_id, path, clip_id, split, targets)


def _clip_id(cells: dict[str, str]) -> str:
    return cells.get("File_ID", "").strip("[]").strip()


def _listed_again(records: list[ClipRecord], numbers: list[int], first: int, again: int) -> None:
    """Row `again` repeats the File_ID of row `first` (indices into `records`): mark it (in place), and the
    first too when the two disagree."""
    a, b = records[first], records[again]
    here = f"{INFO} row {numbers[again]}, column File_ID"
    records[again] = replace(
        b,
        clip_id=f"{a.clip_id} (row {numbers[again]})",
        group=f"{a.clip_id} (row {numbers[again]})",
        problem=f"{here}: [{a.clip_id}] is listed again (first on row {numbers[first]}); list each clip once",
    )
    if not a.problem and not b.problem and (a.targets != b.targets or a.split != b.split):
        records[first] = replace(
            a,
            problem=f"{INFO} row {numbers[first]}, column File_ID: [{a.clip_id}] is listed again on row "
            f"{numbers[again]} with other intensities or split; keep the row that is right and remove the other",
        )


def read_hume(root: str | Path) -> list[ClipRecord]:
    """A Hume-Reaction folder -> one record per row of data_info.csv (see the module docstring)."""
    root = Path(root)
    info = root / INFO
    if not info.is_file():
        raise ValueError(f"{info} does not exist; download Hume-Reaction (ABAW5 ERI) and pass its folder as --root")
    header, rows = read_csv_rows(info, INFO)
    missing = [c for c in ("File_ID", "Split", *HUME_EMOTIONS.values()) if c not in header]
    if missing:
        raise ValueError(f"{info}: the header {header} lacks {', '.join(missing)}; use the data_info.csv as shipped")
    records: list[ClipRecord] = []
    numbers: list[int] = []
    first_row: dict[str, int] = {}
    for row in rows:
        try:
            if row.problem:
                raise ValueError(row.problem)
            record = _record(root, row.number, row.cells)
        except (ValueError, OSError) as exc:  # whatever the row holds, it is that row's problem
            clip_id = _clip_id(row.cells) or f"row {row.number}"
            record = ClipRecord(clip_id, root / INFO, clip_id, "", {}, None, str(exc))
        records.append(record)
        numbers.append(row.number)
        if record.clip_id in first_row:
            _listed_again(records, numbers, first_row[record.clip_id], len(records) - 1)
        else:
            first_row[record.clip_id] = len(records) - 1
    return records
