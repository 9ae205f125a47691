"""`sec2sec describe`: the model's parts, parameter counts and GFLOP per one-second window."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from sec2sec.config import config_help, load_config
from sec2sec.model import Sec2Sec
from sec2sec.stages import Stage, measure_stages, parameter_count


def describe(config_path: str | None, console: Console) -> list[Stage]:
    config = load_config(config_path).model
    model = Sec2Sec(config).eval()
    stages = measure_stages(model)
    table = Table(title=f"Sec2Sec model from {config_path or 'the built-in defaults'}")
    for column in ("stage", "input", "parameters", "GFLOP / window"):
        table.add_column(column, justify="left" if column in ("stage", "input") else "right")
    for s in stages:
        table.add_row(s.name, s.shape, f"{s.params:,}", f"{s.gflop:.3f}")
    table.add_row("total", "", f"{parameter_count(model):,}", f"{sum(s.gflop for s in stages):.3f}", style="bold")
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


def run(args: argparse.Namespace) -> int:
    describe(args.config, Console())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("describe", help="print the model's parts, parameter counts and GFLOP per window")
    p.add_argument("--config", help=config_help())
    p.set_defaults(func=run)
