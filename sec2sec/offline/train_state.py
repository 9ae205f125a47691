"""RUN/last.pt and RUN/metrics.csv: the training loop's own state, saved after every epoch so a run resumes exactly."""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sec2sec.config import Config, to_dict
from sec2sec.model import ENCODER_MODULES, Sec2Sec
from sec2sec.offline.features import CacheIndex
from sec2sec.offline.output_files import replace_text

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


def trainable_state(model: Sec2Sec, finetune: bool) -> dict[str, torch.Tensor]:
    """The weights training changes (without the frozen encoders unless fine-tuning), deep-copied."""
    keep = {k: v for k, v in model.state_dict().items() if finetune or not k.startswith(ENCODER_MODULES)}
    return copy.deepcopy(keep)


def load_trainable(model: Sec2Sec, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(ENCODER_MODULES) for k in missing):
        raise ValueError(f"saved training state does not fit the model (missing {missing[:3]}, extra {unexpected[:3]})")


@dataclass
class History:
    """Mutable training progress (the loop's own state, saved to last.pt after every epoch)."""

    epoch: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    rows: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The trainable weights of the best epoch so far."""
        if self.best_state is None:
            raise ValueError("no training epoch has finished yet, so there are no best weights")
        return self.best_state

    def record(self, row: dict[str, float], model: Sec2Sec, finetune: bool, patience: int) -> None:
        """Append an epoch's row; keep a copy of the weights when the validation metric improved."""
        self.epoch += 1
        self.rows.append(row)
        if self.best_state is None or row["val_metric"] > self.best_metric:
            self.best_metric, self.best_epoch, self.bad_epochs = row["val_metric"], self.epoch, 0
            self.best_state = trainable_state(model, finetune)
        else:
            self.bad_epochs += 1
        self.finished = self.bad_epochs >= patience  # stopped early


def identity(config: Config, index: CacheIndex, split_mode: str, split_seed: int, finetune: bool) -> dict[str, Any]:
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
    path: Path,
    model: Sec2Sec,
    optimizer: torch.optim.Optimizer,
    history: History,
    ident: dict[str, Any],
    finetune: bool,
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


def load_state(path: Path, model: Sec2Sec, optimizer: torch.optim.Optimizer, ident: dict[str, Any]) -> History:
    """Restore RUN/last.pt into model and optimizer; refuse a state made with another config or cache."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a sec2sec training state; remove it or choose another --out")
    if payload["identity"] != ident:
        raise ValueError(
            f"{path} was made with another config, cache, split or --finetune setting; use another --out, "
            "or --restart to train from scratch in this folder"
        )
    load_trainable(model, payload["model"])
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
    """RUN/metrics.csv, one row per finished epoch (rewritten whole, so a resumed run stays consistent; replaced,
    never truncated first, so a crash leaves the previous epoch's file)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    replace_text(path, text.getvalue())
