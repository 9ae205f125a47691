"""`sec2sec compare`: train and test the paper's variants and print the comparison table."""

from __future__ import annotations

import argparse

from rich.console import Console

from sec2sec.config import SHIPPED_CONFIGS
from sec2sec.devices import DEVICE_HELP
from sec2sec.offline.compare import PAPER_VARIANTS, compare, print_comparison, write_comparison
from sec2sec.offline.datasets import SPLIT_MODES
from sec2sec.offline.distributed import add_collective_timeout, session


def run(args: argparse.Namespace) -> int:
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    with session(args.device, args.collective_timeout) as dist:
        console = Console(quiet=not dist.main)
        results = compare(
            args.config_dir or SHIPPED_CONFIGS,
            args.cache,
            args.out,
            variants,
            base=args.base or None,
            split_mode=args.split,
            split_seed=args.split_seed,
            device=dist.device,
            console=console,
        )
    print_comparison(results, console)
    if dist.main:
        written = write_comparison(results, args.out)
        console.print(f"table written to {written[0]} and {written[1]}", soft_wrap=True)  # whole paths
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("compare", help="train and test the paper's variants and print the comparison table")
    p.add_argument("--config-dir", default="", help="folder of variant TOML files (default: the shipped configs)")
    p.add_argument("--variants", default=",".join(PAPER_VARIANTS), help="comma-separated variant file stems")
    p.add_argument(
        "--base", default="", help="shipped name or TOML file every variant is laid over (e.g. first_impressions)"
    )
    p.add_argument("--cache", required=True, help="feature cache made by `sec2sec extract`")
    p.add_argument("--out", required=True, help="folder: one run folder per variant, comparison.csv and .md")
    p.add_argument("--split", default="official", choices=SPLIT_MODES, help="as for `sec2sec train`")
    p.add_argument("--split-seed", type=int, default=0, help="seed of --split film")
    add_collective_timeout(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=run)
