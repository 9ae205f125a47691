"""`sec2sec extract`: a dataset folder -> a feature cache (encoder tokens per one-second window).

Resumable: finished clips are in `index.json` and are skipped by a second run, which reuses the cache's
own `encoders.pt` (never new random weights). Unreadable clips are listed in `unreadable.tsv`, never fatal.
Decoding overlaps encoding: torch DataLoader worker processes decode the next clips (only the frames a
window uses, scaled to the model's input in the worker) while the main process runs the encoders on
batches of windows gathered across clips (`WindowBatcher`); `--workers 0` decodes inline.

`--device cuda` runs the encoders on a GPU (pinned, non-blocking copies; `--autocast float16|bfloat16`
optionally). `torchrun --nproc_per_node N -m sec2sec extract ...` splits the clips still to do over N
processes (clip k to rank k mod N); each writes its own shards and `index.rank<r>.json`, and rank 0 merges
them into `index.json` (see `cache_writer`). A killed run resumes with any number of processes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from sec2sec.checkpoint import encoder_settings_mismatch, without_weight_files
from sec2sec.compiled import compile_model, compile_requested
from sec2sec.config import Config, ModelConfig, config_help, load_config
from sec2sec.devices import DEVICE_HELP
from sec2sec.model import Sec2Sec
from sec2sec.offline.batching import AUTOCAST, WindowBatcher, check_autocast
from sec2sec.offline.cache_writer import ShardWriter, merge_parts
from sec2sec.offline.datasets import DATASETS, ClipRecord, read_dataset
from sec2sec.offline.distributed import context, session
from sec2sec.offline.features import (
    DTYPES,
    ENCODE_BATCH,
    ENCODERS,
    CacheIndex,
    clip_loader,
    encoder_identity,
    read_encoders,
    read_index,
    write_index,
)
from sec2sec.offline.progress import progress_bar


@dataclass(frozen=True)
class ExtractSummary:
    """What one run did: clips encoded now, skipped as already done, unreadable, windows encoded, and the
    seconds from the encoders being ready (packages loaded or built) to the merged index."""

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


def open_cache(
    folder: Path, dataset: str, root: Path, config: Config, dtype: str, autocast: str = "off"
) -> tuple[Sec2Sec, CacheIndex]:
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
        if index.autocast != autocast:
            raise ValueError(
                f"cache {folder} was encoded with --autocast {index.autocast}; resume it with the same "
                "--autocast (mixing precisions in one cache is refused) or use another --out"
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
    identity = encoder_identity(model)
    index = CacheIndex(dataset, str(root), dtype, config.model, identity, model.pretrained, {}, {}, [], autocast)
    write_index(folder, index)
    return model, index


def extract(
    dataset: str,
    root: str | Path,
    out: str | Path,
    config: Config,
    *,
    dtype: str = "float16",
    workers: int = 1,
    shard_size: int = 64,
    batch: int = ENCODE_BATCH,
    device: str | torch.device = "cpu",
    autocast: str = "off",
    console: Console | None = None,
    compiled: bool | None = None,
) -> ExtractSummary:
    """Encode every readable clip of `dataset` under `root` into the cache `out` (see the module docstring).

    `compiled`: run the encoders from their AOTInductor packages (sec2sec/compiled.py; None: unless
    SEC2SEC_COMPILE=0), built for these weights and this `batch` (`sec2sec compile --batch N` builds them
    ahead of time).
    Under torchrun each rank encodes clips rank, rank + N, ... of those not yet in the cache and the
    returned summary counts all ranks (its `unreadable` is complete on rank 0, which merged the index).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed; use one of {', '.join(DTYPES)}")
    dist = context(device)
    check_autocast(autocast, dist.device)
    console = console or Console(quiet=not dist.main)
    folder, root = Path(out), Path(root)
    records = read_dataset(dataset, root)

    def opened() -> tuple[Sec2Sec, CacheIndex]:
        model, index = open_cache(folder, dataset, root, config, dtype, autocast)
        if dist.main:
            merge_parts(folder, index, records)  # shards a killed run finished
        return model, index

    model, index = dist.in_turn(opened)
    todo = [r for r in records if r.clip_id not in index.clips]
    mine = todo[dist.rank :: dist.world]
    writer = ShardWriter(folder, index, dtype, shard_size, dist.rank, dist.world)
    model = model.to(dist.device)
    if mine and autocast == "off" and (compile_requested() if compiled is None else compiled):
        compile_model(model, max_batch=batch)  # autocast runs the eager encoders: a package is compiled for float32
    # The clock starts with the encoders ready: building a package (once, ~1 minute, with its own progress
    # line) or loading and checking it (seconds) is start-up, not part of the encoding rate.
    started = time.perf_counter()
    batcher = WindowBatcher(model, batch, autocast)
    counts = _encode_all(writer, batcher, mine, index.config, workers, console)
    dist.barrier()
    if dist.main:
        merge_parts(folder, index, records)
        _write_report(folder, index.unreadable)
    encoded, windows, trimmed, padded = (sum(c[k] for c in dist.gather(counts)) for k in range(4))
    seconds = time.perf_counter() - started
    return ExtractSummary(encoded, len(records) - len(todo), dict(index.unreadable), windows, seconds, trimmed, padded)


