"""`sec2sec compare` with the configs shipped in the package (sec2sec/configs/), over both bases the README uses
(paper Tables 1 and 2).

The variant files must state only what differs from their base: laid over first_impressions.toml, every
variant stays a 15 s five-trait regression model, and the run trains and tests every row of the table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from synthetic_clips import (
    FIRST_HALF_FLASH,
    SECOND_HALF_FLASH,
    Second,
    python2_pickle,
    render,
    write_liris_tree,
    write_mp4,
)

from sec2sec.checkpoint import without_weight_files
from sec2sec.config import SHIPPED_CONFIGS, Config, load_config
from sec2sec.offline.compare import PAPER_VARIANTS, compare, comparison_table, variant_config
from sec2sec.offline.extract import extract

CONFIGS = SHIPPED_CONFIGS
FI = CONFIGS / "first_impressions.toml"
TRAITS = ["extraversion", "neuroticism", "agreeableness", "conscientiousness", "openness"]
SPLIT_SIZES = {"train": 6, "validation": 3, "test": 3}


def _clip(path: Path, k: int) -> None:
    flash = FIRST_HALF_FLASH if k % 2 == 0 else SECOND_HALF_FLASH
    write_mp4(path, *render([Second(flash=flash), Second()], seed=k))


def _extraction_config(path: Path) -> Config:
    """The shipped config with random encoders (no weights can be fetched in tests)."""
    config = load_config(path)
    return replace(config, model=without_weight_files(config.model))


@pytest.mark.parametrize("base", [None, FI], ids=["default", "first_impressions"])
def test_every_shipped_variant_keeps_its_base_task(base: Path | None) -> None:
    reference = _extraction_config(base or CONFIGS / "default.toml")
    assert "late_fusion" in PAPER_VARIANTS
    for variant in (*PAPER_VARIANTS, "attention_lstm", "gru_transformer"):
        config = variant_config(CONFIGS, variant, base)
        assert config.model.heads == reference.model.heads, variant
        assert config.model.clip_seconds == reference.model.clip_seconds == (15 if base else 10)
        assert config.train.loss == ("mse" if base else "bce")
    assert variant_config(CONFIGS, "sa_sa", base).model.fusion.mode == "self"
    assert variant_config(CONFIGS, "audio_only", base).model.fusion.modalities == "audio"
    assert variant_config(CONFIGS, "no_temporal", base).model.temporal.kind == "none"
    assert variant_config(CONFIGS, "late_fusion", base).model.fusion.mode == "concat"


def test_a_variant_that_changes_the_task_is_refused(tmp_path: Path) -> None:
    (tmp_path / "full.toml").write_text((CONFIGS / "default.toml").read_text())
    with pytest.raises(ValueError, match=r"full\.toml changes model\.heads from .*first_impressions\.toml's"):
        variant_config(tmp_path, "full", FI)


@pytest.fixture(scope="module")
def liris_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("liris_real")
    sets = {"train": 1, "validation": 2, "test": 0}
    rows, k = [], 0
    for split, n in SPLIT_SIZES.items():
        for i in range(n):
            name = f"ACCEDE{k:05d}.mp4"
            _clip(base / "liris" / "data" / name, k)
            rows.append((name, f"{split}_film{i // 3}.mp4", sets[split], 4.0 - 2.5 * (k % 2), 1.0 + 0.3 * k))
            k += 1
    root = write_liris_tree(base / "liris", rows)
    extract("liris", root, base / "cache", _extraction_config(CONFIGS / "default.toml"), workers=0)
    return base / "cache"


@pytest.fixture(scope="module")
def fi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fi_real")
    files = {"train": "training", "validation": "validation", "test": "test"}
    k = 0
    for split, n in SPLIT_SIZES.items():
        scores: dict[str, dict[str, float]] = {t: {} for t in [*TRAITS, "interview"]}
        for i in range(n):
            name = f"person{k:03d}.{i:03d}.mp4"
            _clip(base / "fi" / split / name, k)
            for j, trait in enumerate(scores):
                scores[trait][name] = 0.3 + 0.05 * j + 0.2 * (k % 2)
            k += 1
        (base / "fi" / f"annotation_{files[split]}.pkl").write_bytes(python2_pickle(scores))
    extract("fi", base / "fi", base / "cache", _extraction_config(FI), workers=0)
    return base / "cache"


@pytest.mark.slow
def test_table_1_runs_from_the_shipped_configs(liris_cache: Path, tmp_path: Path) -> None:
    """Two rows (all five are trained for Table 2 below; every variant file is checked above)."""
    results = compare(CONFIGS, liris_cache, tmp_path / "runs", ("vision_only", "default"))
    assert [r.variant for r in results] == ["vision_only", "default"]
    for r in results:
        assert r.evaluation.task == "binary" and list(r.evaluation.scores) == ["valence", "arousal"]
        assert len(r.evaluation.ids) == SPLIT_SIZES["test"] and (tmp_path / "runs" / r.variant / "best.pt").is_file()
    headers = [c.header for c in comparison_table(results).columns]
    assert headers[:3] == ["method", "valence acc", "valence F1"] and "macro-F1" in headers


@pytest.mark.slow
def test_table_2_runs_from_the_shipped_configs(fi_cache: Path, tmp_path: Path) -> None:
    results = compare(CONFIGS, fi_cache, tmp_path / "runs", PAPER_VARIANTS, base=FI)
    assert [r.variant for r in results] == list(PAPER_VARIANTS)
    for r in results:
        assert r.evaluation.task == "regression" and list(r.evaluation.scores) == TRAITS
        assert r.evaluation.truth.shape == (SPLIT_SIZES["test"], 5)
    table = comparison_table(results)
    assert [c.header for c in table.columns] == ["method", *TRAITS, "average", "s / epoch"]
    assert [cell for cell in table.columns[0].cells] == [
        "audio only",
        "vision only",
        "late fusion (pooled tokens, MLP)",
        "SA-SA",
        "SA-CA, no temporal model",
        "SA-CA (Sec2Sec)",
    ]
