"""Encoder tokens of one second -> fused feature F_i, through self- and co-attention over real tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from sec2sec.config import FusionConfig
from sec2sec.encoders import TOKEN_WIDTH


class FeatureNorm(nn.Module):
    """Per-channel standardisation of encoder tokens with training-set statistics (identity until set)."""

    def __init__(self, width: int = TOKEN_WIDTH) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.mean) / self.std


class GridPosition(nn.Module):
    """Learned factorised position code for tokens on a grid: one table per axis, summed per cell.

    Video axes are (time, height, width), audio axes (frequency, time), so attention can use when and where.
    """

    def __init__(self, grid: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.axes = nn.ParameterList([nn.Parameter(torch.randn(n, width) * 0.02) for n in self.grid])

    def forward(self) -> torch.Tensor:
        """-> (prod(grid), width), cells in row-major order of the grid."""
        code = torch.zeros(*self.grid, self.axes[0].shape[1], device=self.axes[0].device)
        for axis, table in enumerate(self.axes):
            shape = [1] * len(self.grid) + [table.shape[1]]
            shape[axis] = self.grid[axis]
            code = code + table.view(shape)
        return code.reshape(math.prod(self.grid), -1)


class FeedForward(nn.Sequential):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )


class CoAttentionLayer(nn.Module):
    """One symmetric block over (B, Nv, d) video and (B, Na, d) audio tokens (pre-norm, residual).

    1. self-attention inside each modality; 2. co-attention (mode "co"): video queries attend to audio keys
    and values, audio queries to video, both from the same inputs; 3. a feed-forward per modality.
    Mode "self" (SA-SA) skips step 2. A missing modality (None) is passed through as None.
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        d, h, p = config.width, config.heads, config.dropout
        self.mode = config.mode
        self.self_attn = nn.ModuleDict({k: nn.MultiheadAttention(d, h, dropout=p, batch_first=True) for k in "va"})
        self.cross_attn = nn.ModuleDict({k: nn.MultiheadAttention(d, h, dropout=p, batch_first=True) for k in "va"})
        self.norms = nn.ModuleDict({k: nn.LayerNorm(d) for k in ("v1", "a1", "v2", "a2", "v3", "a3")})
        self.ff = nn.ModuleDict({k: FeedForward(d, config.ff_width, p) for k in "va"})
        self.drop = nn.Dropout(p)

    def forward(
        self, v: torch.Tensor | None, a: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, torch.Tensor]]:
        """Returns the new tokens and the attention maps (B, queries, keys), averaged over heads."""
        maps: dict[str, torch.Tensor] = {}
        tokens = {"v": v, "a": a}
        for k, x in tokens.items():
            if x is not None:
                y = self.norms[f"{k}1"](x)
                out, maps[f"self_{k}"] = self.self_attn[k](y, y, y, need_weights=True)
                tokens[k] = x + self.drop(out)
        if self.mode == "co" and v is not None and a is not None:
            qv, qa = self.norms["v2"](tokens["v"]), self.norms["a2"](tokens["a"])
            out_v, maps["video_to_audio"] = self.cross_attn["v"](qv, qa, qa, need_weights=True)
            out_a, maps["audio_to_video"] = self.cross_attn["a"](qa, qv, qv, need_weights=True)
            tokens["v"], tokens["a"] = (
                tokens["v"] + self.drop(out_v),
                tokens["a"] + self.drop(out_a),
            )
        for k, x in tokens.items():
            if x is not None:
                tokens[k] = x + self.drop(self.ff[k](self.norms[f"{k}3"](x)))
        return tokens["v"], tokens["a"], maps


class Fusion(nn.Module):
    """Tokens (B, Nv, 512) and/or (B, Na, 512) -> F (B, feature_width) = FC(concat(pooled v, pooled a)).

    Which modalities exist is fixed by `config.modalities` (the paper's audio-only / vision-only variants);
    a modality missing at run time is given as its FeatureNorm mean (all zeros after standardisation).
    """

    def __init__(
        self,
        config: FusionConfig,
        video_grid: tuple[int, ...],
        audio_grid: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.config = config
        self.use_video = config.modalities in ("both", "video")
        self.use_audio = config.modalities in ("both", "audio")
        self.video_norm, self.audio_norm = FeatureNorm(), FeatureNorm()
        self.video_in = nn.Linear(TOKEN_WIDTH, config.width) if self.use_video else None
        self.audio_in = nn.Linear(TOKEN_WIDTH, config.width) if self.use_audio else None
        self.video_pos = GridPosition(video_grid, config.width) if self.use_video else None
        self.audio_pos = GridPosition(audio_grid, config.width) if self.use_audio else None
        self.layers = nn.ModuleList([CoAttentionLayer(config) for _ in range(config.depth)])
        self.out_norm = nn.LayerNorm(config.width)
        n_modalities = int(self.use_video) + int(self.use_audio)
        self.project = nn.Linear(n_modalities * config.width, config.feature_width)

    def forward(
        self,
        video: torch.Tensor | None,
        audio: torch.Tensor | None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        v = self.video_in(self.video_norm(video)) + self.video_pos() if self.use_video else None
        a = self.audio_in(self.audio_norm(audio)) + self.audio_pos() if self.use_audio else None
        maps = []
        for layer in self.layers:
            v, a, layer_maps = layer(v, a)
            maps.append(layer_maps)
        pooled = [self.out_norm(x).mean(dim=1) for x in (v, a) if x is not None]
        fused = self.project(torch.cat(pooled, dim=-1))
        return (fused, maps) if return_attention else fused
