"""`sec2sec evaluate`: a trained checkpoint + a feature cache -> the metrics of one split.

Binary outputs: accuracy, F1, balanced accuracy, macro-F1, and the majority-class baseline beside them.
Regression outputs: Pearson r per output and their mean (ABAW5 ERI's measure), mean accuracy 1 - |y - y_hat|,
MSE, and the training-mean baseline's MSE and mean accuracy. With per-second labels, a second table pools
every labelled second: Pearson r, CCC and MSE (regression) or the binary metrics, on the targets training
validates on (`prepared.per_second_targets`: a clip without a trace counts with its clip label on its last
second). Clips whose labels were withheld (Hume-Reaction's test set) are never scored.
The split and the label thresholds are the ones the checkpoint was trained with (stored in its meta); the
split is the one pinned in the cache folder, and a cache changed or re-split since training is refused.
Under torchrun (e.g. as the last step of a multi-process job) rank 0 evaluates and prints; the other
ranks wait for it at a barrier and print nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from sec2sec.checkpoint import Checkpoint, encoder_settings_mismatch, model_from_checkpoint, setting
from sec2sec.model import Sec2Sec
from sec2sec.offline.batching import features_from_clips
from sec2sec.offline.datasets import SPLITS, labelled, labels
from sec2sec.offline.distributed import features_to, resolve_device
from sec2sec.offline.features import CacheIndex, Features, encoder_identity, load_features, read_index
from sec2sec.offline.metrics import BINARY_METRICS, score_outputs, score_seconds, undefined_reasons
from sec2sec.offline.prepared import per_second_targets
from sec2sec.offline.records import ClipRecord
from sec2sec.offline.seconds import labelled_seconds, predict
from sec2sec.offline.splits import apply_split, check_trained_split, pinned_split

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
    second_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # per-second labels only
    unlabelled: int = 0  # clips of the split without labels (withheld), predicted by nobody, never scored
    # per output, why a metric of `scores` / `second_scores` is undefined (NaN), e.g. Pearson r of constant labels
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    second_undefined: dict[str, dict[str, str]] = field(default_factory=dict)

    def average(self, metric: str) -> float:
        return float(np.mean([row[metric] for row in self.scores.values()]))


def check_same_encoders(model: Sec2Sec, index: CacheIndex, checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose encoders are not the cache's: its predictions on the cache would be noise."""
    key = encoder_settings_mismatch(index.config, model.config)
    if key is not None:
        raise ValueError(
            f"checkpoint {checkpoint} has model.{key} = {setting(model.config, key)!r} but the cache was "
            f"extracted with {setting(index.config, key)!r}; evaluate on the cache it was trained on"
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
    model, ckpt = model_from_checkpoint(checkpoint)
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
    heads = model.config.heads
    records = apply_split(index.records(), assignment)
    in_split, chosen = _scored_clips(records, split, heads.outputs, cache)
    thresholds = meta.get("label_thresholds") if heads.task == "binary" else None
    if heads.task == "binary" and not thresholds:
        raise ValueError(f"checkpoint {checkpoint} has no label thresholds in its meta; it was not made by train")
    truth = labels(chosen, heads.outputs, thresholds)
    features = (
        features_from_clips(model, chosen) if from_clips else load_features(cache, index, [r.clip_id for r in chosen])
    )
    if without:
        absent = torch.zeros_like(features.video_ok)
        features = replace(features, video_ok=absent) if without == "video" else replace(features, audio_ok=absent)
    features = features_to(features, device)
    probabilities = predict(model, features)
    rate = _positive_rate(ckpt, heads.task)
    mean = np.asarray(meta["train_mean"], dtype=np.float64) if meta.get("train_mean") else None
    scores = score_outputs(heads.outputs, heads.task, truth, probabilities, rate, mean)
    seconds: dict[str, dict[str, float]] = {}
    seconds_undefined: dict[str, dict[str, str]] = {}
    if any(r.seconds for r in records):  # as `prepare` decides it, so validation and evaluate agree
        seconds, seconds_undefined = _second_scores(model, chosen, truth, thresholds, features)
    ids = [r.clip_id for r in chosen]
    undefined = undefined_reasons(heads.outputs, scores, truth, probabilities)
    unlabelled = len(in_split) - len(chosen)
    return Evaluation(
        split, heads.task, ids, truth, probabilities, scores, seconds, unlabelled, undefined, seconds_undefined
    )


def _second_scores(
    model: Sec2Sec,
    chosen: list[ClipRecord],
    truth: np.ndarray,
    thresholds: dict[str, float] | None,
    features: Features,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """Per-second metrics of the clips `chosen` on the targets training validates on (`per_second_targets`:
    a clip without a trace counts with its clip label on its last second), and why any is undefined."""
    heads = model.config.heads
    cpu = replace(features, lengths=features.lengths.cpu())  # one sync, not one per clip
    targets = per_second_targets(chosen, heads.outputs, thresholds, torch.from_numpy(truth), cpu)
    targets[~labelled_seconds(targets, cpu.lengths)] = float("nan")
    predicted = predict(model, features, per_second=True)
    scores = score_seconds(heads.outputs, heads.task, targets.numpy(), predicted)
    return scores, undefined_reasons(heads.outputs, scores, targets.numpy(), predicted)


def _scored_clips(
    records: list[ClipRecord], split: str, outputs: tuple[str, ...], cache: str | Path
) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """The clips of `split`, and those of them that carry labels (the ones scored); refuses a split that is
    empty or has no labels at all, naming what to do."""
    in_split = [r for r in records if r.split == split]
    chosen = [r for r in in_split if labelled(r, outputs)]
    if not in_split:
        raise ValueError(f"the {split} split of cache {cache} is empty; choose another --split")
    if not chosen:
        raise ValueError(
            f"the {split} split of cache {cache} has no labels ({len(in_split)} clips whose labels were withheld, "
            "as Hume-Reaction's test set); score --split validation"
        )
    return in_split, chosen


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
    columns = [c for c in REGRESSION_COLUMNS if all(c in row for row in result.scores.values())]
    for c in columns:
        table.add_column(REGRESSION_COLUMNS[c], justify="right")
    for name, row in result.scores.items():
        table.add_row(name, *(f"{row[c]:.4f}" for c in columns))
    table.add_row("mean", *(f"{result.average(c):.4f}" for c in columns), style="bold")
    return table


REGRESSION_COLUMNS = {
    "pearson_r": "pearson r",
    "mean_accuracy": "mean accuracy",
    "mse": "MSE",
    "baseline_mse": "train-mean MSE",
    "baseline_mean_accuracy": "train-mean accuracy",
}
SECOND_COLUMNS = {"pearson_r": "pearson r", "ccc": "CCC", "mse": "MSE", "mean_accuracy": "mean accuracy"}


def seconds_table(result: Evaluation, title: str) -> Table:
    """Per-second metrics (every labelled second of the split pooled), one row per output and the mean."""
    table = Table(title=title)
    table.add_column("output")
    first = next(iter(result.second_scores.values()))
    columns = {k: v for k, v in SECOND_COLUMNS.items() if k in first} or {m: m.replace("_", " ") for m in first}
    for label in columns.values():
        table.add_column(label, justify="right")
    for name, row in result.second_scores.items():
        table.add_row(name, *(f"{row[c]:.4f}" for c in columns))
    means = [float(np.mean([row[c] for row in result.second_scores.values()])) for c in columns]
    table.add_row("mean", *(f"{v:.4f}" for v in means), style="bold")
    return table
