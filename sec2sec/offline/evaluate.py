"""`sec2sec evaluate`: a trained checkpoint + a feature cache -> the metrics of one split.

Binary outputs: accuracy, F1, balanced accuracy, macro-F1, and the majority-class baseline beside them.
Regression outputs: mean accuracy 1 - |y - y_hat| per output and averaged, and Pearson r.
The split and the label thresholds are the ones the checkpoint was trained with (stored in its meta); the
split is the one pinned in the cache folder, and a cache changed or re-split since training is refused.
Under torchrun (e.g. as the last step of a multi-process job) rank 0 evaluates and prints; the other
ranks wait for it at a barrier and print nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sec2sec.checkpoint import Checkpoint, encoder_settings_mismatch, load_model
from sec2sec.devices import DEVICE_HELP
from sec2sec.model import Sec2Sec
from sec2sec.offline.batching import features_from_clips
from sec2sec.offline.datasets import SPLITS, labels
from sec2sec.offline.distributed import features_to, resolve_device, session
from sec2sec.offline.features import CacheIndex, encoder_identity, load_features, read_index
from sec2sec.offline.metrics import BINARY_METRICS, score_outputs
from sec2sec.offline.splits import apply_split, check_trained_split, pinned_split
from sec2sec.offline.train import predict

WITHOUT = ("", "video", "audio")


@dataclass(frozen=True)
class Evaluation:
    """Per clip: ids, truth and sigmoid outputs (N, n_outputs); per output name: its metrics."""

    split: str
    task: str
    ids: list[str]
    truth: np.ndarray
    probabilities: np.ndarray
    scores: dict[str, dict[str, float]]

    def average(self, metric: str) -> float:
        return float(np.mean([row[metric] for row in self.scores.values()]))


def check_same_encoders(model: Sec2Sec, index: CacheIndex, checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose encoders are not the cache's: its predictions on the cache would be noise."""
    key = encoder_settings_mismatch(index.config, model.config)
    if key is not None:
        raise ValueError(
            f"checkpoint {checkpoint} has model.{key} = {getattr(model.config, key)!r} but the cache was "
            f"extracted with {getattr(index.config, key)!r}; evaluate on the cache it was trained on"
        )
    for name, digest in encoder_identity(model).items():
        if index.encoders.get(name) != digest:
            raise ValueError(
                f"the {name} weights of checkpoint {checkpoint} differ from those that made the cache; "
                "evaluate on the cache it was trained on, or pass --from-clips (e.g. after --finetune)"
            )


def evaluate(
    checkpoint: str | Path,
    cache: str | Path,
    split: str = "test",
    from_clips: bool = False,
    device: str | torch.device = "cpu",
    without: str = "",
) -> Evaluation:
    """Predict every clip of `split` in the cache on `device` and score it (see the module docstring).

    `without`: "video" or "audio" is masked as missing in every window (as a --no-camera or --no-mic run).
    No collectives: under torchrun the `evaluate` command runs this on rank 0 while the others wait.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not allowed; use one of {', '.join(SPLITS)}")
    if without not in WITHOUT:
        raise ValueError(f"without = {without!r} is not allowed; use video or audio (or nothing)")
    model, ckpt = load_model(checkpoint)
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.to(device)  # --from-clips encodes there too
    index = read_index(cache)
    if not from_clips:
        check_same_encoders(model, index, checkpoint)
    meta = ckpt.meta
    assignment = pinned_split(
        cache, index.dataset, index.records(), meta.get("split", "official"), int(meta.get("split_seed", 0))
    )
    check_trained_split(assignment, meta.get("split_digest", ""), checkpoint)
    records = apply_split(index.records(), assignment)
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise ValueError(f"the {split} split of cache {cache} is empty; choose another --split")
    heads = model.config.heads
    thresholds = meta.get("label_thresholds") if heads.task == "binary" else None
    if heads.task == "binary" and not thresholds:
        raise ValueError(f"checkpoint {checkpoint} has no label thresholds in its meta; it was not made by train")
    truth = labels(chosen, heads.outputs, thresholds)
    features = (
        features_from_clips(model, chosen) if from_clips else load_features(cache, index, [r.clip_id for r in chosen])
    )
    if without:
        absent = torch.zeros_like(features.video_ok)
        features = replace(features, **{f"{without}_ok": absent})
    probabilities = predict(model, features_to(features, device))
    rate = _positive_rate(ckpt, heads.task)
    scores = score_outputs(heads.outputs, heads.task, truth, probabilities, rate)
    return Evaluation(split, heads.task, [r.clip_id for r in chosen], truth, probabilities, scores)


def _positive_rate(ckpt: Checkpoint, task: str) -> np.ndarray | None:
    rate = ckpt.meta.get("train_positive_rate") or []
    return np.asarray(rate, dtype=np.float64) if task == "binary" and rate else None


def results_table(result: Evaluation, title: str) -> Table:
    """Binary: one row per (output, metric) with the model and the majority-class baseline side by side.
    Regression: one row per output with mean accuracy and Pearson r. Both end with the mean over outputs."""
    table = Table(title=title)
    table.add_column("output")
    if result.task == "binary":
        table.add_column("metric")
        table.add_column("model", justify="right")
        table.add_column("majority baseline", justify="right")
        for name in [*result.scores, "mean"]:
            for m in BINARY_METRICS:
                model = result.average(m) if name == "mean" else result.scores[name][m]
                base_key = f"majority_{m}"
                has_base = all(base_key in row for row in result.scores.values())
                base = (
                    (result.average(base_key) if name == "mean" else result.scores[name][base_key])
                    if has_base
                    else None
                )
                style = "bold" if name == "mean" else None
                table.add_row(
                    name, m.replace("_", " "), f"{model:.4f}", "-" if base is None else f"{base:.4f}", style=style
                )
        return table
    table.add_column("mean accuracy", justify="right")
    table.add_column("pearson r", justify="right")
    for name, row in result.scores.items():
        table.add_row(name, f"{row['mean_accuracy']:.4f}", f"{row['pearson_r']:.4f}")
    table.add_row("mean", f"{result.average('mean_accuracy'):.4f}", f"{result.average('pearson_r'):.4f}", style="bold")
    return table


def _run(args: argparse.Namespace) -> int:
    with session(args.device) as dist:
        if dist.main:
            _report(args, evaluate(args.checkpoint, args.cache, args.split, args.from_clips, dist.device, args.without))
        dist.barrier()
    return 0


def _report(args: argparse.Namespace, result: Evaluation) -> None:
    console = Console()
    console.print(results_table(result, f"{args.checkpoint} on the {args.split} split ({len(result.ids)} clips)"))
    if args.out:
        payload = {
            "split": result.split,
            "scores": result.scores,
            "predictions": {cid: p.tolist() for cid, p in zip(result.ids, result.probabilities, strict=True)},
        }
        Path(args.out).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        console.print(f"scores and per-clip predictions written to {args.out}")


def register(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_run)
