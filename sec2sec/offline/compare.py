"""`sec2sec compare`: train and evaluate the paper's variants on one cache -> a table like its Tables 1 and 2.

Each variant is a TOML file in `--config-dir` (default: the configs shipped with the package, e.g.
audio_only.toml) that states only what differs from the base, and is laid over it. The base is `--base` (a
shipped name such as first_impressions, or a TOML file; itself laid over the built-in defaults), else
`<config-dir>/default.toml` when it exists, else the built-in defaults. The
variant `default` is the base itself (SA-CA, the model every other variant departs from): default.toml spells
out every key, so laying it over another base would silently undo that base. Every variant must keep the base's
task, outputs and clip length (the table compares methods on one task). Every variant is trained into
OUT/<variant> (resumable, like `sec2sec train`) and scored on the test split (on the validation split when no
test clip has labels, as Hume-Reaction's); the table is printed (on a narrow terminal with abbreviated output
names and a legend, never cut) and written to OUT/comparison.csv and OUT/comparison.md.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from sec2sec.config import Config, config_path, parse_config
from sec2sec.offline.datasets import labelled
from sec2sec.offline.evaluate import Evaluation, evaluate
from sec2sec.offline.features import read_index
from sec2sec.offline.output_files import replace_text
from sec2sec.offline.splits import apply_split, pinned_split
from sec2sec.offline.train import TrainResult, fit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

PAPER_VARIANTS = ("audio_only", "vision_only", "late_fusion", "sa_sa", "no_temporal", "default")
NAMES = {
    "audio_only": "audio only",
    "vision_only": "vision only",
    "late_fusion": "late fusion (pooled tokens, MLP)",
    "sa_sa": "SA-SA",
    "no_temporal": "SA-CA, no temporal model",
    "default": "SA-CA (Sec2Sec)",
}


@dataclass(frozen=True)
class VariantResult:
    """One row of the table: the variant's name, its training outcome and its test evaluation."""

    variant: str
    training: TrainResult
    evaluation: Evaluation


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts: `over`'s keys replace `base`'s, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist; --variants names files <name>.toml in --config-dir")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None


def base_document(config_dir: str | Path, base: str | Path | None) -> tuple[dict[str, Any], str]:
    """The base every variant is laid over, as a TOML dict, and its name for messages (see the module doc)."""
    if base:
        return _toml(config_path(base)), str(base)
    default = Path(config_dir) / "default.toml"
    return (_toml(default), str(default)) if default.is_file() else ({}, "the built-in defaults")


def variant_config(config_dir: str | Path, variant: str, base: str | Path | None) -> Config:
    """<config_dir>/<variant>.toml over the base; the variant `default` is the base itself."""
    path = Path(config_dir) / f"{variant}.toml"
    base_data, base_name = base_document(config_dir, base)
    data = base_data if variant == "default" else merge(base_data, _toml(path))
    try:
        config = parse_config(data)
        reference = parse_config(base_data)
    except ValueError as exc:
        raise ValueError(f"{path if variant != 'default' else base_name}: {exc}") from None
    for key, made, wanted in (
        ("model.heads", config.model.heads, reference.model.heads),
        ("model.clip_seconds", config.model.clip_seconds, reference.model.clip_seconds),
    ):
        if made != wanted:
            raise ValueError(
                f"{path} changes {key} from {base_name}'s {wanted!r} to {made!r}; a variant file states only what "
                "differs in the method (e.g. [model.fusion] mode), never the task: remove those keys from it"
            )
    return config


def compare(
    config_dir: str | Path,
    cache: str | Path,
    out: str | Path,
    variants: tuple[str, ...] = PAPER_VARIANTS,
    *,
    base: str | Path | None = None,
    split_mode: str = "official",
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    console: Console | None = None,
) -> list[VariantResult]:
    """Train (or resume) and test every variant; configs are all read first, so a typo fails fast."""
    console = console or Console()
    configs = {v: variant_config(config_dir, v, base) for v in variants}
    results = []
    for variant, config in configs.items():
        console.print(f"[bold]{variant}[/]: training into {Path(out) / variant}")
        folder = Path(out) / variant
        trained = fit(
            cache, config, folder, split_mode=split_mode, split_seed=split_seed, device=device, console=console
        )
        scored = scored_split(cache, config, split_mode, split_seed)
        results.append(VariantResult(variant, trained, evaluate(trained.best_path, cache, scored, device=device)))
    return results


def scored_split(cache: str | Path, config: Config, split_mode: str, split_seed: int) -> str:
    """`test`, or `validation` when no test clip has labels (Hume-Reaction withholds them; the ABAW5 ERI
    results are validation results)."""
    index = read_index(cache)
    records = apply_split(index.records(), pinned_split(cache, index.dataset, index.records(), split_mode, split_seed))
    outputs = config.model.heads.outputs
    return "test" if any(r.split == "test" and labelled(r, outputs) for r in records) else "validation"


