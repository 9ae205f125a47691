"""`sec2sec compare` with the shipped configs (configs/, installed as sec2sec/configs/), over both bases the
README uses (paper Tables 1 and 2).

The variant files must state only what differs from their base: laid over first_impressions.toml, every
variant stays a 15 s five-trait regression model, and the run trains and tests every row of the table.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic_clips import (
    FIRST_HALF_FLASH,
    SECOND_HALF_FLASH,
    Second,
    python2_pickle,
    render,
    write_liris_tree,
    write_mp4,
)
from rich.console import Console

from sec2sec.checkpoint import without_weight_files
from sec2sec.config import SHIPPED_CONFIGS, Config, load_config
from sec2sec.offline.compare import (
    PAPER_VARIANTS,
    VariantResult,
    compare,
    comparison_table,
    print_comparison,
    variant_config,
    write_comparison,
)
from sec2sec.offline.evaluate import Evaluation
from sec2sec.offline.extract import extract
from sec2sec.offline.train import TrainResult

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
    per_trait = [h for t in TRAITS for h in (t, f"{t} r")]
    assert [c.header for c in table.columns] == [
        "method",
        *per_trait,
        *("average", "mean r", "MSE", "train-mean MSE"),
        "s / epoch",
    ]
    assert [cell for cell in table.columns[0].cells] == [
        "audio only",
        "vision only",
        "late fusion (pooled tokens, MLP)",
        "SA-SA",
        "SA-CA, no temporal model",
        "SA-CA (Sec2Sec)",
    ]


def _results(task: str, names: list[str]) -> list[VariantResult]:
    """One result per paper variant with known scores (variant i: accuracy 0.5 + i / 100)."""
    out = []
    for i, variant in enumerate(PAPER_VARIANTS):
        metrics = {"accuracy": 0.5 + i / 100, "f1": 0.6, "balanced_accuracy": 0.55, "macro_f1": 0.5}
        metrics |= {"majority_accuracy": 0.5, "mean_accuracy": 0.88125 + i / 1000, "pearson_r": 0.25 + i / 100}
        metrics |= {"mse": 0.02, "baseline_mse": 0.03}
        evaluation = Evaluation("test", task, [], np.zeros(0), np.zeros(0), {n: dict(metrics) for n in names})
        out.append(VariantResult(variant, TrainResult(Path("best.pt"), 1, 0.5, 3, 12.345, 0), evaluation))
    return out


def _printed(results: list[VariantResult], width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    print_comparison(results, console)
    return console.file.getvalue()


@pytest.mark.parametrize(("task", "names"), [("regression", TRAITS), ("binary", ["valence", "arousal"])])
def test_a_narrow_console_gets_every_name_in_full(task: str, names: list[str]) -> None:
    """80 columns (a pipe): the output names are abbreviated in the headers and spelt out in the legend;
    no cell is cut, every method name's words and every number are printed whole."""
    text = _printed(_results(task, names), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    legend = {
        "regression": "outputs: E = extraversion, N = neuroticism, A = agreeableness, C = conscientiousness, "
        "O = openness",
        "binary": "outputs: V = valence, A = arousal",
    }[task]
    assert legend in " ".join(text.split())
    words = set(text.split())
    for method in ("audio only", "late fusion (pooled tokens, MLP)", "SA-CA, no temporal model", "SA-CA (Sec2Sec)"):
        assert set(method.split()) <= words, method
    if task == "regression":
        assert {"0.8812", "0.8862", "12.35", "average", "0.3000", "train-mean", "0.0300"} <= words  # folded, whole
    else:
        assert {"0.5000", "0.5500", "12.35", "majority", "macro-F1"} <= words
        header = next(line for line in lines if line.startswith(" method"))
        assert re.fullmatch(r" method +acc +F1 +acc +F1 +acc +macro-F1 +acc +s/epoch *", header), header


def test_a_wide_console_gets_the_full_headers() -> None:
    text = _printed(_results("regression", TRAITS), 320)
    header = next(line for line in text.splitlines() if "method" in line)
    per_trait = [h for t in TRAITS for h in (t, f"{t} r")]
    tail = ["average", "mean r", "MSE", "train-mean MSE", "s / epoch"]
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == ["method", *per_trait, *tail]
    assert "outputs:" not in text


def test_the_table_is_written_as_csv_and_markdown(tmp_path: Path) -> None:
    results = _results("binary", ["valence", "arousal"])
    csv_path, md_path = write_comparison(results, tmp_path)
    assert (csv_path, md_path) == (tmp_path / "comparison.csv", tmp_path / "comparison.md")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "variant",
        "method",
        "valence acc",
        "valence F1",
        "arousal acc",
        "arousal F1",
        "bal. acc",
        "macro-F1",
        "majority acc",
        "s / epoch",
    ]
    assert [r[:2] for r in rows[1:3]] == [["audio_only", "audio only"], ["vision_only", "vision only"]]
    assert float(rows[2][2]) == 0.51 and float(rows[1][-1]) == 12.345 and len(rows) == 1 + len(PAPER_VARIANTS)
    md = md_path.read_text().splitlines()
    assert md[0] == "Variants on the test split (LIRIS-ACCEDE style)" and md[1] == ""
    assert md[2] == (
        "| method | valence acc | valence F1 | arousal acc | arousal F1 | bal. acc | macro-F1 | "
        "majority acc | s / epoch |"
    )
    assert md[3] == "| --- |" + " ---: |" * 8
    assert md[6] == (
        "| late fusion (pooled tokens, MLP) | 0.5200 | 0.6000 | 0.5200 | 0.6000 | 0.5500 | 0.5000 | 0.5000 | 12.35 |"
    )


@pytest.mark.slow
def test_compare_piped_prints_every_trait_and_writes_its_tables(fi_cache: Path, tmp_path: Path) -> None:
    """`sec2sec compare` as a user pipes it (80 columns): no name is cut, and both tables land in --out."""
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "sec2sec", "compare", "--base", "first_impressions", "--variants"]
    command += ["audio_only,default", "--cache", str(fi_cache), "--out", str(out), "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    table = text[: text.index("table written to")]  # that last line keeps its paths whole, however long
    assert "…" not in text and max(len(line) for line in table.splitlines()) <= 80
    assert "E = extraversion, N = neuroticism, A = agreeableness, C = conscientiousness, O = openness" in " ".join(
        text.split()
    )
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.reader(f))
    headers = [h for t in TRAITS for h in (t, f"{t} r")] + ["average", "mean r", "MSE", "train-mean MSE"]
    assert rows[0] == ["variant", "method", *headers, "s / epoch"]
    assert [r[:2] for r in rows[1:]] == [["audio_only", "audio only"], ["default", "SA-CA (Sec2Sec)"]]
    # accuracies and MSEs in [0, 1], Pearson r in [-1, 1] (NaN where a variant predicts a constant)
    assert all(math.isnan(float(v)) or -1.0 <= float(v) <= 1.0 for r in rows[1:] for v in r[2:-1])
    md = (out / "comparison.md").read_text()
    assert f"| method | {' | '.join(headers)} | s / epoch |" in md and "| SA-CA (Sec2Sec) | " in md
    assert f"table written to {out / 'comparison.csv'} and {out / 'comparison.md'}\n" in text
