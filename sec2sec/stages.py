"""The stages of one window's computation: parameter counts and GFLOP (for `sec2sec describe` and the benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sec2sec.model import Sec2Sec


@dataclass(frozen=True)
class Stage:
    """One stage of the per-window computation: its module(s), input description and GFLOP."""

    name: str
    params: int
    gflop: float
    shape: str


R = TypeVar("R")


def count_flops(fn: Callable[..., R], *args: torch.Tensor | None) -> tuple[float, R]:
    """GFLOP of one call (matmuls and convolutions, as torch's FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() / 1e9, out


def parameter_count(*modules: nn.Module | None) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


@torch.inference_mode()
def measure_stages(model: Sec2Sec, height: int = 240, width: int = 320) -> list[Stage]:
    """Each stage run once on a blank window: video/audio front end + encoder, fusion, temporal step, heads."""
    cfg = model.config
    stages, vt, at = [], None, None
    if model.video_frontend is not None and model.video_encoder is not None:
        frames = torch.zeros(1, cfg.video.frames_per_window, height, width, 3, dtype=torch.uint8)
        clip = model.video_frontend(frames)
        g, vt = count_flops(model.video_encoder, clip)
        stages.append(
            Stage(
                f"video encoder ({cfg.video.encoder})", parameter_count(model.video_encoder), g, str(tuple(clip.shape))
            )
        )
    if model.audio_frontend is not None and model.audio_encoder is not None:
        image = model.audio_frontend(torch.zeros(1, cfg.audio.sample_rate))
        g, at = count_flops(model.audio_encoder, image)
        stages.append(
            Stage("audio encoder (resnet18)", parameter_count(model.audio_encoder), g, str(tuple(image.shape)))
        )
    g, fused = count_flops(model.fuse, vt, at)
    tokens = f"{model.video_tokens if vt is not None else 0}+{model.audio_tokens if at is not None else 0} tokens"
    stages.append(
        Stage(f"fusion ({cfg.fusion.mode}, {cfg.fusion.modalities})", parameter_count(model.fusion), g, tokens)
    )
    g, (summary, _, _) = count_flops(lambda f: model.temporal.step(f, None), fused)
    stages.append(
        Stage(f"temporal step ({cfg.temporal.kind})", parameter_count(model.temporal), g, str(tuple(fused.shape)))
    )
    g, _ = count_flops(model.heads, summary)
    stages.append(
        Stage(f"heads ({', '.join(cfg.heads.outputs)})", parameter_count(model.heads), g, str(tuple(summary.shape)))
    )
    return stages