def comparison_cells(results: list[VariantResult]) -> tuple[str, list[str], list[tuple[str, list[float]]]]:
    """Title, column headers (full names, "method" first) and per variant its method name and numbers.

    Binary task: accuracy and F1 per output (paper's Table 1) plus mean balanced accuracy, macro-F1 and the
    majority baseline; regression: mean accuracy (Table 2) and Pearson r per output, both averaged (the mean
    r is ABAW5 ERI's measure), MSE and the training-mean baseline's MSE, and per-second r and CCC with
    per-second labels. Both: seconds per epoch."""
    task = results[0].evaluation.task
    names = list(results[0].evaluation.scores)
    split = results[0].evaluation.split
    title = f"Variants on the {split} split" + (" (LIRIS-ACCEDE style)" if task == "binary" else "")
    if task == "binary":
        headers = [f"{n} {m}" for n in names for m in ("acc", "F1")] + ["bal. acc", "macro-F1", "majority acc"]
    else:
        headers = [h for n in names for h in (n, f"{n} r")] + ["average", "mean r", "MSE", "train-mean MSE"]
        if results[0].evaluation.second_scores:
            headers += ["per-second r", "per-second CCC"]
    rows = []
    for r in results:
        e = r.evaluation
        if task == "binary":
            values = [e.scores[n][m] for n in names for m in ("accuracy", "f1")]
            values += [e.average(m) for m in ("balanced_accuracy", "macro_f1", "majority_accuracy")]
        else:
            values = [e.scores[n][m] for n in names for m in ("mean_accuracy", "pearson_r")]
            values += [e.average(m) for m in ("mean_accuracy", "pearson_r", "mse", "baseline_mse")]
            if results[0].evaluation.second_scores:
                values += [_second_mean(e, m) for m in ("pearson_r", "ccc")]
        rows.append((NAMES.get(r.variant, r.variant), [*values, r.training.seconds_per_epoch]))
    return title, ["method", *headers, "s / epoch"], rows


def abbreviations(names: list[str]) -> dict[str, str]:
    """Each output name -> its shortest prefix no other name shares, capitalised: the Big Five give their
    OCEAN letters (extraversion E, neuroticism N, agreeableness A, conscientiousness C, openness O), valence
    and arousal give V and A. Used only when the full table is wider than the terminal."""
    out = {}
    for name in names:
        k = next((k for k in range(1, len(name)) if all(not o.startswith(name[:k]) for o in names if o != name)), 0)
        out[name] = name[: k or len(name)].capitalize()
    return out


def _cell(value: float, column: int, columns: int) -> str:
    return f"{value:.2f}" if column == columns - 1 else f"{value:.4f}"


def comparison_table(
    results: list[VariantResult], short: dict[str, str] | None = None, columns: Sequence[int] | None = None
) -> Table:
    """The table as printed: numbers keep their width and every other cell folds instead of being cut.

    `short` (narrow consoles) maps output names onto the abbreviations used in the headers (see
    `abbreviations`) and drops the vertical rules, so Table 1's nine columns fit 80 characters. `columns`: the
    indices of the value columns to show (default all); the method column always comes first."""
    title, headers, rows = comparison_cells(results)
    count = len(rows[0][1])
    shown = list(range(count)) if columns is None else list(columns)
    table = Table(
        title=title, box=box.SIMPLE_HEAD if short else box.HEAVY_HEAD, pad_edge=not short, collapse_padding=bool(short)
    )
    words = [w for method, _ in rows for w in method.split()]
    table.add_column(headers[0], justify="left", overflow="fold", min_width=max(len(w) for w in words))
    for k in shown:
        header = headers[k + 1]
        name = next((n for n in (short or {}) if header == n or header.startswith(n + " ")), None)
        header = short[name] + header[len(name) :] if short and name else header
        header = header.replace(" / ", "/").replace(" ", "\n") if short else header  # a word a line
        width = max(len(_cell(values[k], k, count)) for _, values in rows)
        table.add_column(header, justify="right", overflow="fold", min_width=width)
    for method, values in rows:
        table.add_row(method, *(_cell(values[k], k, count) for k in shown))
    return table


def _fits(console: Console, table: Table, folded: bool = False) -> bool:
    """Whether `table` fits the console at its natural width, or (`folded`) with its text cells folded."""
    measured = Measurement.get(console, console.options.update_width(1_000_000), table)
    return (measured.minimum if folded else measured.maximum) <= console.width


def print_comparison(results: list[VariantResult], console: Console) -> None:
    """The table at full names when it fits the console, else with abbreviated output names and a legend
    line, folded into as many tables (each with the method column) as it takes to fit: nothing is cut (a piped
    or redirected console is 80 columns wide)."""
    table = comparison_table(results)
    if _fits(console, table):
        console.print(table)
        return
    short = abbreviations(list(results[0].evaluation.scores))
    groups: list[list[int]] = [[]]
    for k in range(len(comparison_cells(results)[2][0][1])):
        if groups[-1] and not _fits(console, comparison_table(results, short, [*groups[-1], k]), folded=True):
            groups.append([])
        groups[-1].append(k)
    for group in groups:
        console.print(comparison_table(results, short, group))
    console.print("outputs: " + ", ".join(f"{a} = {n}" for n, a in short.items()))


def write_comparison(results: list[VariantResult], out: str | Path) -> tuple[Path, Path]:
    """OUT/comparison.csv (full precision, a `variant` column beside `method`) and OUT/comparison.md (the
    printed table at full names, 4 decimals) -> their paths."""
    title, headers, rows = comparison_cells(results)
    csv_path, md_path = Path(out) / "comparison.csv", Path(out) / "comparison.md"
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["variant", *headers])
    for r, (method, values) in zip(results, rows, strict=True):
        writer.writerow([r.variant, method, *(repr(float(v)) for v in values)])
    replace_text(csv_path, table.getvalue())
    lines = [
        f"{title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(rows[0][1])) + "|",
    ]
    lines += ["| " + " | ".join([m, *(_cell(v, i, len(vs)) for i, v in enumerate(vs))]) + " |" for m, vs in rows]
    replace_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def _second_mean(evaluation: Evaluation, metric: str) -> float:
    rows = evaluation.second_scores.values()
    return float(np.mean([row[metric] for row in rows])) if rows else float("nan")
