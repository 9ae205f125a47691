"""`sec2sec train`: cached encoder tokens + labels -> a trained checkpoint (RUN/best.pt), metrics per epoch.

The co-attention block, the temporal model and the heads are trained on the cache's tokens; the encoders
stay frozen and are the cache's own weights (`encoders.pt`), so `best.pt` holds exactly the encoders that
made the training features and gives the same numbers live. `--finetune` trains through the encoders from
the raw clips instead (read with `file_windows`, as replay reads them).

What the published code got wrong and this loop does not: `zero_grad` before every step; the best weights
are a deep copy (not an alias of the live model); AdamW at a fixed learning rate of `train.lr` (no 1e-7 /
StepLR); splits by film (official sets, or a seeded film-disjoint split), never by clip; early stopping on
the validation balanced accuracy (binary) or mean accuracy (regression), not on plain accuracy.
Resumable: RUN/last.pt holds the weights, optimizer, RNG state and history after every epoch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sec2sec.checkpoint import save_checkpoint
from sec2sec.config import Config, load_config, to_dict
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import SPLIT_MODES
from sec2sec.offline.features import ENCODERS, Features, clip_loader, encode_clip, features_from_clips, stack_features
from sec2sec.offline.metrics import headline, score_outputs
from sec2sec.offline.prepared import Prepared, Split, build_model, drop_modalities, prepare
from sec2sec.offline.train_state import (
    History,
    identity,
    load_state,
    load_trainable,
    save_state,
    trainable_state,
    write_metrics,
)


def logits_of(
    model: Sec2Sec, features: Features, rows: torch.Tensor, drop: tuple[float, torch.Generator] | None = None
) -> torch.Tensor:
    """Rows of cached clips -> logits (len(rows), n_outputs), tokens upcast to float32. `drop`: modality
    dropout (probability, generator) for training; applied only to models that use both modalities."""
    video = features.video[rows].float() if model.fusion.use_video else None
    audio = features.audio[rows].float() if model.fusion.use_audio else None
    video_ok, audio_ok = features.video_ok[rows], features.audio_ok[rows]
    if drop is not None and drop[0] > 0 and model.fusion.use_video and model.fusion.use_audio:
        video_ok, audio_ok = drop_modalities(video_ok, audio_ok, *drop)
    logits, _ = model.forward_tokens(video, audio, features.lengths[rows], video_ok, audio_ok)
    return logits


def loss_of(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """bce: BCE-with-logits on 0/1 (or soft) targets; mse / l1: on sigmoid outputs vs scores in [0, 1]."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    fn = F.mse_loss if loss == "mse" else F.l1_loss
    return fn(torch.sigmoid(logits), targets)


@torch.no_grad()
def predict(model: Sec2Sec, features: Features, batch: int = 64) -> np.ndarray:
    """Sigmoid outputs (N, n_outputs) for every cached clip, in eval mode."""
    model.eval()
    n = features.lengths.shape[0]
    out = [torch.sigmoid(logits_of(model, features, torch.arange(s, min(s + batch, n)))) for s in range(0, n, batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.config.heads.outputs)), dtype=np.float32)


def _accuracy(task: str, scores: dict[str, dict[str, float]]) -> float:
    key = "accuracy" if task == "binary" else "mean_accuracy"
    return float(np.mean([row[key] for row in scores.values()]))


def validate(model: Sec2Sec, split: Split, config: Config) -> dict[str, float]:
    """Loss, mean accuracy and the early-stopping metric on one split."""
    probabilities = predict(model, split.features, config.train.batch_size * 4)
    p = torch.from_numpy(probabilities).clamp(1e-7, 1 - 1e-7)
    loss = loss_of(torch.logit(p), split.targets, config.train.loss)
    heads = config.model.heads
    scores = score_outputs(heads.outputs, heads.task, split.targets.numpy(), probabilities)
    return {"loss": float(loss), "accuracy": _accuracy(heads.task, scores), "metric": headline(heads.task, scores)[1]}


