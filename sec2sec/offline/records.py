"""A clip as every dataset reader gives it (`ClipRecord`), and the group-disjoint split that readers and
splits share. Its own module so that the readers of each dataset (datasets.py, hume.py, manifest.py) import
it without importing each other."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class ClipRecord:
    """One clip: `clip_id` (file stem), its file, its group (LIRIS film / FI YouTube video), its official
    split (train | validation | test) and raw targets by name (LIRIS valence/arousal values, FI traits).

    `seconds`: per-second targets by name (a trace; NaN where a second has no label), when the dataset has
    them. `problem`: why the row cannot be used (a missing file, a bad label), "" when it can; extraction
    lists such rows with the unreadable clips and goes on with the others. Empty `targets` (and no trace):
    labels withheld (Hume-Reaction's test split): extracted, never scored."""

    clip_id: str
    path: Path
    group: str
    split: str
    targets: dict[str, float]
    seconds: dict[str, list[float]] | None = None
    problem: str = ""


def film_split(
    records: Sequence[ClipRecord], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> list[ClipRecord]:
    """Reassign splits so that every film (group) lies in exactly one split; seeded, about `fractions` of
    the clips in train / validation / test. Never a clip-level random split (scenes of a film would leak)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    sizes: dict[str, int] = {}
    for r in records:
        sizes[r.group] = sizes.get(r.group, 0) + 1
    films = sorted(sizes)
    random.Random(seed).shuffle(films)
    total, done, split_of = len(records), 0, {}
    bounds = (fractions[0] * total, (fractions[0] + fractions[1]) * total)
    for film in films:
        split_of[film] = "train" if done < bounds[0] else "validation" if done < bounds[1] else "test"
        done += sizes[film]
    return [replace(r, split=split_of[r.group]) for r in records]
