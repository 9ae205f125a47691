"""`sec2sec evaluate`: score a trained checkpoint on a split of a feature cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from sec2sec.devices import DEVICE_HELP
from sec2sec.offline.datasets import SPLITS
from sec2sec.offline.distributed import add_collective_timeout, session
from sec2sec.offline.evaluate import WITHOUT, Evaluation, evaluate, results_table, seconds_table


def run(args: argparse.Namespace) -> int:
    with session(args.device, args.collective_timeout) as dist:
        if dist.main:
            _report(args, evaluate(args.checkpoint, args.cache, args.split, args.from_clips, dist.device, args.without))
        dist.barrier()
    return 0


def _report(args: argparse.Namespace, result: Evaluation) -> None:
    console = Console()
    unscored = f", {result.unlabelled} without labels not scored" if result.unlabelled else ""
    title = f"{args.checkpoint} on the {args.split} split ({len(result.ids)} clips{unscored})"
    console.print(results_table(result, title))
    if result.second_scores:
        console.print(seconds_table(result, f"per second, every labelled second of the {args.split} split"))
    if args.out:
        payload = {
            "split": result.split,
            "scores": result.scores,
            "second_scores": result.second_scores,
            "predictions": {cid: p.tolist() for cid, p in zip(result.ids, result.probabilities, strict=True)},
        }
        Path(args.out).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        console.print(f"scores and per-clip predictions written to {args.out}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("evaluate", help="score a trained checkpoint on a split of a feature cache")
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt made by `sec2sec train`")
    p.add_argument("--cache", required=True, help="the feature cache the checkpoint was trained on")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split to score")
    p.add_argument("--from-clips", action="store_true", help="re-read and encode the clips (fine-tuned encoders)")
    p.add_argument(
        "--without",
        default="",
        choices=WITHOUT[1:],
        help="score with this modality missing in every window (as --no-camera / --no-mic live)",
    )
    p.add_argument("--out", default="", help="also write scores and per-clip predictions to this JSON file")
    add_collective_timeout(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=run)
