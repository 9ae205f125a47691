"""`sec2sec evaluate`: score a trained checkpoint on a split of a feature cache.

`--out FILE` is checked before the evaluation starts (its folder exists and takes a new file; it is not the
checkpoint or the cache's index) and written whole when it ends (a temporary file renamed over it), as strict
JSON: a metric that is undefined (Pearson r of constant labels) is null, and `undefined` says why.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from sec2sec.devices import DEVICE_HELP
from sec2sec.offline.datasets import SPLITS
from sec2sec.offline.distributed import add_collective_timeout, session
from sec2sec.offline.evaluate import WITHOUT, Evaluation, evaluate, results_table, seconds_table
from sec2sec.offline.output_files import check_output_file, replace_json


def run(args: argparse.Namespace) -> int:
    if args.out:
        inputs = [("--checkpoint", args.checkpoint), ("--cache", Path(args.cache) / "index.json")]
        check_output_file(args.out, "--out", keep=inputs)
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
    for per, undefined in (("", result.undefined), (" per second", result.second_undefined)):
        for name, reasons in undefined.items():
            for metric, why in reasons.items():
                console.print(f"{name}{per} {metric.replace('_', ' ')}: undefined ({why})", soft_wrap=True)
    if args.out:
        replace_json(args.out, evaluation_json(result), "--out")
        console.print(f"scores and per-clip predictions written to {args.out}")


def evaluation_json(result: Evaluation) -> dict[str, Any]:
    """What `--out` holds: the split, the scores (per clip, and per second with traces), each clip's
    predictions, and, where a metric is undefined (null in the file), why."""
    payload: dict[str, Any] = {
        "split": result.split,
        "scores": result.scores,
        "second_scores": result.second_scores,
        "predictions": {cid: p.tolist() for cid, p in zip(result.ids, result.probabilities, strict=True)},
    }
    if result.undefined or result.second_undefined:
        payload["undefined"] = {"scores": result.undefined, "second_scores": result.second_undefined}
    return payload


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
