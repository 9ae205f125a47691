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


def _keep(x: torch.Tensor, ok: torch.Tensor | None) -> torch.Tensor:
    """x (B, ...) with the rows of samples whose `ok` (B,) is False set to zero (NaN-safe)."""
    if ok is None:
        return x
    return torch.where(ok.reshape(-1, *[1] * (x.ndim - 1)), x, torch.zeros((), dtype=x.dtype, device=x.device))


class CoAttentionLayer(nn.Module):
    """One symmetric block over (B, Nv, d) video and (B, Na, d) audio tokens (pre-norm, residual).

    1. self-attention inside each modality; 2. co-attention (mode "co"): video queries attend to audio keys
    and values, audio queries to video, both from the same inputs; 3. a feed-forward per modality.
    Mode "self" (SA-SA) skips step 2. A modality the model does not use is passed through as None.

    Missing modalities (`video_ok` / `audio_ok` (B,) False) are masked out of co-attention: a window's tokens
    are all present or all missing, so masking every key of the missing side leaves its queries' partners
    nothing to read, and the co-attention update of the present side is zero (its residual stream is
    exactly what self-attention made of its own tokens). Written as a zeroed update rather than a key
    padding mask because a fully masked softmax is NaN.
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
        self,
        v: torch.Tensor | None,
        a: torch.Tensor | None,
        video_ok: torch.Tensor | None = None,
        audio_ok: torch.Tensor | None = None,
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
                tokens["v"] + self.drop(_keep(out_v, audio_ok)),
                tokens["a"] + self.drop(_keep(out_a, video_ok)),
            )
        for k, x in tokens.items():
            if x is not None:
                tokens[k] = x + self.drop(self.ff[k](self.norms[f"{k}3"](x)))
        return tokens["v"], tokens["a"], maps


class Fusion(nn.Module):
    """Tokens (B, Nv, 512) and/or (B, Na, 512) -> F (B, feature_width) = FC(concat(pooled v, pooled a)).

    Which modalities exist is fixed by `config.modalities` (the paper's audio-only / vision-only variants).
    A modality missing at run time (tokens None, or `*_ok` (B,) False for some windows) is masked: no
    co-attention reads it and its pooled vector is zero, so F depends on the present modality alone (the
    same in training, where `train.modality_dropout` makes it happen, and live). A window with neither is
    F = FC(0): the "empty second" the temporal model steps through for a gap.
    Mode "concat" (late fusion) has no attention layers and no position codes: projected tokens are
    mean-pooled per modality, concatenated and passed through an MLP.
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
        late = config.mode == "concat"  # pooled vectors know no token positions: no position codes
        self.video_pos = GridPosition(video_grid, config.width) if self.use_video and not late else None
        self.audio_pos = GridPosition(audio_grid, config.width) if self.use_audio and not late else None
        self.grids = {"video": math.prod(video_grid), "audio": math.prod(audio_grid)}
        self.layers = nn.ModuleList([] if late else [CoAttentionLayer(config) for _ in range(config.depth)])
        self.out_norm = nn.LayerNorm(config.width)
        pooled_width = (int(self.use_video) + int(self.use_audio)) * config.width
        self.project: nn.Module = (
            nn.Sequential(
                nn.Linear(pooled_width, config.ff_width),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.ff_width, config.feature_width),
            )
            if late
            else nn.Linear(pooled_width, config.feature_width)
        )

    def _tokens(
        self, tokens: torch.Tensor | None, norm: FeatureNorm, layer: nn.Linear, pos: GridPosition | None, n: int, b: int
    ) -> torch.Tensor:
        """(B, n, 512) encoder tokens (None: missing, zeros after standardisation) -> (B, n, width) + positions."""
        if tokens is None:
            weight = self.out_norm.weight
            x = torch.zeros(b, n, TOKEN_WIDTH, dtype=weight.dtype, device=weight.device)
        else:
            x = norm(tokens)
        return layer(x) if pos is None else layer(x) + pos()

    def forward(
        self,
        video: torch.Tensor | None,
        audio: torch.Tensor | None,
        video_ok: torch.Tensor | None = None,
        audio_ok: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """`video_ok` / `audio_ok` (B,) bool: False where that window's modality is missing (None = present
        where tokens are given). -> F (B, feature_width) [and per-layer attention maps]."""
        b = next(x.shape[0] for x in (video, audio, video_ok, audio_ok) if x is not None)
        device = self.out_norm.weight.device
        video_ok, audio_ok = _presence(video, video_ok, b, device), _presence(audio, audio_ok, b, device)
        v = a = None
        if self.use_video:
            v = self._tokens(video, self.video_norm, self.video_in, self.video_pos, self.grids["video"], b)
        if self.use_audio:
            a = self._tokens(audio, self.audio_norm, self.audio_in, self.audio_pos, self.grids["audio"], b)
        maps = []
        for layer in self.layers:
            v, a, layer_maps = layer(v, a, video_ok, audio_ok)
            maps.append(layer_maps)
        pooled = [_keep(self.out_norm(x).mean(dim=1), ok) for x, ok in ((v, video_ok), (a, audio_ok)) if x is not None]
        fused = self.project(torch.cat(pooled, dim=-1))
        return (fused, maps) if return_attention else fused


def _presence(
    tokens: torch.Tensor | None, ok: torch.Tensor | None, b: int, device: torch.device
) -> torch.Tensor | None:
    """(B,) bool presence of one modality: all False when its tokens are None, None when all present."""
    if tokens is None:
        return torch.zeros(b, dtype=torch.bool, device=device)
    return None if ok is None else ok.to(device=device, dtype=torch.bool).reshape(b)
