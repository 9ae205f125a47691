"""Pinned splits: a feature cache's clip -> train/validation/test assignment, written when first made and reused.

`train`, `evaluate` and `compare` never recompute a split from whatever the cache holds today: the first use of
a split mode (and seed) writes `CACHE/splits-official.json` or `CACHE/splits-film-seed<S>.json` (atomically:
temporary file, then rename) holding the mode, the seed, the clip ids of each split, a digest of the clip set
(sha256 over every cached clip's id, group and official split) and a digest of the assignment itself; every
later use reads it back. Each (mode, seed) is pinned on its own, so several seeded film splits of one cache can
be compared side by side; each file is written once, so two processes pinning at once write the same bytes.

A cache whose clips changed since a split was pinned (clips extracted later, unreadable clips repaired and
added, clips removed) is refused with one line saying how to re-split: `sec2sec split --cache CACHE --split
MODE --split-seed S --resplit`. A checkpoint stores the digest of the assignment it was trained on, and
`evaluate` refuses a cache that was re-split since (its test clips may have been the checkpoint's training
clips).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sec2sec.offline.datasets import SPLIT_MODES, SPLITS, ClipRecord, assign_splits

FORMAT = "sec2sec-splits"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Assignment:
    """A pinned split: `split_of` maps every cached clip id to train | validation | test; `clip_digest`
    identifies the clip set it was made from, `digest` the assignment itself; `path` is its file."""

    mode: str
    seed: int
    clip_digest: str
    digest: str
    split_of: dict[str, str]
    path: Path

    def describe(self) -> str:
        return describe(self.mode, self.seed)


def describe(mode: str, seed: int) -> str:
    return "the official split" if mode == "official" else f"the {mode} split with seed {seed}"


def split_file(folder: str | Path, mode: str, seed: int) -> Path:
    """CACHE/splits-official.json (the seed plays no part) or CACHE/splits-<mode>-seed<S>.json."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode {mode!r} is not allowed; use one of {', '.join(SPLIT_MODES)}")
    name = "splits-official.json" if mode == "official" else f"splits-{mode}-seed{seed}.json"
    return Path(folder) / name


def clip_set_digest(records: Sequence[ClipRecord]) -> str:
    """sha256 over the sorted (clip id, group, official split) of the clips: what a split is computed from."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.clip_id):
        digest.update(f"{r.clip_id}\t{r.group}\t{r.split}\n".encode())
    return digest.hexdigest()


def _assignment_digest(mode: str, seed: int, split_of: dict[str, str]) -> str:
    digest = hashlib.sha256(f"{mode}\t{seed}\n".encode())
    for cid in sorted(split_of):
        digest.update(f"{cid}\t{split_of[cid]}\n".encode())
    return digest.hexdigest()


def _resplit_hint(folder: Path, mode: str, seed: int) -> str:
    seed_arg = f" --split-seed {seed}" if mode != "official" else ""
    return f"`sec2sec split --cache {folder} --split {mode}{seed_arg} --resplit`"


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)


def _make(folder: Path, dataset: str, records: Sequence[ClipRecord], mode: str, seed: int) -> Assignment:
    """Compute the split now and pin it (overwriting any earlier file of this mode and seed)."""
    seed = 0 if mode == "official" else seed
    split_of = {r.clip_id: r.split for r in assign_splits(records, mode, seed)}
    clips = clip_set_digest(records)
    digest = _assignment_digest(mode, seed, split_of)
    path = split_file(folder, mode, seed)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "mode": mode,
        "seed": seed,
        "clips": len(split_of),
        "clip_digest": clips,
        "digest": digest,
        **{name: sorted(cid for cid, s in split_of.items() if s == name) for name in SPLITS},
    }
    _write(path, payload)
    return Assignment(mode, seed, clips, digest, split_of, path)


def _read(path: Path) -> Assignment:
    fix = f"remove {path} to have the split made again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a sec2sec split file of version {FORMAT_VERSION}; {fix}")
    split_of = {cid: name for name in SPLITS for cid in data[name]}
    if _assignment_digest(data["mode"], int(data["seed"]), split_of) != data["digest"]:
        raise ValueError(f"{path} was edited: its clip lists do not match its digest; {fix}")
    return Assignment(data["mode"], int(data["seed"]), data["clip_digest"], data["digest"], split_of, path)


def _changes(pinned: Assignment, records: Sequence[ClipRecord]) -> str:
    now = {r.clip_id for r in records}
    added, removed = len(now - set(pinned.split_of)), len(set(pinned.split_of) - now)
    if added or removed:
        return f"{added} clip(s) added, {removed} removed"
    return "the group or official split of some clips changed"


def pinned_split(
    folder: str | Path, dataset: str, records: Sequence[ClipRecord], mode: str, seed: int, *, resplit: bool = False
) -> Assignment:
    """The pinned assignment of `mode`/`seed` for the cache's `records`; made and pinned now when there is
    none (or when `resplit`). A pinned one made from another clip set raises a ValueError saying how to
    re-split."""
    folder = Path(folder)
    path = split_file(folder, mode, seed)
    if resplit or not path.is_file():
        return _make(folder, dataset, records, mode, seed)
    pinned = _read(path)
    if pinned.clip_digest != clip_set_digest(records):
        raise ValueError(
            f"cache {folder} holds other clips than when {describe(mode, seed)} was pinned in {path.name} "
            f"({_changes(pinned, records)}); re-split with {_resplit_hint(folder, mode, seed)} (models trained "
            "on the old split can then no longer be evaluated on this cache)"
        )
    return pinned


def apply_split(records: Sequence[ClipRecord], assignment: Assignment) -> list[ClipRecord]:
    """The records with their split set to the pinned assignment's."""
    return [replace(r, split=assignment.split_of[r.clip_id]) for r in records]


def check_trained_split(assignment: Assignment, trained_digest: str, checkpoint: str | Path) -> None:
    """Refuse to score a checkpoint on a cache re-split since it was trained (an empty digest, from a
    checkpoint made before splits were pinned, is accepted)."""
    if trained_digest and trained_digest != assignment.digest:
        raise ValueError(
            f"checkpoint {checkpoint} was trained on another assignment of {assignment.describe()} than the one "
            f"now pinned in {assignment.path} (the cache was re-split since, so its test clips may have been "
            "training clips); train again on this cache, or evaluate on the cache as it was"
        )
