"""Shared fixtures: the folder of test clips (tests/data plus clips derived from them) and small model configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from media_clips import build_media_folder

from sec2sec.config import AudioConfig, FusionConfig, ModelConfig, TemporalConfig, VideoConfig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real clips under the names the tests use: the committed ones in tests/data (see its
    MANIFEST.tsv) and the damaged, rotated and audio-only cases derived from them (see media_clips.py)."""
    return build_media_folder(tmp_path_factory.mktemp("media"))


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


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small config as a file."""
    path = tmp_path_factory.mktemp("cfg") / "small.toml"
    path.write_text(small_toml())
    return path


def small_config(kind: str = "lstm", **fusion: object) -> ModelConfig:
    """A model config with random encoders (nothing to download) and a small fusion block."""
    return ModelConfig(
        video=VideoConfig(weights="none", frames_per_window=4),
        audio=AudioConfig(weights="none"),
        fusion=FusionConfig(width=64, heads=4, ff_width=128, feature_width=64, dropout=0.0, **fusion),
        temporal=TemporalConfig(kind=kind, hidden=32, transformer_heads=4, dropout=0.0),
        clip_seconds=6,
    )
