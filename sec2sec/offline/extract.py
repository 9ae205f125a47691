"""`sec2sec extract`: a dataset folder -> a feature cache (encoder tokens per one-second window).

Resumable: finished clips are in `index.json` and are skipped by a second run, which reuses the cache's
own `encoders.pt` (never new random weights). Unreadable clips are listed in `unreadable.tsv`, never fatal.
Decoding overlaps encoding: a torch DataLoader worker process decodes the next clips while the main
process runs the encoders (`--workers 0` decodes inline).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sec2sec.checkpoint import encoder_settings_mismatch, without_weight_files
from sec2sec.compiled import compile_model, compile_requested
from sec2sec.config import Config, ModelConfig, load_config
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import DATASETS, ClipRecord, read_dataset
from sec2sec.offline.features import (
    DTYPES,
    ENCODERS,
    CacheIndex,
    DecodedClip,
    clip_loader,
    encode_clip,
    encoder_identity,
    read_encoders,
    read_index,
    write_index,
)


@dataclass(frozen=True)
class ExtractSummary:
    """What one run did: clips encoded now, skipped as already done, unreadable, windows encoded, seconds."""

    encoded: int
    skipped: int
    unreadable: dict[str, str]
    windows: int
    seconds: float
    trimmed: int = 0  # clips longer than model.clip_seconds (their tail was cut)
    padded: int = 0  # clips shorter than model.clip_seconds (masked padding windows)


def encoder_config(config: ModelConfig) -> ModelConfig:
    """The config the cache's encoders are built from: both modalities, whatever variant is trained later."""
    return replace(config, fusion=replace(config.fusion, modalities="both"))


def open_cache(folder: Path, dataset: str, root: Path, config: Config, dtype: str) -> tuple[Sec2Sec, CacheIndex]:
    """An encoder model and an index: the cache's own when `folder` has one (resume), else new ones.

    New encoders are seeded with `train.seed` (reproducible random weights when no pretrained ones exist)
    and saved to `encoders.pt` before any clip is encoded.
    """
    if (folder / "index.json").is_file():
        index = read_index(folder)
        other_encoders = encoder_settings_mismatch(index.config, config.model) is not None
        if index.dataset != dataset or other_encoders or index.dtype != dtype:
            raise ValueError(
                f"cache {folder} was made for dataset {index.dataset}, dtype {index.dtype} and another encoder "
                "config (model.video / model.audio / clip_seconds); use another --out or the same settings"
            )
        model = Sec2Sec(encoder_config(without_weight_files(index.config)))
        state = read_encoders(folder, index)
        for name in ENCODERS:
            getattr(model, name).load_state_dict(state[name])
        return model.eval(), index
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.train.seed)
    model = Sec2Sec(encoder_config(config.model)).eval()
    torch.save({name: getattr(model, name).state_dict() for name in ENCODERS}, folder / "encoders.pt")
    index = CacheIndex(dataset, str(root), dtype, config.model, encoder_identity(model), model.pretrained, {}, {}, [])
    write_index(folder, index)
    return model, index


