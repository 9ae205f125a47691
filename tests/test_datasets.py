"""Dataset readers on tiny copies of LIRIS-ACCEDE and First Impressions in their real on-disk formats."""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic_clips import python2_pickle, write_liris_tree

from sec2sec.offline.datasets import (
    assign_splits,
    film_split,
    label_thresholds,
    labels,
    load_plain_pickle,
    read_dataset,
    read_first_impressions,
    read_liris,
)
from sec2sec.offline.metrics import binary_metrics, majority_baseline, mean_accuracy, pearson

# (file name, movie, set 0 test / 1 learning / 2 validation, valenceValue, arousalValue)
LIRIS_ROWS = [
    ("ACCEDE00000.mp4", "After_The_Rain.mp4", 1, 1.5, 2.0),
    ("ACCEDE00001.mp4", "After_The_Rain.mp4", 1, 2.5, 3.9),
    ("ACCEDE00002.mp4", "Big_Buck_Bunny.mp4", 1, 3.5, 1.4),
    ("ACCEDE00003.mp4", "Big_Buck_Bunny.mp4", 1, 4.2, 3.0),
    ("ACCEDE00004.mp4", "Chatter.mp4", 2, 3.0, 2.2),
    ("ACCEDE00005.mp4", "Damaged_Kung_Fu.mp4", 0, 2.0, 4.4),
    ("ACCEDE00006.mp4", "Damaged_Kung_Fu.mp4", 0, 4.0, 1.3),
]


@pytest.fixture()
def liris_root(tmp_path: Path) -> Path:
    return write_liris_tree(tmp_path / "LIRIS-ACCEDE", LIRIS_ROWS)


def test_liris_parsing_and_official_split(liris_root: Path) -> None:
    records = read_liris(liris_root)
    assert [r.clip_id for r in records] == [f"ACCEDE{i:05d}" for i in range(7)]
    assert records[1].path == liris_root / "data" / "ACCEDE00001.mp4"
    assert records[1].group == "After_The_Rain.mp4"
    assert records[1].targets == {"valence": 2.5, "arousal": 3.9}
    assert [r.split for r in records] == ["train"] * 4 + ["validation", "test", "test"]


def test_labels_at_the_learning_set_median(liris_root: Path) -> None:
    records = read_liris(liris_root)
    thresholds = label_thresholds(records, ("valence", "arousal"), "median")
    assert thresholds == {"valence": 3.0, "arousal": 2.5}  # medians of the 4 learning clips only
    y = labels(records, ("valence", "arousal"), thresholds)
    assert y.dtype == np.float32 and y.shape == (7, 2)
    assert y[:, 0].tolist() == [0, 0, 1, 1, 0, 0, 1]  # strictly above the threshold is positive
    assert label_thresholds(records, ("valence",), "3.9") == {"valence": 3.9}
    assert labels(records[:2], ("valence",), None).tolist() == [[1.5], [2.5]]
    with pytest.raises(ValueError, match=r"has no target 'joy'.*model.heads.outputs"):
        labels(records, ("joy",), None)


def test_film_split_keeps_every_film_in_one_split(tmp_path: Path) -> None:
    rows = [(f"ACCEDE{i:05d}.mp4", f"film{i % 13}.mp4", 1, 1.0 + i % 4, 2.0) for i in range(120)]
    records = read_liris(write_liris_tree(tmp_path, rows))
    for seed in (0, 1, 2):
        split = film_split(records, seed)
        films = {s: {r.group for r in split if r.split == s} for s in ("train", "validation", "test")}
        assert not (films["train"] & films["validation"] or films["train"] & films["test"])
        assert not films["validation"] & films["test"]
        assert all(films.values()), films
        assert 0.5 < sum(r.split == "train" for r in split) / 120 < 0.85
    assert film_split(records, 4) == film_split(records, 4)
    assert film_split(records, 4) != film_split(records, 5)
    assert assign_splits(records, "official", 0) == records
    with pytest.raises(ValueError, match="split mode 'clip' is not allowed; use one of official, film"):
        assign_splits(records, "clip", 0)


