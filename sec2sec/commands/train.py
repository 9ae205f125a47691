"""`sec2sec train`: train fusion + temporal model + heads on a feature cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from sec2sec.config import config_help, load_config
from sec2sec.devices import DEVICE_HELP
from sec2sec.offline.datasets import SPLIT_MODES
from sec2sec.offline.distributed import add_collective_timeout, session
from sec2sec.offline.train import fit


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with session(args.device, args.collective_timeout) as dist:
        console = Console(quiet=not dist.main)
        r = fit(
            args.cache,
            config,
            args.out,
            split_mode=args.split,
            split_seed=args.split_seed,
            finetune=args.finetune,
            restart=args.restart,
            device=dist.device,
            console=console,
        )
    console.print(
        f"[bold]train done[/]: {r.epochs} epochs ({r.seconds_per_epoch:.2f} s per epoch of training), best "
        f"validation {'balanced accuracy' if config.model.heads.task == 'binary' else 'mean accuracy'} "
        f"{r.best_metric:.4f} at epoch {r.best_epoch} -> {r.best_path}; per-epoch metrics in "
        f"{Path(args.out) / 'metrics.csv'}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("train", help="train fusion + temporal model + heads on a feature cache")
    p.add_argument("--config", help=config_help(" ([model] and [train])"))
    p.add_argument("--cache", required=True, help="feature cache made by `sec2sec extract`")
    p.add_argument("--out", required=True, help="run folder: best.pt, last.pt, metrics.csv (resumed if present)")
    p.add_argument(
        "--split",
        default="official",
        choices=SPLIT_MODES,
        help="official sets, or a seeded split by film (LIRIS) / YouTube video (First Impressions)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of --split film")
    p.add_argument("--finetune", action="store_true", help="train through the encoders from the raw clips (slow)")
    p.add_argument("--restart", action="store_true", help="ignore RUN/last.pt and train from scratch")
    add_collective_timeout(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=run)
