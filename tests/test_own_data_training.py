"""Own data and Hume-Reaction end to end, on tiny datasets in the real layouts written here: extract, train,
evaluate and compare, one process and torchrun with 2 (gloo); and the planted per-second signal: each second's
brightness is learned per second with per-second labels, and not from clip labels alone."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers.commands import read_metrics, run_sec2sec
from helpers.configs import TINY_ENCODERS_TOML, TINY_FUSION_TOML
from helpers.hume_tree import write_hume_info
from helpers.synthetic_clips import Second, render, write_mp4

from sec2sec.checkpoint import model_from_checkpoint
from sec2sec.commands import main
from sec2sec.config import Config, parse_config
from sec2sec.offline.compare import compare, comparison_table
from sec2sec.offline.evaluate import evaluate, results_table
from sec2sec.offline.extract import extract
from sec2sec.offline.features import read_index
from sec2sec.offline.hume import HUME_EMOTIONS
from sec2sec.offline.prepared import prepare
from sec2sec.offline.seconds import second_scores
from sec2sec.offline.train import fit

ROOT = Path(__file__).resolve().parents[1]
MODEL = (
    """
[model]
clip_seconds = 4
"""
    + TINY_ENCODERS_TOML
    + TINY_FUSION_TOML
    + """
[model.temporal]
kind = "{kind}"
hidden = 32
transformer_heads = 4
dropout = 0.0
[model.heads]
task = "regression"
outputs = {outputs}
[train]
epochs = {epochs}
batch_size = 8
lr = 3e-3
patience = {epochs}
seed = 0
loss = "mse"
modality_dropout = 0.0
supervision = "{supervision}"
"""
)
BRIGHT_SECONDS = 2  # of 4: every clip's mean brightness is the same, so a clip label says nothing per second


def _toml(path: Path, kind: str = "lstm", outputs: str = '["brightness"]', epochs: int = 40, sup: str = "second"):
    path.write_text(MODEL.format(kind=kind, outputs=outputs, epochs=epochs, supervision=sup), encoding="utf-8")
    return path


def _config(path: Path) -> Config:
    import tomllib

    return parse_config(tomllib.loads(path.read_text()))


def _brightness_clip(path: Path, bright: list[bool], seed: int) -> None:
    seconds = [Second(flash=(0, 15)) if b else Second() for b in bright]
    write_mp4(path, *render(seconds, noise=0.02, seed=seed))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A manifest of 36 four-second clips (pinned 24 train / 6 validation / 6 test, two clips a group), each
    with a per-second trace: 0.8 in its 2 bright seconds, 0.2 in its 2 dark ones (one trace sampled at 4 Hz
    with a time column), clip labels left empty (the trace's mean, 0.5 for every clip); plus a bad row."""
    base = tmp_path_factory.mktemp("traced")
    rng = random.Random(0)
    lines = ["path,brightness,group,split,trace"]
    for i in range(36):
        bright = [True] * BRIGHT_SECONDS + [False] * (4 - BRIGHT_SECONDS)
        rng.shuffle(bright)
        _brightness_clip(base / "clips" / f"c{i:02d}.mp4", bright, seed=i)
        values = [0.8 if b else 0.2 for b in bright]
        trace = base / "traces" / f"c{i:02d}.csv"
        trace.parent.mkdir(exist_ok=True)
        if i == 0:  # 4 Hz samples with a time column, resampled onto seconds
            rows = [f"{k / 4},{values[k // 4]}" for k in range(16)]
            trace.write_text("time,brightness\n" + "\n".join(rows) + "\n")
        else:
            trace.write_text("brightness\n" + "\n".join(map(str, values)) + "\n")
        split = "train" if i < 24 else "validation" if i < 30 else "test"
        lines.append(f"clips/c{i:02d}.mp4,,g{i // 2},{split},traces/c{i:02d}.csv")
    lines.append("clips/c99.mp4,0.5,g99,train,")  # no such file: listed, the others go on
    (base / "own.csv").write_text("\n".join(lines) + "\n")
    return base / "own.csv", _toml(base / "config.toml")


