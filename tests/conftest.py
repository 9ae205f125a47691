"""Shared fixtures: paths to the third-party media in ../shared/media and small model configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sec2sec.config import AudioConfig, FusionConfig, ModelConfig, TemporalConfig, VideoConfig

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media() -> Path:
    """The folder of real third-party clips (see its MANIFEST.tsv)."""
    if not MEDIA.is_dir():
        pytest.skip(f"shared media folder {MEDIA} is missing")
    return MEDIA


def small_config(kind: str = "lstm", **fusion: object) -> ModelConfig:
    """A model config with random encoders (nothing to download) and a small fusion block."""
    return ModelConfig(
        video=VideoConfig(weights="none", frames_per_window=4),
        audio=AudioConfig(weights="none"),
        fusion=FusionConfig(width=64, heads=4, ff_width=128, feature_width=64, dropout=0.0, **fusion),
        temporal=TemporalConfig(kind=kind, hidden=32, transformer_heads=4, dropout=0.0),
        clip_seconds=6,
    )