def test_missing_liris_files_name_the_file_and_the_fix(liris_root: Path) -> None:
    (liris_root / "annotations" / "ACCEDEsets.txt").unlink()
    with pytest.raises(ValueError, match=r"ACCEDEsets.txt does not exist; download LIRIS-ACCEDE .* --root"):
        read_liris(liris_root)
    with pytest.raises(ValueError, match="dataset 'kinetics' is not known; use one of liris, fi"):
        read_dataset("kinetics", liris_root)


def test_liris_header_is_checked(liris_root: Path) -> None:
    ranking = liris_root / "annotations" / "ACCEDEranking.txt"
    ranking.write_text("id\tname\tvalence\n0\tACCEDE00000.mp4\t1.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks column.*valenceValue, arousalValue"):
        read_liris(liris_root)


def test_liris_value_that_is_no_finite_number_is_that_rows_problem(liris_root: Path) -> None:
    """A ranking value that is not a finite number (NaN would reach index.json, which is JSON) is that row's
    listed problem, line and column named; a set that is not 0, 1 or 2 refuses the file, naming the line."""
    ranking = liris_root / "annotations" / "ACCEDEranking.txt"
    text = ranking.read_text().replace("\t2.5\t3.9\t", "\tnan\t3.9\t").replace("\t3.5\t1.4\t", "\t3.5\thigh\t")
    ranking.write_text(text)
    records = read_liris(liris_root)
    assert len(records) == len(LIRIS_ROWS)
    assert {r.clip_id: r.problem for r in records if r.problem} == {
        "ACCEDE00001": "ACCEDEranking.txt line 3, column valenceValue: 'nan' is not a finite number",
        "ACCEDE00002": "ACCEDEranking.txt line 4, column arousalValue: 'high' is not a finite number",
    }
    sets = liris_root / "annotations" / "ACCEDEsets.txt"
    sets.write_text(sets.read_text().replace("ACCEDE00004.mp4\t2", "ACCEDE00004.mp4\tval"))
    with pytest.raises(ValueError) as refused:
        read_liris(liris_root)
    assert str(refused.value) == (
        f"{sets} line 6, column set: 'val'; allowed: 0 (test), 1 (learning), 2 (validation); re-download ACCEDEsets.txt"
    )


TRAITS = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "openness", "interview")


def _fi_tree(root: Path) -> Path:
    names = {"train": ["abcDEF12345.001.mp4", "abcDEF12345.002.mp4"], "validation": ["zz_9.000.mp4"], "test": []}
    files = {
        "train": "annotation_training.pkl",
        "validation": "annotation_validation.pkl",
        "test": "annotation_test.pkl",
    }
    for split, clips in names.items():
        (root / split).mkdir(parents=True)
        for n in clips:
            (root / split / n).write_bytes(b"")
        scores = {t: {n: round(0.1 * (k + 1) + 0.01 * i, 4) for i, n in enumerate(clips)} for k, t in enumerate(TRAITS)}
        (root / files[split]).write_bytes(python2_pickle(scores))
    return root


def test_first_impressions_parsing(tmp_path: Path) -> None:
    records = read_first_impressions(_fi_tree(tmp_path))
    assert [(r.clip_id, r.split, r.group) for r in records] == [
        ("abcDEF12345.001", "train", "abcDEF12345"),
        ("abcDEF12345.002", "train", "abcDEF12345"),
        ("zz_9.000", "validation", "zz_9"),
    ]
    assert records[1].targets["extraversion"] == pytest.approx(0.11)
    assert records[1].targets["openness"] == pytest.approx(0.51)
    assert sorted(records[0].targets) == sorted(TRAITS)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned",))

    path = tmp_path / "annotation_training.pkl"
    path.write_bytes(pickle.dumps({"extraversion": {"a.mp4": Evil()}}, protocol=2))
    with pytest.raises(ValueError, match=r"annotation_training.pkl was refused: it references (posix|os)\.system"):
        load_plain_pickle(path)


