"""Hume-Reaction's data_info.csv as shipped, written for the dataset tests."""

from __future__ import annotations

from pathlib import Path

from sec2sec.offline.hume import HUME_EMOTIONS


def write_hume_info(root: Path, rows: list[tuple[str, str, list[float] | None]]) -> Path:
    """data_info.csv as shipped: bracketed File_ID, Split, the seven intensities (empty for Test), Age, Country."""
    header = ["File_ID", "Split", *HUME_EMOTIONS.values(), "Age", "Country"]
    lines = [",".join(header)]
    for clip_id, split, values in rows:
        cells = [f"{v:.4f}" for v in values] if values is not None else [""] * 7
        lines.append(",".join([f"[{clip_id}]", split, *cells, "27", "United States"]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "data_info.csv").write_text("\n".join(lines) + "\n")
    return root
