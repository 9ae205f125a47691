"""`sec2sec extract`: encode a dataset's clips into a feature cache (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from sec2sec.config import FRAMINGS, config_help, load_config
from sec2sec.devices import DEVICE_HELP
from sec2sec.framing import SUBJECTS
from sec2sec.offline.batching import AUTOCAST
from sec2sec.offline.datasets import DATASETS
from sec2sec.offline.distributed import add_collective_timeout, session
from sec2sec.offline.extract import extract
from sec2sec.offline.features import DTYPES, ENCODE_BATCH
from sec2sec.precision import PRECISION_HELP, PRECISIONS


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with session(args.device, args.collective_timeout) as dist:
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
            precision=args.precision,
            console=console,
            collective_timeout_min=args.collective_timeout,
            framing=args.framing,
            subject=args.face,
        )
    console.print(
        f"[bold]extract done[/]: {s.encoded} clips encoded ({s.windows} windows, {s.precision} encoders) "
        f"in {s.seconds:.1f} s, "
        f"{s.skipped} already in the cache, {len(s.unreadable)} unreadable "
        f"(listed in {Path(args.out) / 'unreadable.tsv'}); {s.trimmed} clips trimmed and {s.padded} padded "
        f"(masked) to model.clip_seconds = {config.model.clip_seconds} s"
    )
    for clip, reason in list(s.unreadable.items())[:10]:
        console.print(f"  unreadable {clip}: {reason}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("extract", help="encode a dataset's clips into a feature cache (resumable)")
    p.add_argument(
        "--dataset",
        required=True,
        choices=DATASETS,
        help="liris (LIRIS-ACCEDE), fi (First Impressions), hume (Hume-Reaction, ABAW5 ERI) or manifest (your "
        "own clips listed in a CSV: --root names it)",
    )
    p.add_argument("--root", required=True, help="the dataset folder, as downloaded (manifest: the CSV file)")
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
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument(
        "--framing",
        choices=FRAMINGS,
        help="what the video encoder sees: the whole frame's centre (frame) or the subject's face, followed and "
        "aligned (face); default: the config's model.video.framing (the cache records it, so train with a config "
        "that has the same)",
    )
    p.add_argument(
        "--face",
        default="largest",
        choices=SUBJECTS,
        help="face framing: the subject is the largest face (or the one nearest the centre) when first seen, then "
        "followed",
    )
    add_collective_timeout(p)
    p.set_defaults(func=run)
