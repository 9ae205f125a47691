"""Shared fixtures: the folder of test clips (tests/data plus clips derived from them) and small model configs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers.configs import small_toml
from helpers.media_clips import build_media_folder


def pytest_configure(config: pytest.Config) -> None:
    """The suite reaches no host but 127.0.0.1 and never reads or fills the user's weight cache: downloads are
    off (SEC2SEC_OFFLINE=1) and TORCH_HOME is an empty folder of its own (child processes inherit both), so a
    default config runs with random encoders, warned and flagged as it would offline."""
    os.environ["SEC2SEC_OFFLINE"] = "1"
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="sec2sec-test-torch-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("TORCH_HOME", ""), ignore_errors=True)


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
    MANIFEST.tsv) and the damaged, rotated and audio-only cases derived from them (see helpers/media_clips.py)."""
    return build_media_folder(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small config as a file."""
    path = tmp_path_factory.mktemp("cfg") / "small.toml"
    path.write_text(small_toml())
    return path
