"""Writing a feature cache from one process or from every rank of a torchrun job.

Each rank stores its finished clips as shards `shard-NNNNN.pt` (numbers base + rank + world * k, so ranks
never collide) and records them after every shard: a single process in `index.json` itself, rank r of N in
its own `index.rank<r>.json`. Rank 0 merges the rank files into `index.json` (written atomically) once every
rank has finished, and also at the start of the next run, so shards finished by a run that was killed are
kept (resume per rank: at most one unfinished shard per rank is lost). The merged index lists clips in the
dataset's order, whatever the number of processes that made it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.decoding import DecodedClip
from sec2sec.offline.features import DTYPES, CacheIndex, Tokens, write_index
from sec2sec.offline.output_files import replace_json

PART = "index.rank{rank}.json"


def next_shard_number(shards: list[str]) -> int:
    """1 + the highest NNNNN among `shard-NNNNN.pt` names (0 for none)."""
    numbers = [int(m.group(1)) for s in shards if (m := re.match(r"shard-(\d+)\.pt$", s))]
    return max(numbers, default=-1) + 1


class ShardWriter:
    """Collects encoded clips of this rank and writes them `shard_size` at a time (see the module doc)."""

    def __init__(
        self, folder: Path, index: CacheIndex, dtype: str, shard_size: int, rank: int = 0, world: int = 1
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"--shard-size {shard_size}: give at least 1 clip per shard")
        self.folder, self.index, self.dtype, self.shard_size = folder, index, dtype, shard_size
        self.rank, self.world = rank, world
        self.base, self.written = next_shard_number(index.shards), 0
        self.pending: list[tuple[ClipRecord, DecodedClip, tuple[torch.Tensor, torch.Tensor]]] = []
        self.part: dict[str, Any] = {"shards": [], "clips": {}, "unreadable": {}}

    def add(self, record: ClipRecord, clip: DecodedClip, tokens: Tokens) -> None:
        video, audio = tokens
        if video is None or audio is None:
            raise ValueError("a feature cache holds the tokens of both modalities; extract with both encoders")
        self.pending.append((record, clip, (video, audio)))
        if len(self.pending) >= self.shard_size:
            self.flush()

    def unreadable(self, record: ClipRecord, reason: str) -> None:
        self.part["unreadable"][record.clip_id] = f"{record.path}: {reason}"

    def flush(self) -> None:
        """Write the pending clips as one shard (if any), then record it (so a crash loses at most a shard)."""
        if self.pending:
            name = f"shard-{self.base + self.rank + self.world * self.written:05d}.pt"
            self.written += 1
            _save_shard(self.folder / name, self.pending, self.dtype)
            self.part["shards"].append(name)
            for row, (record, clip, _) in enumerate(self.pending):
                self.part["clips"][record.clip_id] = clip_entry(name, row, record, clip)
            self.pending = []
        if self.world == 1:
            apply_part(self.index, self.part)
            self.part = {"shards": [], "clips": {}, "unreadable": {}}
            write_index(self.folder, self.index)
        else:
            replace_json(self.folder / PART.format(rank=self.rank), self.part)


def clip_entry(shard: str, row: int, record: ClipRecord, clip: DecodedClip) -> dict[str, Any]:
    note = {"note": clip.note} if clip.note else {}
    return {
        **note,
        "shard": shard,
        "row": row,
        "path": str(record.path),
        "group": record.group,
        "split": record.split,
        "targets": record.targets,
        "windows": clip.windows,
        "length": clip.length,
        "trimmed": max(0, clip.windows - clip.length),
        **({"seconds": trace_to_json(record.seconds)} if record.seconds else {}),
    }


def trace_to_json(seconds: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """Per-second targets with NaN (an unlabelled second) as null, which strict JSON readers accept."""
    return {k: [None if math.isnan(v) else v for v in values] for k, values in seconds.items()}


def _save_shard(
    path: Path, rows: list[tuple[ClipRecord, DecodedClip, tuple[torch.Tensor, torch.Tensor]]], dtype: str
) -> None:
    cast = DTYPES[dtype]
    payload = {
        "ids": [r.clip_id for r, _, _ in rows],
        "video": torch.stack([t[0] for _, _, t in rows]).cpu().to(cast),
        "audio": torch.stack([t[1] for _, _, t in rows]).cpu().to(cast),
        "video_ok": torch.stack([c.video_ok for _, c, _ in rows]),
        "audio_ok": torch.stack([c.audio_ok for _, c, _ in rows]),
        "lengths": torch.tensor([c.length for _, c, _ in rows]),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def apply_part(index: CacheIndex, part: dict[str, Any]) -> None:
    """Add a rank's shards, clips and unreadable clips to `index` (a clip encoded now is readable again)."""
    index.shards.extend(s for s in part["shards"] if s not in index.shards)
    index.clips.update(part["clips"])
    index.unreadable.update(part["unreadable"])
    for clip_id in part["clips"]:
        index.unreadable.pop(clip_id, None)


def merge_parts(folder: Path, index: CacheIndex, records: list[ClipRecord]) -> None:
    """Rank 0: fold every `index.rank<r>.json` into `index`, order clips as `records`, write `index.json`
    atomically, then remove the rank files."""
    parts = sorted(folder.glob(PART.format(rank="*")))
    for path in parts:
        apply_part(index, json.loads(path.read_text(encoding="utf-8")))
    order = {r.clip_id: i for i, r in enumerate(records)}
    ranked = sorted(index.clips.items(), key=lambda kv: order.get(kv[0], len(order)))
    index.clips.clear()
    index.clips.update(ranked)
    write_index(folder, index)
    for path in parts:
        path.unlink()