def _encode_all(
    writer: ShardWriter,
    batcher: WindowBatcher,
    todo: list[ClipRecord],
    config: ModelConfig,
    workers: int,
    console: Console,
) -> tuple[int, int, int, int]:
    """This rank's clips -> shards; returns (clips encoded, windows encoded, clips trimmed, clips padded)."""
    started, windows, trimmed, padded, bad = time.perf_counter(), 0, 0, 0, 0
    with progress_bar(console) as progress, torch.inference_mode():
        task = progress.add_task("extract", total=len(todo), note="")
        loader = clip_loader(todo, config, workers)
        for record, clip in zip(todo, loader, strict=True):
            if clip.error:
                writer.unreadable(record, clip.error)
                bad += 1
            else:
                for done in batcher.push(record, clip):
                    writer.add(*done)
                windows += clip.length
                trimmed += clip.windows > clip.length
                padded += clip.length < config.clip_seconds
            rate = windows / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, note=f"{windows} windows, {rate:.1f}/s, {bad} bad")
        for done in batcher.finish():
            writer.add(*done)
    writer.flush()
    return len(todo) - bad, windows, trimmed, padded


def _write_report(folder: Path, unreadable: dict[str, str]) -> None:
    lines = ["clip\treason", *(f"{k}\t{v}" for k, v in sorted(unreadable.items()))]
    (folder / "unreadable.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with session(args.device) as dist:
        console = Console(quiet=not dist.main)
        s = extract(
            args.dataset,
            args.root,
            args.out,
            config,
            dtype=args.dtype,
            workers=args.workers,
            shard_size=args.shard_size,
            batch=args.batch,
            device=dist.device,
            autocast=args.autocast,
            compiled=compile_requested(args.no_compile),
            console=console,
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
    p.add_argument("--config", help=config_help(" (model.video/audio, clip_seconds)"))
    p.add_argument("--dtype", default="float16", choices=tuple(DTYPES), help="storage precision of the tokens")
    p.add_argument("--workers", type=int, default=1, help="decoding processes running ahead (0: decode inline)")
    p.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    p.add_argument("--batch", type=int, default=ENCODE_BATCH, help="windows per encoder call (gathered across clips)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--autocast", default="off", choices=tuple(AUTOCAST), help="CUDA only: encoders under torch.autocast"
    )
    p.add_argument("--no-compile", action="store_true", help="run the encoders eagerly (also SEC2SEC_COMPILE=0)")
    p.set_defaults(func=_run)
