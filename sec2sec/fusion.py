"""Encoder tokens of one second -> fused feature F_i, through self- and co-attention over real tokens."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sec2sec.config import FusionConfig
from sec2sec.encoders import TOKEN_WIDTH


class FeatureNorm(nn.Module):
    """Per-channel standardisation of encoder tokens with training-set statistics (identity until set)."""

    mean: torch.Tensor  # buffers (B, width): saved with the model
    std: torch.Tensor

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


class Dropout(nn.Module):
    """Inverted dropout whose CPU masks are cut from 64-bit random words, four 16-bit draws per word.

    Why: torch's CPU dropout draws one Mersenne-Twister number per element, about 28 ms for one
    (320 windows, 16 tokens, 512) activation on this 2-core machine, a fifth of a training step; the
    16-bit masks cost a third of that. p is kept to 1/65536 (0.1 drops 6554 in 65536); same state dict,
    same RNG (the default generator, so `torch.manual_seed` makes runs repeat). Other devices use
    `F.dropout`, which is fast there.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {p}")
        self.p = p
        self.threshold = round(p * 65536)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """A CPU mask shaped like x: 0 where dropped, 1 / (1 - p) where kept."""
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        draws = words.view(torch.int16)[:n].view(x.shape)
        return (draws >= self.threshold - 32768).to(x.dtype).mul_(65536 / (65536 - self.threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * self._mask(x)

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """x + dropout(update), in one pass on the CPU."""
        if not self.training or self.threshold == 0:
            return x + update
        if x.device.type != "cpu":
            return x + F.dropout(update, self.p, training=True)
        return torch.addcmul(x, update, self._mask(update))


def attend(
    mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, drop: Dropout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention with the weights of `mha` (batch_first): query (B, Lq, d) reads key = value
    (B, Lk, d) -> output (B, Lq, d) and the attention weights (B, Lq, Lk) averaged over heads.

    The same numbers as `mha(query, key, key)` (checked in tests), computed in the batch-first layout
    throughout: the module's own path transposes to (L, B, d) and repacks q, k, v with copies and fills that
    took ~8% of a training step in the profiler here. `drop` is the attention-weight dropout (p = mha.dropout).
    """
    b, lq, d = query.shape
    h = mha.num_heads
    weight, bias = mha.in_proj_weight, mha.in_proj_bias
    if query is key:
        q, k, v = F.linear(query, weight, bias).view(b, lq, 3, h, d // h).permute(2, 0, 3, 1, 4)
    else:
        q = F.linear(query, weight[:d], bias[:d]).view(b, lq, h, d // h).transpose(1, 2)
        k, v = F.linear(key, weight[d:], bias[d:]).view(b, key.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(torch.matmul(q * (d // h) ** -0.5, k.transpose(-2, -1)), dim=-1)
    out = torch.matmul(drop(weights), v).transpose(1, 2).reshape(b, lq, d)
    return mha.out_proj(out), weights.mean(dim=1)


def _mha(modules: nn.ModuleDict, key: str) -> nn.MultiheadAttention:
    """`modules[key]` as what it is: a layer's attention ModuleDicts hold only MultiheadAttention (a ModuleDict
    keeps the state dict's names, e.g. `self_attn.v.in_proj_weight`)."""
    return cast(nn.MultiheadAttention, modules[key])


class FeedForward(nn.Sequential):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(width, hidden),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(hidden, width),
        )


def _present_rows(ok: torch.Tensor | None) -> torch.Tensor | None:
    """(B,) presence -> indices of the present windows, or None when every window is present."""
    return None if ok is None or bool(ok.all()) else ok.nonzero().squeeze(1)


def _pairs(video_ok: torch.Tensor, audio_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows with both modalities, as row indices into the present-video and present-audio batches."""
    both = video_ok & audio_ok
    return (torch.cumsum(video_ok, 0) - 1)[both], (torch.cumsum(audio_ok, 0) - 1)[both]


class CoAttentionLayer(nn.Module):
    """One symmetric block over video tokens (Bv, Nv, d) and audio tokens (Ba, Na, d) (pre-norm, residual).

    1. self-attention inside each modality; 2. co-attention (mode "co"): video queries attend to audio keys
    and values, audio queries to video, both from the same inputs; 3. a feed-forward per modality.
    Mode "self" (SA-SA) skips step 2. A modality the model does not use is passed through as None.

    Missing modalities are masked out of co-attention by leaving them out: each modality's batch holds only
    the windows where it is present, and `pairs` names the windows that have both. Only those get a
    co-attention update; a window whose partner is missing keeps exactly what self-attention made of its own
    tokens, which is what a key padding mask over all of the partner's keys would mean (a fully masked
    softmax is NaN, so the update is skipped rather than masked), and no work is spent on absent tokens.
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        d, h, p = config.width, config.heads, config.dropout
        self.mode = config.mode
        self.self_attn = nn.ModuleDict({k: nn.MultiheadAttention(d, h, dropout=p, batch_first=True) for k in "va"})
        self.cross_attn = nn.ModuleDict({k: nn.MultiheadAttention(d, h, dropout=p, batch_first=True) for k in "va"})
        self.norms = nn.ModuleDict({k: nn.LayerNorm(d) for k in ("v1", "a1", "v2", "a2", "v3", "a3")})
        self.ff = nn.ModuleDict({k: FeedForward(d, config.ff_width, p) for k in "va"})
        self.drop, self.attn_drop = Dropout(p), Dropout(p)

    def forward(
        self,
        v: torch.Tensor | None,
        a: torch.Tensor | None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, torch.Tensor]]:
        """`pairs` (iv, ia): rows of v and of a that are the same window (None: v and a are the same windows,
        row by row). Returns the new tokens and, with `need_weights`, the attention maps (rows, queries, keys)
        averaged over heads (co-attention maps over the paired windows)."""
        maps: dict[str, torch.Tensor] = {}
        tokens = {"v": v, "a": a}
        for k, x in tokens.items():
            if x is not None:
                y = self.norms[f"{k}1"](x)
                out, weights = attend(_mha(self.self_attn, k), y, y, self.attn_drop)
                if need_weights:
                    maps[f"self_{k}"] = weights
                tokens[k] = self.drop.residual(x, out)
        if self.mode == "co" and tokens["v"] is not None and tokens["a"] is not None:
            tokens["v"], tokens["a"] = self._co_attend(tokens["v"], tokens["a"], pairs, maps, need_weights)
        for k, x in tokens.items():
            if x is not None:
                tokens[k] = self.drop.residual(x, self.ff[k](self.norms[f"{k}3"](x)))
        return tokens["v"], tokens["a"], maps

    def _co_attend(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        pairs: tuple[torch.Tensor, torch.Tensor] | None,
        maps: dict[str, torch.Tensor],
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's queries read the other's keys and values, in the paired windows only."""
        if pairs is not None and pairs[0].numel() == 0:
            return v, a
        xv, xa = (v, a) if pairs is None else (v[pairs[0]], a[pairs[1]])
        qv, qa = self.norms["v2"](xv), self.norms["a2"](xa)
        out_v, v_to_a = attend(_mha(self.cross_attn, "v"), qv, qa, self.attn_drop)
        out_a, a_to_v = attend(_mha(self.cross_attn, "a"), qa, qv, self.attn_drop)
        if need_weights:
            maps["video_to_audio"], maps["audio_to_video"] = v_to_a, a_to_v
        if pairs is None:
            return self.drop.residual(v, out_v), self.drop.residual(a, out_a)
        out_v, out_a = self.drop(out_v).to(v.dtype), self.drop(out_a).to(a.dtype)  # autocast computes them in bf16
        return v.index_add(0, pairs[0], out_v), a.index_add(0, pairs[1], out_a)


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
                Dropout(config.dropout),
                nn.Linear(config.ff_width, config.feature_width),
            )
            if late
            else nn.Linear(pooled_width, config.feature_width)
        )

    def _tokens(
        self, tokens: torch.Tensor, norm: FeatureNorm, layer: nn.Linear, pos: GridPosition | None
    ) -> torch.Tensor:
        """(B', n, 512) encoder tokens of the windows where the modality is present -> (B', n, width)."""
        x = layer(norm(tokens))
        return x if pos is None else x + pos()

    def _pool(self, x: torch.Tensor | None, rows: torch.Tensor | None, b: int) -> torch.Tensor:
        """Tokens (B', n, width) of the present windows -> pooled (B, width), zero where the modality is missing."""
        weight = self.out_norm.weight
        if x is None:
            return torch.zeros(b, weight.shape[0], dtype=weight.dtype, device=weight.device)
        pooled = self.out_norm(x).mean(dim=1)
        if rows is None:
            return pooled
        return torch.zeros(b, pooled.shape[1], dtype=pooled.dtype, device=pooled.device).index_copy(0, rows, pooled)

    def forward(
        self,
        video: torch.Tensor | None,
        audio: torch.Tensor | None,
        video_ok: torch.Tensor | None = None,
        audio_ok: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """`video_ok` / `audio_ok` (B,) bool: False where that window's modality is missing (None = present
        where tokens are given). -> F (B, feature_width) [and per-layer attention maps over the present
        windows]. Missing tokens are never computed: each modality runs on its present windows only."""
        b = next(x.shape[0] for x in (video, audio, video_ok, audio_ok) if x is not None)
        device = self.out_norm.weight.device
        present = {"v": _presence(video, video_ok, b, device), "a": _presence(audio, audio_ok, b, device)}
        rows = {k: _present_rows(ok) for k, ok in present.items()}
        tokens: dict[str, torch.Tensor | None] = {"v": None, "a": None}
        for k, x, norm, project, pos in (
            ("v", video, self.video_norm, self.video_in, self.video_pos),
            ("a", audio, self.audio_norm, self.audio_in, self.audio_pos),
        ):
            kept = rows[k]  # project is None where the model does not use the modality
            if project is not None and x is not None and (kept is None or kept.numel() > 0):
                tokens[k] = self._tokens(x if kept is None else x[kept], norm, project, pos)
        pairs = None
        if rows["v"] is not None or rows["a"] is not None:
            pairs = _pairs(
                *(torch.ones(b, dtype=torch.bool, device=device) if ok is None else ok for ok in present.values())
            )
        maps = []
        v, a = tokens["v"], tokens["a"]
        for layer in self.layers:
            v, a, layer_maps = layer(v, a, pairs, need_weights=return_attention)
            maps.append(layer_maps)
        pooled = [
            self._pool(x, rows[k], b) for k, x, used in (("v", v, self.use_video), ("a", a, self.use_audio)) if used
        ]
        fused = self.project(torch.cat(pooled, dim=-1))
        return (fused, maps) if return_attention else fused


def _presence(
    tokens: torch.Tensor | None, ok: torch.Tensor | None, b: int, device: torch.device
) -> torch.Tensor | None:
    """(B,) bool presence of one modality: all False when its tokens are None, None when all present."""
    if tokens is None:
        return torch.zeros(b, dtype=torch.bool, device=device)
    return None if ok is None else ok.to(device=device, dtype=torch.bool).reshape(b)
