"""`sec2sec split`: show, pin or re-split the train/validation/test split of a cache."""

from __future__ import annotations

import argparse
from collections import Counter

from sec2sec.offline.datasets import SPLIT_MODES, SPLITS
from sec2sec.offline.features import read_index
from sec2sec.offline.splits import apply_split, describe, pinned_split


def run(args: argparse.Namespace) -> int:
    index = read_index(args.cache)
    a = pinned_split(args.cache, index.dataset, index.records(), args.split, args.split_seed, resplit=args.resplit)
    records = apply_split(index.records(), a)
    clips = Counter(r.split for r in records)
    groups = {name: len({r.group for r in records if r.split == name}) for name in SPLITS}
    counts = ", ".join(f"{name} {clips[name]} clips / {groups[name]} groups" for name in SPLITS)
    verb = "re-split and pinned" if args.resplit else "pinned"
    print(f"{describe(a.mode, a.seed)} of {args.cache} ({verb} in {a.path}): {counts}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("split", help="show, pin or re-split the train/validation/test split of a cache")
    p.add_argument("--cache", required=True, help="feature cache made by `sec2sec extract`")
    p.add_argument("--split", default="official", choices=SPLIT_MODES, help="as for `sec2sec train`")
    p.add_argument("--split-seed", type=int, default=0, help="seed of --split film")
    p.add_argument("--resplit", action="store_true", help="assign the cache's current clips again (after it changed)")
    p.set_defaults(func=run)