def _start_epoch(model: Sec2Sec, n: int, seed: int, epoch: int) -> torch.Tensor:
    """Train mode with the encoders' BatchNorm statistics kept (eval); the epoch's seeded order of n items."""
    model.train()
    for name in ENCODERS:
        if getattr(model, name) is not None:
            getattr(model, name).eval()
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _step(model: Sec2Sec, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> None:
    """Gradients of `loss` (zeroed first), clipped to `grad_clip` when > 0, then one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def train_epoch(
    model: Sec2Sec,
    optimizer: torch.optim.Optimizer,
    split: Split,
    config: Config,
    epoch: int,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass over the training split in a seeded order -> mean loss and accuracy (from training logits)."""
    t = config.train
    n = split.targets.shape[0]
    order = _start_epoch(model, n, t.seed, epoch)
    total, seen, outputs = 0.0, 0, []
    task = progress.add_task(f"epoch {epoch + 1}", total=n, note="") if progress is not None else None
    drop = (t.modality_dropout, torch.Generator().manual_seed(t.seed * 100_003 + epoch + 7_919))
    for start in range(0, n, t.batch_size):
        rows = order[start : start + t.batch_size]
        logits = logits_of(model, split.features, rows, drop)
        loss = loss_of(logits, split.targets[rows], t.loss)
        _step(model, optimizer, loss, t.grad_clip)
        total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
        outputs.append((rows, torch.sigmoid(logits.detach())))
        if progress is not None:
            progress.update(task, advance=len(rows))
    if progress is not None:
        progress.remove_task(task)
    rows = torch.cat([r for r, _ in outputs])
    probabilities = torch.cat([p for _, p in outputs]).numpy()
    heads = config.model.heads
    scores = score_outputs(heads.outputs, heads.task, split.targets[rows].numpy(), probabilities)
    return {"loss": total / max(seen, 1), "accuracy": _accuracy(heads.task, scores)}


def finetune_epoch(
    model: Sec2Sec,
    optimizer: torch.optim.Optimizer,
    split: Split,
    config: Config,
    epoch: int,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass through the encoders too: each batch of clips is decoded again and encoded with gradient."""
    t = config.train
    n = len(split.records)
    order = _start_epoch(model, n, t.seed, epoch)
    total, seen = 0.0, 0
    for start in range(0, n, t.batch_size):
        rows = order[start : start + t.batch_size]
        chosen = [split.records[i] for i in rows.tolist()]
        parts = []
        for record, clip in zip(chosen, clip_loader(chosen, model.config, 0), strict=True):
            if clip.error:
                raise ValueError(f"clip {record.path} cannot be read: {clip.error}")
            parts.append((*encode_clip(model, clip, 8), clip.video_ok, clip.audio_ok, clip.length))
        features = stack_features([r.clip_id for r in chosen], parts)
        loss = loss_of(logits_of(model, features, torch.arange(len(chosen))), split.targets[rows], t.loss)
        _step(model, optimizer, loss, t.grad_clip)
        total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
    return {"loss": total / max(seen, 1), "accuracy": float("nan")}


@dataclass(frozen=True)
class TrainResult:
    """The outcome of `fit`: where best.pt is, its epoch and validation metric, epochs run, time per epoch."""

    best_path: Path
    best_epoch: int
    best_metric: float
    epochs: int
    seconds_per_epoch: float
    resumed_from: int


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _one_epoch(
    model: Sec2Sec,
    optimizer: torch.optim.Optimizer,
    data: Prepared,
    config: Config,
    epoch: int,
    finetune: bool,
    progress,
) -> dict[str, float]:
    started = time.perf_counter()
    step = finetune_epoch if finetune else train_epoch
    train = step(model, optimizer, data.splits["train"], config, epoch, progress)
    train_seconds = time.perf_counter() - started
    val_split = data.splits["validation"]
    if finetune:
        val_split = replace(val_split, features=features_from_clips(model, val_split.records))
    val = validate(model, val_split, config)
    return {
        "epoch": epoch + 1,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_metric": val["metric"],
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
    }


def _checkpoint_meta(
    data: Prepared, config: Config, history: History, split_mode: str, split_seed: int, finetune: bool
) -> dict[str, Any]:
    task = config.model.heads.task
    return {
        "dataset": data.index.dataset,
        "epoch": history.best_epoch,
        "val_metric": history.best_metric,
        "val_metric_name": "balanced_accuracy" if task == "binary" else "mean_accuracy",
        "clip_seconds": config.model.clip_seconds,
        "split": split_mode,
        "split_seed": split_seed,
        "label_thresholds": data.thresholds or {},
        "train_positive_rate": data.positive_rate or [],
        "finetuned": finetune,
        "cache_encoders": data.index.encoders,
        "train": to_dict(config.train),
    }


def fit(
    cache: str | Path,
    config: Config,
    out: str | Path,
    *,
    split_mode: str = "official",
    split_seed: int = 0,
    finetune: bool = False,
    restart: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train on cache `cache` into folder `out` (best.pt, last.pt, metrics.csv); resumes from out/last.pt."""
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(cache, config, split_mode, split_seed)
    model = build_model(config, cache, data.index, data.splits["train"])
    for name in ENCODERS:
        if getattr(model, name) is not None:
            getattr(model, name).requires_grad_(finetune)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    ident = identity(config, data.index, split_mode, split_seed, finetune)
    last = out / "last.pt"
    history = History(rows=[])
    if last.is_file() and not restart:
        history = load_state(last, model, optimizer, ident)
        console.print(f"resuming {out} after epoch {history.epoch} (best {history.best_metric:.4f})")
    resumed_from = history.epoch
    with _progress(console) as progress:
        task = progress.add_task("train", total=config.train.epochs, completed=history.epoch, note="")
        while history.bad_epochs < config.train.patience and history.epoch < config.train.epochs:
            row = _one_epoch(model, optimizer, data, config, history.epoch, finetune, progress)
            history.epoch += 1
            history.rows.append(row)
            if history.best_state is None or row["val_metric"] > history.best_metric:
                history.best_metric, history.best_epoch, history.bad_epochs = row["val_metric"], history.epoch, 0
                history.best_state = trainable_state(model, finetune)
            else:
                history.bad_epochs += 1
            history.finished = history.bad_epochs >= config.train.patience  # stopped early
            save_state(last, model, optimizer, history, ident, finetune)
            write_metrics(out / "metrics.csv", history.rows)
            note = f"val {row['val_metric']:.3f} (best {history.best_metric:.3f} @ {history.best_epoch})"
            progress.update(task, completed=history.epoch, note=note)
    best = out / "best.pt"
    load_trainable(model, history.best_state)
    save_checkpoint(
        best, model, trained=True, meta=_checkpoint_meta(data, config, history, split_mode, split_seed, finetune)
    )
    per_epoch = float(np.mean([r["train_seconds"] for r in history.rows])) if history.rows else 0.0
    return TrainResult(best, history.best_epoch, history.best_metric, history.epoch, per_epoch, resumed_from)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    console = Console()
    r = fit(
        args.cache,
        config,
        args.out,
        split_mode=args.split,
        split_seed=args.split_seed,
        finetune=args.finetune,
        restart=args.restart,
        console=console,
    )
    console.print(
        f"[bold]train done[/]: {r.epochs} epochs ({r.seconds_per_epoch:.2f} s per epoch of training), best "
        f"validation {'balanced accuracy' if config.model.heads.task == 'binary' else 'mean accuracy'} "
        f"{r.best_metric:.4f} at epoch {r.best_epoch} -> {r.best_path}; per-epoch metrics in "
        f"{Path(args.out) / 'metrics.csv'}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train fusion + temporal model + heads on a feature cache")
    p.add_argument("--config", default="configs/default.toml", help="TOML config ([model] and [train])")
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
    p.set_defaults(func=_run)
