"""`sec2sec compile`: build the compiled encoders of a model ahead of time (see sec2sec/compiled.py).

sec2sec compile --checkpoint runs/x/best.pt      the encoders of a trained model
sec2sec compile --config default                 the untrained model sec2sec-live builds from that config
sec2sec compile                                  the built-in default config
sec2sec compile --prune 30                       remove packages no run has loaded for 30 days

A package is specific to the torch thread count (inductor writes it into the compiled loops): give the
same --threads as `sec2sec-live`. It also has a fixed batch: the default (1) is what `sec2sec-live` runs;
`--batch N` builds the packages `sec2sec extract --batch N` runs. The packages land in the cache
`sec2sec-live` reads ($SEC2SEC_CACHE/aoti); a package already there is checked (checksum, output parity
against eager) and kept.
"""

from __future__ import annotations

import argparse
import os

import torch

from sec2sec import aoti_cache
from sec2sec.aoti_cache import packages_dir
from sec2sec.compiled import LIVE_BATCH, compile_model
from sec2sec.config import config_help
from sec2sec.devices import DEVICE_HELP
from sec2sec.model import Sec2Sec


def model_for(config_path: str | None, checkpoint: str | None) -> Sec2Sec:
    """The model `sec2sec-live` would run with the same --config / --checkpoint (same weights, same seed)."""
    from sec2sec.checkpoint import load_model
    from sec2sec.config import Config, load_config

    config = load_config(config_path).model if config_path else None
    if checkpoint:
        return load_model(checkpoint, expect=config)[0]
    torch.manual_seed(0)  # as sec2sec-live seeds an untrained model, so the weights (and the key) agree
    return Sec2Sec(config or Config().model)


def _prune(days: float) -> int:
    removed, freed = aoti_cache.prune(packages_dir(), days)
    for stem in removed:
        print(f"removed {stem}")
    print(
        f"pruned {len(removed)} package(s) unused for over {days:g} days ({freed / 2**20:.0f} MiB) "
        f"from {packages_dir()}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from sec2sec.devices import resolve_device

    if args.prune is not None:
        if args.config or args.checkpoint:
            raise ValueError("--prune removes old packages and builds nothing; give it without --config/--checkpoint")
        return _prune(args.prune)

    if args.batch < 1:
        raise ValueError(f"--batch {args.batch} must be >= 1 (1: sec2sec-live; N: sec2sec extract --batch N)")
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads} must be >= 0 (0: one per core, as sec2sec-live)")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)  # compiled CPU code keeps this thread count
    device = resolve_device(args.device)
    model = model_for(args.config, args.checkpoint).to(device).eval()
    report = compile_model(model, max_batch=args.batch)
    for name, status in report.items():
        print(f"{name} encoder: {status}")
    print(f"cache: {packages_dir()}")
    return 1 if any(status.startswith("eager") for status in report.values()) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compile", help="build the compiled (AOTInductor) encoders ahead of time")
    p.add_argument("--config", help=config_help(" (the untrained model sec2sec-live builds from it)"))
    p.add_argument("--checkpoint", help="a trained checkpoint (.pt); its encoders' weights are compiled")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, as sec2sec-live --threads (0: per core)")
    p.add_argument(
        "--batch",
        type=int,
        default=LIVE_BATCH,
        help="the packages' fixed batch: 1 for sec2sec-live (default), N for sec2sec extract --batch N",
    )
    p.add_argument(
        "--prune",
        type=float,
        metavar="DAYS",
        help="remove the packages no run has loaded for DAYS days (builds nothing)",
    )
    p.set_defaults(func=_run)
