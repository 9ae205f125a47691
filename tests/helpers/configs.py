"""Small model configs for tests: random encoders (nothing to download) and a small fusion block, as a
dataclass (`small_config`) or as TOML text for subprocess runs of the CLIs (`small_toml`)."""

from __future__ import annotations

from sec2sec.config import AudioConfig, FusionConfig, ModelConfig, TemporalConfig, VideoConfig

SMALL_TOML = """
[model]
clip_seconds = 6
[model.video]
frames_per_window = 4
weights = "none"
[model.audio]
weights = "none"
[model.fusion]
modalities = "{modalities}"
width = 64
heads = 4
ff_width = 128
feature_width = 64
[model.temporal]
kind = "attention_lstm"
hidden = 32
"""


def small_toml(modalities: str = "both") -> str:
    """A TOML config for subprocess runs of the CLI: random encoders, a small fusion block, attention-LSTM."""
    return SMALL_TOML.format(modalities=modalities)


def small_config(kind: str = "lstm", **fusion: object) -> ModelConfig:
    """A model config with random encoders (nothing to download) and a small fusion block."""
    return ModelConfig(
        video=VideoConfig(weights="none", frames_per_window=4),
        audio=AudioConfig(weights="none"),
        fusion=FusionConfig(width=64, heads=4, ff_width=128, feature_width=64, dropout=0.0, **fusion),
        temporal=TemporalConfig(kind=kind, hidden=32, transformer_heads=4, dropout=0.0),
        clip_seconds=6,
    )