@pytest.fixture(scope="module")
def traced_cache(traced: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, config = traced
    cache = tmp_path_factory.mktemp("traced_cache") / "cache"
    summary = extract("manifest", manifest, cache, _config(config), dtype="float32", workers=0)
    assert (summary.encoded, summary.windows, len(summary.unreadable)) == (36, 144, 1)
    assert summary.unreadable["clips/c99.mp4"].endswith(
        "own.csv row 38, column path: " + str(manifest.parent / "clips" / "c99.mp4") + " does not exist"
    )
    report = (cache / "unreadable.tsv").read_text()
    assert "clips/c99.mp4\t" in report and "row 38, column path" in report
    return cache


@pytest.mark.slow
def test_per_second_labels_teach_each_second(traced: tuple[Path, Path], traced_cache: Path, tmp_path: Path) -> None:
    """The planted answer: each second's brightness. Trained per second, the LSTM model follows it second by
    second on the test clips; the same model trained on the clip labels (0.5 for every clip) cannot."""
    resampled = read_index(traced_cache).clips["clips/c00.mp4"]["seconds"]["brightness"]  # from 4 Hz samples
    assert sorted(resampled) == pytest.approx([0.2, 0.2, 0.8, 0.8])
    results = {}
    for supervision in ("second", "clip"):
        config = _config(_toml(tmp_path / f"{supervision}.toml", epochs=15, sup=supervision))
        trained = fit(traced_cache, config, tmp_path / supervision)
        results[supervision] = evaluate(trained.best_path, traced_cache, "test").second_scores["brightness"]
    for supervision, row in results.items():
        r, agreement, error = row["pearson_r"], row["ccc"], row["mse"]
        print(f"supervised per {supervision}: per-second r {r:.3f}, CCC {agreement:.3f}, MSE {error:.4f}")
    assert results["second"]["ccc"] > 0.8 and results["second"]["mse"] < 0.02, results
    assert results["clip"]["ccc"] < 0.3 and results["clip"]["mse"] > 0.06, results  # 0.09: always 0.5


@pytest.mark.slow
def test_torchrun_per_second_training_equals_one_process(traced, traced_cache: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: the manifest extracts to the 1-process cache (the bad row listed once),
    per-second training gives the 1-process metrics to 1e-5, evaluate prints the per-second table once."""
    manifest, _ = traced
    config = _toml(tmp_path / "short.toml", kind="gru_transformer", epochs=3)
    common = ["--dataset", "manifest", "--root", str(manifest), "--config", str(config), "--dtype", "float32"]
    out = run_sec2sec(["extract", *common, "--out", str(tmp_path / "cache2")], 2, tmp_path).stdout
    assert "36 clips encoded (144 windows, " in out and "1 unreadable" in out
    one, two = read_index(traced_cache), read_index(tmp_path / "cache2")
    assert (
        list(one.clips) == list(two.clips)
        and two.clips["clips/c05.mp4"]["seconds"] == one.clips["clips/c05.mp4"]["seconds"]
    )
    assert list(two.unreadable) == ["clips/c99.mp4"]
    fit(traced_cache, _config(config), tmp_path / "run1")
    run_sec2sec(
        ["train", "--config", str(config), "--cache", str(traced_cache), "--out", str(tmp_path / "run2")], 2, tmp_path
    )
    rows = [read_metrics(tmp_path / f"run{n}") for n in (1, 2)]
    assert len(rows[0]) == len(rows[1]) == 3
    for r1, r2 in zip(*rows, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy", "val_metric"):
            assert float(r1[key]) == pytest.approx(float(r2[key]), abs=1e-5), key
    checkpoint = str(tmp_path / "run2" / "best.pt")
    args = ["evaluate", "--checkpoint", checkpoint, "--cache", str(traced_cache), "--out", str(tmp_path / "e.json")]
    out = run_sec2sec(args, 2, tmp_path).stdout
    assert out.count("per second, every labelled second of the test split") == 1 and "CCC" in out
    payload = json.loads((tmp_path / "e.json").read_text())
    assert set(payload["second_scores"]["brightness"]) == {"pearson_r", "ccc", "mse", "mean_accuracy"}


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of 6 four-second clips, two per split (pinned), one of each pair with a per-second trace and one
    with only a clip label: the mix on which training gives untraced clips their clip label on their last second."""
    base, lines = tmp_path_factory.mktemp("mixed"), ["path,brightness,group,split,trace"]
    for i, split in enumerate(["train", "train", "validation", "validation", "test", "test"]):
        bright = [i % 2 == 0, True, False, i % 3 == 0]
        _brightness_clip(base / "clips" / f"m{i}.mp4", bright, seed=50 + i)
        trace = ""
        if i % 2 == 0:
            trace = f"traces/m{i}.csv"
            (base / "traces").mkdir(exist_ok=True)
            (base / trace).write_text("brightness\n" + "\n".join("0.8" if b else "0.2" for b in bright) + "\n")
        lines.append(f"clips/m{i}.mp4,{'' if trace else 0.3 + 0.1 * i},m{i},{split},{trace}")
    (base / "own.csv").write_text("\n".join(lines) + "\n")
    cache = base / "cache"
    extract("manifest", base / "own.csv", cache, _config(_toml(base / "config.toml")), dtype="float32", workers=0)
    return cache


def test_evaluate_scores_seconds_on_the_targets_validation_uses(mixed_cache: Path, tmp_path: Path) -> None:
    """On traced and untraced clips together, evaluate's per-second scores are the ones validation computes for
    the same split and checkpoint (an untraced clip counts with its clip label on its last second in both)."""
    config = _config(_toml(tmp_path / "c.toml", epochs=1))
    trained = fit(mixed_cache, config, tmp_path / "run")
    split = prepare(mixed_cache, config, "official", 0).splits["validation"]
    assert int((~split.seconds.isnan()).sum()) == 5  # 4 traced seconds + the untraced clip's last second
    model, _ = model_from_checkpoint(trained.best_path)
    expected = second_scores(model, split.features, split.seconds, config.model.heads.outputs, "regression", 8)
    got = evaluate(trained.best_path, mixed_cache, "validation").second_scores
    assert got["brightness"] == pytest.approx(expected["brightness"])


def test_finetune_is_refused_on_traces_supervised_per_second(mixed_cache: Path, tmp_path: Path, capsys) -> None:
    """--finetune trains the clip outputs only: on a cache with traces under supervision = "second" (whose
    validation early-stops on per-second scores) train refuses it before any work, naming the fix."""
    config, out = _toml(tmp_path / "c.toml", epochs=1), tmp_path / "run"
    args = ["train", "--config", str(config), "--cache", str(mixed_cache), "--out", str(out), "--finetune"]
    assert main([*args, "--device", "cpu"]) == 2
    message = '--finetune trains the clip outputs only; set [train] supervision = "clip" or train without --finetune'
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


@pytest.fixture(scope="module")
def hume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Hume-Reaction tree as downloaded: data_info.csv with bracketed ids, train/val/test with mp4/ and wav/,
    Test rows without intensities, one Train row whose video is missing. Amusement follows the number of
    bright seconds (so it can be learned), the other intensities are noise."""
    base = tmp_path_factory.mktemp("hume")
    root, rng, rows = base / "hume", random.Random(1), []
    for k, split in enumerate(["Train"] * 10 + ["Val"] * 4 + ["Test"] * 3):
        clip_id = f"{k + 1:05d}"
        bright = [rng.random() < 0.5 for _ in range(3)]
        folder = {"Train": "train", "Val": "val", "Test": "test"}[split]
        _brightness_clip(root / folder / "mp4" / f"{clip_id}.mp4", bright, seed=100 + k)
        (root / folder / "wav").mkdir(exist_ok=True)
        (root / folder / "wav" / f"{clip_id}.wav").write_bytes(b"RIFF")
        values = [round(rng.random(), 4) for _ in HUME_EMOTIONS]
        values[1] = 0.1 + 0.25 * sum(bright)
        rows.append((clip_id, split, None if split == "Test" else values))
    rows.append(("00099", "Train", [0.5] * 7))  # listed in data_info.csv, video not downloaded
    write_hume_info(root, rows)
    outputs = json.dumps(list(HUME_EMOTIONS))
    return root, _toml(base / "hume.toml", kind="gru_transformer", outputs=outputs, epochs=4)


@pytest.mark.slow
def test_hume_reaction_extract_train_evaluate_compare(hume: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """Hume-Reaction as downloaded through the CLI: extract lists the missing video and keeps the withheld Test
    clips (never scored: evaluate says to score Val); compare reports per-emotion Pearson r, their mean, MSE
    and the training-mean baseline on the Val split, for the ABAW5 model and the LSTM."""
    root, config = hume
    cache = tmp_path / "cache"
    args = ["extract", "--dataset", "hume", "--root", str(root), "--config", str(config), "--out", str(cache)]
    assert main([*args, "--workers", "0", "--dtype", "float32"]) == 0
    assert "17 clips encoded (68 windows, " in capsys.readouterr().out
    index = read_index(cache)
    assert [c["split"] for c in index.clips.values()].count("test") == 3
    assert index.clips["00015"]["targets"] == {} and list(index.unreadable) == ["00099"]
    results = compare(ROOT / "configs", cache, tmp_path / "runs", ("lstm", "default"), base=config)
    evaluation = results[1].evaluation
    assert evaluation.split == "validation" and len(evaluation.ids) == 4
    assert list(evaluation.scores) == list(HUME_EMOTIONS)
    assert set(evaluation.scores["fear"]) == {
        "mean_accuracy",
        "pearson_r",
        "mse",
        "baseline_mse",
        "baseline_mean_accuracy",
    }
    train_mean = np.mean([index.clips[f"{k:05d}"]["targets"]["fear"] for k in range(1, 11)])
    truth = evaluation.truth[:, list(HUME_EMOTIONS).index("fear")]
    assert evaluation.scores["fear"]["baseline_mse"] == pytest.approx(float(np.mean((truth - train_mean) ** 2)))
    headers = [c.header for c in comparison_table(results).columns]
    assert headers[1:3] == ["adoration", "adoration r"] and "mean r" in headers and "train-mean MSE" in headers
    assert comparison_table(results).title == "Variants on the validation split"
    checkpoint = tmp_path / "runs" / "default" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--cache", str(cache), "--split", "test"]) == 2
    assert "has no labels (3 clips whose labels were withheld" in capsys.readouterr().err
    scored = tmp_path / "val.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--cache", str(cache), "--split", "validation"]
    assert main([*args, "--out", str(scored)]) == 0
    assert json.loads(scored.read_text())["scores"]["fear"] == pytest.approx(evaluation.scores["fear"])
    table = results_table(evaluation, "Val")
    assert [c.header for c in table.columns] == [
        "output",
        *("pearson r", "mean accuracy", "MSE", "train-mean MSE", "train-mean accuracy"),
    ]
    assert [c for c in table.columns[0].cells] == [*HUME_EMOTIONS, "mean"]
    mean_r = np.mean([row["pearson_r"] for row in evaluation.scores.values()])
    assert list(table.columns[1].cells)[-1] == f"{mean_r:.4f}"


def test_new_clips_of_a_cached_group_join_its_split(tmp_path: Path) -> None:
    """Unpinned groups are split over each run's rows, so adding a row can move a group: a group the cache
    already holds keeps its split for its new clips (never one person in two splits)."""
    from sec2sec.offline.manifest import read_manifest

    config = _config(_toml(tmp_path / "config.toml"))
    _brightness_clip(tmp_path / "c.mp4", [True, False, True, False], seed=7)
    for name in [f"g{i}.mp4" for i in range(10)] + ["extra.mp4"]:
        (tmp_path / name).write_bytes((tmp_path / "c.mp4").read_bytes())
    rows = ["path,brightness,group"] + [f"g{i}.mp4,0.5,g{i}" for i in range(10)]

    def split_of(lines: list[str], group: str) -> str:
        (tmp_path / "own.csv").write_text("\n".join(lines) + "\n")
        return next(r.split for r in read_manifest(tmp_path / "own.csv", config.model.heads) if r.group == group)

    moved = [g for g in (f"g{i}" for i in range(10)) if split_of(rows, g) != split_of([*rows, f"extra.mp4,0.5,{g}"], g)]
    assert moved, "no added row moves a group: the test needs another layout"
    group, before = moved[0], split_of(rows, moved[0])
    extract("manifest", tmp_path / "own.csv", tmp_path / "cache", config, dtype="float32", workers=0)
    split_of([*rows, f"extra.mp4,0.5,{group}"], group)  # the manifest now has the added row
    extract("manifest", tmp_path / "own.csv", tmp_path / "cache", config, dtype="float32", workers=0)
    clips = read_index(tmp_path / "cache").clips
    assert len(clips) == 11 and {e["split"] for e in clips.values() if e["group"] == group} == {before}


def test_evaluate_out_is_checked_before_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sec2sec evaluate --out`: a folder that does not exist, a folder, or the checkpoint's own file is refused in
    one line (exit 2) before anything is evaluated, and the checkpoint is left as it was."""
    from sec2sec.commands import evaluate as evaluate_command

    monkeypatch.setattr(evaluate_command, "evaluate", lambda *a: pytest.fail("evaluated before --out was checked"))
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"a checkpoint")
    evaluate_args = ["evaluate", "--checkpoint", str(checkpoint), "--cache", str(tmp_path), "--device", "cpu"]
    missing = tmp_path / "no"
    refusals = {
        missing / "e.json": f"--out {missing / 'e.json'}: the folder {missing} does not exist; create it "
        f"(mkdir -p {missing}) or write the file somewhere else",
        tmp_path: f"--out {tmp_path}: it is a folder; give a file name inside it",
        checkpoint: f"--out {checkpoint} is the file given as --checkpoint, which it would replace; give another name",
    }
    for out, message in refusals.items():
        assert main([*evaluate_args, "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert checkpoint.read_bytes() == b"a checkpoint"


@pytest.mark.slow
def test_evaluate_out_is_strict_json_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sec2sec evaluate --out` on a test split whose labels are all 0.5: a full disk while writing leaves the old
    file whole and no temporary file; the file written is strict JSON, with null for the Pearson r, and why."""
    import os

    _brightness_clip(tmp_path / "c.mp4", [True, False], seed=3)
    rows = ["path,brightness,split"]
    for i, (split, label) in enumerate([("train", 0.2), ("train", 0.8), ("train", 0.4), ("validation", 0.6)]):
        rows.append(f"c{i}.mp4,{label},{split}")
    rows += ["c4.mp4,0.5,test", "c5.mp4,0.5,test"]
    for i in range(6):
        (tmp_path / f"c{i}.mp4").write_bytes((tmp_path / "c.mp4").read_bytes())
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n")
    config = _toml(tmp_path / "config.toml", epochs=1, sup="clip")
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = ["extract", "--dataset", "manifest", "--root", str(tmp_path / "own.csv"), "--config", str(config)]
    assert main([*args, "--out", str(cache), "--workers", "0", "--dtype", "float32", "--precision", "float32"]) == 0
    assert main(["train", "--config", str(config), "--cache", str(cache), "--out", str(run), "--device", "cpu"]) == 0
    capsys.readouterr()
    evaluate_args = ["evaluate", "--checkpoint", str(run / "best.pt"), "--cache", str(cache), "--device", "cpu"]
    out = tmp_path / "e.json"
    out.write_text("the scores of an earlier evaluation\n")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as full:
        full.setattr(os, "fsync", full_disk)
        assert main([*evaluate_args, "--out", str(out)]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: --out {out}: cannot be written: the disk is full; free some space or write it somewhere else\n"
    )
    assert out.read_text() == "the scores of an earlier evaluation\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    assert main([*evaluate_args, "--out", str(out)]) == 0
    why = "every label is 0.5; a correlation needs labels that vary"
    assert f"brightness pearson r: undefined ({why})" in capsys.readouterr().out
    refuse = {"parse_constant": lambda name: pytest.fail(f"--out holds {name}, which is not JSON")}
    written = json.loads(out.read_text(), **refuse)
    assert written["split"] == "test" and sorted(written["predictions"]) == ["c4.mp4", "c5.mp4"]
    assert written["scores"]["brightness"]["pearson_r"] is None
    assert written["scores"]["brightness"]["mse"] >= 0
    assert written["undefined"] == {"scores": {"brightness": {"pearson_r": why}}, "second_scores": {}}
