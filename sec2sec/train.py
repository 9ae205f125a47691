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
import copy
import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sec2sec.checkpoint import encoder_settings_mismatch, save_checkpoint, without_weight_files
from sec2sec.config import Config, load_config, to_dict
from sec2sec.datasets import SPLIT_MODES, ClipRecord, assign_splits, label_thresholds, labels
from sec2sec.features import (
    ENCODERS,
    CacheIndex,
    Features,
    clip_loader,
    encode_clip,
    load_features,
    read_encoders,
    read_index,
)
from sec2sec.metrics import headline, score_outputs
from sec2sec.model import Sec2Sec

STATE_FORMAT = "sec2sec-train-state"
COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_metric",
    "train_seconds",
    "seconds",
)


@dataclass(frozen=True)
class Split:
    """One split's clips: records, cached features, and targets (N, n_outputs) float32 (0/1 or scores)."""

    records: list[ClipRecord]
    features: Features
    targets: torch.Tensor


@dataclass(frozen=True)
class Prepared:
    """Everything `fit` needs: the cache index, the three splits, label thresholds (binary) and the
    training positive rate per output (for the majority baseline)."""

    index: CacheIndex
    splits: dict[str, Split]
    thresholds: dict[str, float] | None
    positive_rate: list[float] | None


def prepare(cache: str | Path, config: Config, split_mode: str, split_seed: int) -> Prepared:
    """Read the cache, split it by film (or officially), and label it; see `sec2sec.datasets.labels`."""
    index = read_index(cache)
    _check_cache_config(index, config)
    records = assign_splits(index.records(), split_mode, split_seed)
    heads = config.model.heads
    thresholds = None
    if heads.task == "binary":
        thresholds = label_thresholds(records, heads.outputs, config.train.label_threshold)
    splits = {}
    for name in ("train", "validation", "test"):
        chosen = [r for r in records if r.split == name]
        if not chosen and name != "test":
            raise ValueError(f"the {name} split of cache {cache} is empty; extract more clips or use --split film")
        y = torch.from_numpy(labels(chosen, heads.outputs, thresholds)) if chosen else torch.zeros(0)
        if heads.task == "regression" and chosen and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"regression targets must lie in [0, 1]; the {name} split has {y.min():.3g}..{y.max():.3g}"
            )
        splits[name] = Split(chosen, load_features(cache, index, [r.clip_id for r in chosen]), y)
    rate = splits["train"].targets.mean(dim=0).tolist() if thresholds is not None else None
    return Prepared(index, splits, thresholds, rate)


def _check_cache_config(index: CacheIndex, config: Config) -> None:
    key = encoder_settings_mismatch(index.config, config.model)
    if key is not None:
        raise ValueError(
            f"the cache was extracted with model.{key} = {getattr(index.config, key)!r} but the config has "
            f"{getattr(config.model, key)!r}; use the extraction's settings or extract again"
        )


def build_model(config: Config, folder: str | Path, index: CacheIndex, train: Split | None) -> Sec2Sec:
    """The model of `config` with the cache's encoder weights and, given the training split, FeatureNorm
    statistics from its tokens. Seeded with `train.seed`, so the initial weights are reproducible."""
    torch.manual_seed(config.train.seed)
    model = Sec2Sec(without_weight_files(config.model))
    state = read_encoders(folder, index)
    for name in ENCODERS:
        module = getattr(model, name)
        if module is not None:
            module.load_state_dict(state[name])
            module.pretrained = index.pretrained.get(name.split("_")[0], False)
    if train is not None:
        set_norm_statistics(model, train.features)
    return model