def _write_shard(
    folder: Path, index: CacheIndex, rows: list[tuple[ClipRecord, DecodedClip, tuple]], dtype: str
) -> None:
    """Store finished clips as one shard, then record them in the index (so a crash loses at most a shard)."""
    name = f"shard-{len(index.shards):05d}.pt"
    cast = DTYPES[dtype]
    torch.save(
        {
            "ids": [r.clip_id for r, _, _ in rows],
            "video": torch.stack([t[0] for _, _, t in rows]).to(cast),
            "audio": torch.stack([t[1] for _, _, t in rows]).to(cast),
            "video_ok": torch.stack([c.video_ok for _, c, _ in rows]),
            "audio_ok": torch.stack([c.audio_ok for _, c, _ in rows]),
            "lengths": torch.tensor([c.length for _, c, _ in rows]),
        },
        folder / name,
    )
    index.shards.append(name)
    for row, (record, clip, _) in enumerate(rows):
        index.clips[record.clip_id] = {
            "shard": name,
            "row": row,
            "path": str(record.path),
            "group": record.group,
            "split": record.split,
            "targets": record.targets,
            "windows": clip.windows,
            "length": clip.length,
            "trimmed": max(0, clip.windows - clip.length),
        }
        index.unreadable.pop(record.clip_id, None)
    write_index(folder, index)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def extract(
    dataset: str,
    root: str | Path,
    out: str | Path,
    config: Config,
    *,
    dtype: str = "float16",
    workers: int = 1,
    shard_size: int = 64,
    batch: int = 8,
    console: Console | None = None,
    compiled: bool | None = None,
) -> ExtractSummary:
    """Encode every readable clip of `dataset` under `root` into the cache `out` (see the module docstring).

    `compiled`: run the encoders from their AOTInductor packages (sec2sec/compiled.py; None: unless
    SEC2SEC_COMPILE=0), the same packages `sec2sec-live` uses for these weights (batch dimension dynamic).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed; use one of {', '.join(DTYPES)}")
    console = console or Console()
    folder, root = Path(out), Path(root)
    records = read_dataset(dataset, root)
    model, index = open_cache(folder, dataset, root, config, dtype)
    todo = [r for r in records if r.clip_id not in index.clips]
    if todo and (compile_requested() if compiled is None else compiled):
        compile_model(model)
    started, windows, pending, trimmed, padded = time.perf_counter(), 0, [], 0, 0
    with _progress(console) as progress, torch.inference_mode():
        task = progress.add_task("extract", total=len(todo), note="")
        for record, clip in zip(todo, clip_loader(todo, index.config, workers), strict=True):
            if clip.error:
                index.unreadable[record.clip_id] = f"{record.path}: {clip.error}"
            else:
                pending.append((record, clip, encode_clip(model, clip, batch)))
                windows += clip.length
                trimmed += clip.windows > clip.length
                padded += clip.length < index.config.clip_seconds
            if len(pending) >= shard_size:
                _write_shard(folder, index, pending, dtype)
                pending = []
            rate = windows / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, note=f"{windows} windows, {rate:.1f}/s, {len(index.unreadable)} bad")
        if pending:
            _write_shard(folder, index, pending, dtype)
    write_index(folder, index)
    _write_report(folder, index.unreadable)
    encoded = len(todo) - sum(r.clip_id in index.unreadable for r in todo)
    seconds = time.perf_counter() - started
    return ExtractSummary(encoded, len(records) - len(todo), dict(index.unreadable), windows, seconds, trimmed, padded)


def _write_report(folder: Path, unreadable: dict[str, str]) -> None:
    lines = ["clip\treason", *(f"{k}\t{v}" for k, v in sorted(unreadable.items()))]
    (folder / "unreadable.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    console = Console()
    s = extract(
        args.dataset,
        args.root,
        args.out,
        config,
        dtype=args.dtype,
        workers=args.workers,
        shard_size=args.shard_size,
        batch=args.batch,
        console=console,
        compiled=compile_requested(args.no_compile),
    )
    console.print(
        f"[bold]extract done[/]: {s.encoded} clips encoded ({s.windows} windows) in {s.seconds:.1f} s, "
        f"{s.skipped} already in the cache, {len(s.unreadable)} unreadable "
        f"(listed in {Path(args.out) / 'unreadable.tsv'}); {s.trimmed} clips trimmed and {s.padded} padded "
        f"(masked) to model.clip_seconds = {config.model.clip_seconds} s"
    )
    for clip, reason in list(s.unreadable.items())[:10]:
        console.print(f"  unreadable {clip}: {reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("extract", help="encode a dataset's clips into a feature cache (resumable)")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="liris (LIRIS-ACCEDE) or fi (First Impressions)")
    p.add_argument("--root", required=True, help="the dataset folder, as downloaded")
    p.add_argument("--out", required=True, help="cache folder (created; a second run resumes it)")
    p.add_argument("--config", default="configs/default.toml", help="TOML config (model.video/audio, clip_seconds)")
    p.add_argument("--dtype", default="float16", choices=tuple(DTYPES), help="storage precision of the tokens")
    p.add_argument("--workers", type=int, default=1, help="decoding processes running ahead (0: decode inline)")
    p.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    p.add_argument("--batch", type=int, default=8, help="windows per encoder call")
    p.add_argument("--no-compile", action="store_true", help="run the encoders eagerly (also SEC2SEC_COMPILE=0)")
    p.set_defaults(func=_run)
