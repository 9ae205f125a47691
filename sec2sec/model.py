"""The assembled Sec2Sec model: front ends -> encoders -> co-attention fusion -> temporal model -> heads.

Two entry points share every layer: `encode`/`fuse` per one-second window (the live path and feature
extraction), and `forward_tokens`/`forward` over padded clips (training and evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sec2sec.audio import AudioFrontEnd
from sec2sec.config import ModelConfig
from sec2sec.encoders import AudioEncoder, VideoEncoder
from sec2sec.fusion import Fusion
from sec2sec.heads import Heads
from sec2sec.temporal import build_temporal, valid_mask
from sec2sec.video import VideoFrontEnd

ENCODER_MODULES = ("video_encoder", "audio_encoder")  # the attributes of a Sec2Sec that hold its encoders (or None)


class Sec2Sec(nn.Module):
    """Build from a ModelConfig alone (checkpoints store it)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.video_frontend = VideoFrontEnd(config.video) if config.uses_video else None
        self.video_encoder = VideoEncoder(config.video) if config.uses_video else None
        self.audio_frontend = AudioFrontEnd(config.audio) if config.uses_audio else None
        self.audio_encoder = AudioEncoder(config.audio) if config.uses_audio else None
        self.fusion = Fusion(config.fusion, config.video.token_grid, config.audio.token_grid)
        self.temporal = build_temporal(config.fusion.feature_width, config.temporal, memory=config.clip_seconds)
        self.heads = Heads(self.temporal.out_width, config.heads)

    @property
    def pretrained(self) -> dict[str, bool]:
        """Which encoders hold pretrained (not random) weights."""
        out = {}
        if self.video_encoder is not None:
            out["video"] = bool(self.video_encoder.pretrained)
        if self.audio_encoder is not None:
            out["audio"] = bool(self.audio_encoder.pretrained)
        return out

    @property
    def video_tokens(self) -> int:
        return math.prod(self.config.video.token_grid)

    @property
    def audio_tokens(self) -> int:
        return math.prod(self.config.audio.token_grid)

    def encode(
        self, frames: torch.Tensor | None, audio: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """frames uint8 (B, m, H, W, 3), audio float (B, sample_rate) -> tokens (B, Nv, 512), (B, Na, 512).

        A modality the config does not use, or that is given as None (missing), comes back as None.
        """
        video_tokens = audio_tokens = None
        if self.video_frontend is not None and self.video_encoder is not None and frames is not None:
            video_tokens = self.video_encoder(self.video_frontend(frames))
        if self.audio_frontend is not None and self.audio_encoder is not None and audio is not None:
            audio_tokens = self.audio_encoder(self.audio_frontend(audio))
        return video_tokens, audio_tokens

    def fuse(
        self,
        video_tokens: torch.Tensor | None,
        audio_tokens: torch.Tensor | None,
        video_ok: torch.Tensor | None = None,
        audio_ok: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens of B windows (None or ok=False where missing) -> fused features F (B, feature_width).

        A missing modality is masked out of co-attention and pooling (see `Fusion`), never imputed.
        """
        return self.fusion(video_tokens, audio_tokens, video_ok, audio_ok)

    def forward_features(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """F (B, T, D) + lengths (B,) -> logits (B, n_outputs) and attribution (B, T) or None."""
        summary, weights = self.temporal(features, lengths)
        return self.heads(summary), weights

    def forward_per_second(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """F (B, T, D) -> logits (B, T, n_outputs): row t is what `AffectStream.step` reports after second t
        with the default horizon H = clip_seconds, i.e. `forward_features` over seconds max(0, t-H+1)..t.

        One implementation with the clip path: every second's window is run through the same temporal model
        and heads, B*T windows in one batch (the fused features, the costly part, are computed once). Rows
        past a clip's length see padding and are to be ignored by the caller."""
        b, t, d = features.shape
        span = min(t, self.config.clip_seconds)
        ends = torch.arange(t, device=features.device)
        window = torch.clamp(ends + 1, max=span)  # (T,) seconds each window holds
        starts = ends + 1 - window
        index = (starts[:, None] + torch.arange(span, device=features.device)[None, :]).clamp(max=t - 1)
        windows = features[:, index]  # (B, T, span, D), left-aligned, padded past `window`
        logits, _ = self.forward_features(windows.reshape(b * t, span, d), window.repeat(b))
        return logits.reshape(b, t, -1)

    def forward_tokens(
        self,
        video_tokens: torch.Tensor | None,
        audio_tokens: torch.Tensor | None,
        lengths: torch.Tensor,
        video_ok: torch.Tensor | None = None,
        audio_ok: torch.Tensor | None = None,
        per_second: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cached tokens (B, T, N, 512) per modality (+ (B, T) ok masks) -> logits (B, n_outputs), attribution;
        with `per_second`, logits (B, T, n_outputs) of every second (`forward_per_second`) and no attribution.

        Steps past a clip's length are padding: fused as empty seconds (no tokens computed), which the
        temporal models never read."""
        b, t = (
            lengths.shape[0],
            next(x.shape[1] for x in (video_tokens, audio_tokens) if x is not None),
        )
        valid = valid_mask(lengths.to(self.fusion.out_norm.weight.device), t)
        video_ok, audio_ok = (  # padded steps carry no window: nothing is computed for them
            None if tokens is None else valid if ok is None else ok.to(valid.device, torch.bool) & valid
            for tokens, ok in ((video_tokens, video_ok), (audio_tokens, audio_ok))
        )
        flat = [
            None if x is None else x.reshape(b * t, *x.shape[2:])
            for x in (video_tokens, audio_tokens, video_ok, audio_ok)
        ]
        features = self.fuse(*flat).reshape(b, t, -1)
        if per_second:
            return self.forward_per_second(features, lengths), None
        return self.forward_features(features, lengths)

    def forward(
        self,
        frames: torch.Tensor | None,
        audio: torch.Tensor | None,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw clips: frames uint8 (B, T, m, H, W, 3), audio (B, T, sample_rate) -> logits, attribution."""
        b, t = (
            lengths.shape[0],
            next(x.shape[1] for x in (frames, audio) if x is not None),
        )
        v, a = self.encode(
            None if frames is None else frames.reshape(b * t, *frames.shape[2:]),
            None if audio is None else audio.reshape(b * t, -1),
        )
        features = self.fuse(v, a).reshape(b, t, -1)
        return self.forward_features(features, lengths)
