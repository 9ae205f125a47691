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


# Encoders on 32x32 crops and a 32x64 MFCC image, with grids their maps allow: extraction in tests takes
# seconds. TOML sections to compose a model config from (no braces: safe inside str.format templates).
TINY_ENCODERS_TOML = """
[model.video]
frames_per_window = 4
resize = 40
crop = 32
token_grid = [1, 2, 2]
weights = "none"
[model.audio]
weights = "none"
image_size = [32, 64]
token_grid = [1, 2]
"""
TINY_FUSION_TOML = """
[model.fusion]
width = 32
heads = 4
ff_width = 64
feature_width = 32
dropout = 0.0
"""
