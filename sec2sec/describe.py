"""`sec2sec describe`: the model's parts, parameter counts and GFLOP per one-second window."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sec2sec.config import config_help, load_config
from sec2sec.model import Sec2Sec


@dataclass(frozen=True)
class Stage:
    """One stage of the per-window computation: its module(s), input description and GFLOP."""

    name: str
    params: int
    gflop: float
    shape: str


def count_flops(fn, *args: torch.Tensor) -> tuple[float, torch.Tensor]:
    """GFLOP of one call (matmuls and convolutions, as torch's FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() / 1e9, out


def _params(*modules: nn.Module | None) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


@torch.inference_mode()
def measure_stages(model: Sec2Sec, height: int = 240, width: int = 320) -> list[Stage]:
    """Each stage run once on a blank window: video/audio front end + encoder, fusion, temporal step, heads."""
    cfg = model.config
    stages, vt, at = [], None, None
    if model.video_encoder is not None:
        frames = torch.zeros(1, cfg.video.frames_per_window, height, width, 3, dtype=torch.uint8)
        clip = model.video_frontend(frames)
        g, vt = count_flops(model.video_encoder, clip)
        stages.append(
            Stage(f"video encoder ({cfg.video.encoder})", _params(model.video_encoder), g, str(tuple(clip.shape)))
        )
    if model.audio_encoder is not None:
        image = model.audio_frontend(torch.zeros(1, cfg.audio.sample_rate))
        g, at = count_flops(model.audio_encoder, image)
        stages.append(Stage("audio encoder (resnet18)", _params(model.audio_encoder), g, str(tuple(image.shape))))
    g, fused = count_flops(model.fuse, vt, at)
    tokens = f"{model.video_tokens if vt is not None else 0}+{model.audio_tokens if at is not None else 0} tokens"
    stages.append(Stage(f"fusion ({cfg.fusion.mode}, {cfg.fusion.modalities})", _params(model.fusion), g, tokens))
    g, (summary, _, _) = count_flops(lambda f: model.temporal.step(f, None), fused)
    stages.append(Stage(f"temporal step ({cfg.temporal.kind})", _params(model.temporal), g, str(tuple(fused.shape))))
    g, _ = count_flops(model.heads, summary)
    stages.append(Stage(f"heads ({', '.join(cfg.heads.outputs)})", _params(model.heads), g, str(tuple(summary.shape))))
    return stages


def describe(config_path: str | None, console: Console) -> list[Stage]:
    config = load_config(config_path).model
    model = Sec2Sec(config).eval()
    stages = measure_stages(model)
    table = Table(title=f"Sec2Sec model from {config_path or 'the built-in defaults'}")
    for column in ("stage", "input", "parameters", "GFLOP / window"):
        table.add_column(column, justify="left" if column in ("stage", "input") else "right")
    for s in stages:
        table.add_row(s.name, s.shape, f"{s.params:,}", f"{s.gflop:.3f}")
    table.add_row("total", "", f"{_params(model):,}", f"{sum(s.gflop for s in stages):.3f}", style="bold")
    console.print(table)
    flags = ", ".join(f"{k}: {'pretrained' if v else 'RANDOM'}" for k, v in model.pretrained.items())
    console.print(
        f"encoders: {flags}; outputs: {list(config.heads.outputs)} ({config.heads.task}); "
        f"horizon: {config.clip_seconds} s"
    )
    for line in token_lines(model):
        console.print(line)
    return stages


def _cells(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)


def token_lines(model: Sec2Sec) -> list[str]:
    """One line per modality: the encoder's layer4 map and the token grid attention runs over."""
    cfg, lines = model.config, []
    if model.video_encoder is not None:
        v = cfg.video
        lines.append(
            f"video tokens: {v.encoder} layer4 map (512, {', '.join(map(str, v.map_shape))}) for "
            f"{v.frames_per_window} frames of {v.crop}x{v.crop} -> grid {_cells(v.token_grid)} (time x height x "
            f"width) = {model.video_tokens} tokens"
        )
    if model.audio_encoder is not None:
        a = cfg.audio
        lines.append(
            f"audio tokens: resnet18 layer4 map (512, {', '.join(map(str, a.map_shape))}) for an MFCC image of "
            f"{a.image_size[0]}x{a.image_size[1]} -> grid {_cells(a.token_grid)} (frequency x time) = "
            f"{model.audio_tokens} tokens"
        )
    return lines


def _run(args: argparse.Namespace) -> int:
    describe(args.config, Console())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("describe", help="print the model's parts, parameter counts and GFLOP per window")
    p.add_argument("--config", help=config_help())
    p.set_defaults(func=_run)