def test_restricted_unpickler_reads_numpy_scores(tmp_path: Path) -> None:
    path = tmp_path / "scores.pkl"
    path.write_bytes(pickle.dumps({"openness": {"a.mp4": np.float64(0.625), "b.mp4": np.int64(1)}}, protocol=2))
    assert load_plain_pickle(path) == {"openness": {"a.mp4": 0.625, "b.mp4": 1}}
    path.write_bytes(pickle.dumps({"openness": np.zeros(2)}, protocol=2))
    with pytest.raises(ValueError, match=r"refused: it references numpy.*reconstruct"):
        load_plain_pickle(path)


def test_missing_fi_annotation_names_the_file(tmp_path: Path) -> None:
    root = _fi_tree(tmp_path)
    (root / "annotation_validation.pkl").unlink()
    with pytest.raises(ValueError, match=r"annotation_validation.pkl does not exist; download the ChaLearn"):
        read_first_impressions(root)


def test_binary_metrics_and_majority_baseline() -> None:
    truth = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    always_positive = binary_metrics(truth, np.ones(8))
    assert always_positive["accuracy"] == 0.75
    assert always_positive["f1"] == pytest.approx(2 * 0.75 / 1.75)  # the paper's F1 ~ 2acc/(1+acc)
    assert always_positive["balanced_accuracy"] == 0.5
    assert always_positive["macro_f1"] == pytest.approx((6 / 7) / 2)
    assert majority_baseline(truth, 0.8) == always_positive
    perfect = binary_metrics(truth, truth)
    assert perfect == {"accuracy": 1.0, "f1": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0}
    with pytest.raises(ValueError, match=r"equal non-empty \(n,\) arrays"):
        binary_metrics(truth, np.ones(3))


def test_regression_metrics() -> None:
    assert mean_accuracy(np.array([0.5, 0.2]), np.array([0.6, 0.2])) == pytest.approx(0.95)
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])) == pytest.approx(0.997949, abs=1e-5)
    assert np.isnan(pearson(np.array([1.0, 1.0]), np.array([0.0, 1.0])))


@pytest.mark.parametrize("case", range(40))
def test_binary_metrics_agree_with_scikit_learn(case: int) -> None:
    """Accuracy, F1, balanced accuracy and macro-F1 equal scikit-learn's on random and one-class inputs
    (a class absent from both truth and prediction is not counted: a perfect one-class predictor gets 1)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 12))
    truth = rng.random(n) < [0.5, 0.0, 1.0, 0.9][case % 4]
    predicted = truth.copy() if case % 5 == 0 else rng.random(n) < [0.5, 0.0, 1.0, 0.2, 0.8][case % 5]
    ours = binary_metrics(truth, predicted)
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert ours["f1"] == pytest.approx(f1_score(truth, predicted, zero_division=0))
    assert ours["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns when a predicted class is absent from truth
        assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))


def test_perfect_one_class_predictor_has_macro_f1_one() -> None:
    truth = np.zeros(6, dtype=bool)
    assert binary_metrics(truth, truth)["macro_f1"] == 1.0
    assert binary_metrics(truth, truth | (np.arange(6) == 0))["macro_f1"] == pytest.approx((2 * 5 / 11 + 0) / 2)


def test_fi_score_that_is_no_finite_number_names_it(tmp_path: Path) -> None:
    root = _fi_tree(tmp_path)
    (root / "annotation_validation.pkl").write_bytes(python2_pickle({t: {"zz_9.000.mp4": math.nan} for t in TRAITS}))
    with pytest.raises(ValueError) as refused:
        read_first_impressions(root)
    assert str(refused.value) == (
        f"{root / 'annotation_validation.pkl'}: extraversion of zz_9.000.mp4 is nan, not a finite number; use the "
        "original ChaLearn annotation file"
    )
