"""Outputs from cached tokens, of the clip or of every second; which seconds carry a label; and the per-second
metrics of a split (the clip path's outputs are the last second's).

Row t of the per-second outputs is what the live stream reports after second t (`Sec2Sec.forward_per_second`).
"""

from __future__ import annotations

import numpy as np
import torch

from sec2sec.model import Sec2Sec
from sec2sec.offline.distributed import DataParallelModel, gather_rows
from sec2sec.offline.features import Features
from sec2sec.offline.metrics import score_seconds
from sec2sec.temporal import valid_mask


def logits_of(
    model: Sec2Sec | DataParallelModel, features: Features, rows: torch.Tensor, per_second: bool = False
) -> torch.Tensor:
    """Rows of cached clips -> logits (len(rows), n_outputs), tokens upcast to float32; with `per_second`,
    (len(rows), T, n_outputs) of every second (`Sec2Sec.forward_per_second`)."""
    video = _tokens(features.video, rows, "video") if model.fusion.use_video else None
    audio = _tokens(features.audio, rows, "audio") if model.fusion.use_audio else None
    video_ok, audio_ok, lengths = features.video_ok[rows], features.audio_ok[rows], features.lengths[rows]
    logits, _ = model.forward_tokens(video, audio, lengths, video_ok, audio_ok, per_second=per_second)
    return logits


def _tokens(tokens: torch.Tensor | None, rows: torch.Tensor, modality: str) -> torch.Tensor:
    """Rows of one modality's cached tokens, upcast to float32; the features must hold that modality."""
    if tokens is None:
        raise ValueError(f"the features hold no {modality} tokens, but the model uses {modality}")
    return tokens[rows].float()


def labelled_seconds(seconds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, n_outputs) per-second targets + (B,) lengths -> bool mask of the seconds that carry a label."""
    return ~torch.isnan(seconds) & valid_mask(lengths.to(seconds.device), seconds.shape[1])[:, :, None]


def clip_logits(per_second: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, n) per-second logits -> (B, n) the clip's: its last valid second's (the clip path's output)."""
    last = (lengths.to(per_second.device) - 1).clamp_min(0)
    return per_second[torch.arange(per_second.shape[0], device=per_second.device), last]


@torch.no_grad()
def predict(
    model: Sec2Sec, features: Features, batch: int = 64, rows: torch.Tensor | None = None, per_second: bool = False
) -> np.ndarray:
    """Sigmoid outputs (len(rows), n_outputs) for the cached clips `rows` (default: all), in eval mode; with
    `per_second`, (len(rows), T, n_outputs) of every second."""
    model.eval()
    rows = torch.arange(features.lengths.shape[0]) if rows is None else rows
    out = [
        torch.sigmoid(logits_of(model, features, rows[s : s + batch], per_second)).cpu()
        for s in range(0, len(rows), batch)
    ]
    shape = (0, features.video_ok.shape[1]) if per_second else (0,)
    return torch.cat(out).numpy() if out else np.zeros((*shape, len(model.config.heads.outputs)), dtype=np.float32)


def second_scores(
    model: Sec2Sec, features: Features, seconds: torch.Tensor, outputs: tuple[str, ...], task: str, batch: int
) -> dict[str, dict[str, float]]:
    """Per-second metrics of a split's cached `features` against its per-second targets `seconds`
    (N, T, n_outputs) (every rank predicts its share, all get all)."""
    steps, width = seconds.shape[1], len(outputs)
    flat = gather_rows(
        seconds.shape[0],
        lambda rows: predict(model, features, batch, rows, per_second=True).reshape(len(rows), -1),
        steps * width,
    )
    truth = seconds.cpu().clone()
    truth[~labelled_seconds(truth, features.lengths.cpu())] = float("nan")
    return score_seconds(outputs, task, truth.numpy(), flat.reshape(-1, steps, width))