def _token_statistics(tokens: torch.Tensor, ok: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-channel mean and std over the valid windows of (N, T, n, 512) tokens (float64, in chunks)."""
    valid = ok & (torch.arange(ok.shape[1])[None, :] < lengths[:, None])
    total, square, count = torch.zeros(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64), 0
    for start in range(0, tokens.shape[0], 256):
        x = tokens[start : start + 256][valid[start : start + 256]].reshape(-1, 512).double()
        total, square, count = total + x.sum(0), square + (x * x).sum(0), count + x.shape[0]
    if count == 0:
        return torch.zeros(512), torch.ones(512)
    mean = total / count
    return mean.float(), (square / count - mean * mean).clamp_min(0).sqrt().float()


def set_norm_statistics(model: Sec2Sec, features: Features) -> None:
    """Standardise each token channel with the training split's statistics (FeatureNorm)."""
    if features.video is not None and model.fusion.use_video:
        model.fusion.video_norm.set_statistics(*_token_statistics(features.video, features.video_ok, features.lengths))
    if features.audio is not None and model.fusion.use_audio:
        model.fusion.audio_norm.set_statistics(*_token_statistics(features.audio, features.audio_ok, features.lengths))


def logits_of(model: Sec2Sec, features: Features, rows: torch.Tensor) -> torch.Tensor:
    """Rows of cached clips -> logits (len(rows), n_outputs), tokens upcast to float32."""
    video = features.video[rows].float() if model.fusion.use_video else None
    audio = features.audio[rows].float() if model.fusion.use_audio else None
    logits, _ = model.forward_tokens(
        video, audio, features.lengths[rows], features.video_ok[rows], features.audio_ok[rows]
    )
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
    for start in range(0, n, t.batch_size):
        rows = order[start : start + t.batch_size]
        logits = logits_of(model, split.features, rows)
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


def trainable_state(model: Sec2Sec, finetune: bool) -> dict[str, torch.Tensor]:
    """The weights training changes (without the frozen encoders unless fine-tuning), deep-copied."""
    keep = {k: v for k, v in model.state_dict().items() if finetune or not k.startswith(ENCODERS)}
    return copy.deepcopy(keep)


def _load_trainable(model: Sec2Sec, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(ENCODERS) for k in missing):
        raise ValueError(f"saved training state does not fit the model (missing {missing[:3]}, extra {unexpected[:3]})")


@dataclass
class History:
    """Mutable training progress (the loop's own state, saved to last.pt after every epoch)."""

    epoch: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    rows: list[dict[str, float]] | None = None
    finished: bool = False


def _identity(config: Config, index: CacheIndex, split_mode: str, split_seed: int, finetune: bool) -> dict[str, Any]:
    train = {k: v for k, v in to_dict(config.train).items() if k not in ("epochs", "patience")}  # may be extended
    return {
        "model": to_dict(config.model),
        "train": train,
        "encoders": index.encoders,
        "split": split_mode,
        "split_seed": split_seed,
        "finetune": finetune,
    }


def save_state(
    path: Path, model: Sec2Sec, optimizer: torch.optim.Optimizer, history: History, ident: dict, finetune: bool
) -> None:
    """RUN/last.pt: everything needed to continue exactly where training stopped (weights_only-loadable)."""
    payload = {
        "format": STATE_FORMAT,
        "identity": ident,
        "model": trainable_state(model, finetune),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": history.epoch,
        "best_metric": history.best_metric,
        "best_epoch": history.best_epoch,
        "bad_epochs": history.bad_epochs,
        "best_state": history.best_state,
        "rows": history.rows or [],
        "finished": history.finished,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_state(path: Path, model: Sec2Sec, optimizer: torch.optim.Optimizer, ident: dict) -> History:
    """Restore RUN/last.pt into model and optimizer; refuse a state made with another config or cache."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a sec2sec training state; remove it or choose another --out")
    if payload["identity"] != ident:
        raise ValueError(
            f"{path} was made with another config, cache, split or --finetune setting; use another --out, "
            "or --restart to train from scratch in this folder"
        )
    _load_trainable(model, payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    return History(
        payload["epoch"],
        payload["best_metric"],
        payload["best_epoch"],
        payload["bad_epochs"],
        payload["best_state"],
        list(payload["rows"]),
        payload["finished"],
    )


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """RUN/metrics.csv, one row per finished epoch (rewritten whole, so a resumed run stays consistent)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in COLUMNS})


@torch.no_grad()
def features_from_clips(model: Sec2Sec, records: list[ClipRecord], workers: int = 1, batch: int = 8) -> Features:
    """Tokens of clips computed now with the model's own encoders (float32), in the cache's layout.

    Used by `--finetune` (the encoders change, so the cache no longer describes them) and by
    `evaluate --from-clips`. An unreadable clip is an error here: it was readable at extraction.
    """
    model.eval()
    parts: list[tuple] = []
    for record, clip in zip(records, clip_loader(records, model.config, workers), strict=True):
        if clip.error:
            raise ValueError(f"clip {record.path} cannot be read: {clip.error}")
        parts.append((*encode_clip(model, clip, batch), clip.video_ok, clip.audio_ok, clip.length))
    return _stack_features([r.clip_id for r in records], parts)


def _stack_features(ids: list[str], parts: list[tuple]) -> Features:
    def stack(k: int) -> torch.Tensor | None:
        return None if not parts or parts[0][k] is None else torch.stack([p[k] for p in parts])

    return Features(ids, stack(0), stack(1), stack(2), stack(3), torch.tensor([p[4] for p in parts]).long())


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
        features = _stack_features([r.clip_id for r in chosen], parts)
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
    ident = _identity(config, data.index, split_mode, split_seed, finetune)
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
    _load_trainable(model, history.best_state)
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
