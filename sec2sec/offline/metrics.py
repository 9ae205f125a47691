"""Predictions and labels -> the numbers the paper's tables report, and the ones it should have.

Binary outputs (LIRIS-ACCEDE): accuracy and F1 (as in the paper), balanced accuracy and macro-F1 (which an
always-positive predictor cannot inflate), and the same four for the majority-class baseline. Regression
outputs (First Impressions, Hume-Reaction): mean accuracy 1 - |y - y_hat|, Pearson r (ABAW5 ERI's measure,
averaged over the outputs), MSE, and the MSE and mean accuracy of the training-mean baseline. Per-second
labels add the same per second, with Lin's concordance correlation (CCC) of ABAW's continuous tracks.
"""

from __future__ import annotations

import numpy as np

BINARY_METRICS = ("accuracy", "f1", "balanced_accuracy", "macro_f1")


def _f1(truth: np.ndarray, pred: np.ndarray, positive: bool) -> float:
    """F1 of one class; 0 when the class is in neither truth nor prediction (scikit-learn's zero_division=0)."""
    t, p = (truth, pred) if positive else (~truth, ~pred)
    tp = float(np.sum(t & p))
    denominator = 2 * tp + float(np.sum(~t & p)) + float(np.sum(t & ~p))
    return 2 * tp / denominator if denominator else 0.0


def _macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the classes present in truth or prediction, as scikit-learn's f1_score(average="macro"):
    a class that appears in neither is not a class of the problem, so a perfect one-class predictor scores 1."""
    classes = [c for c in (False, True) if np.any(truth == c) or np.any(pred == c)]
    return float(np.mean([_f1(truth, pred, c) for c in classes]))


def binary_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """0/1 truth and prediction (n,) -> accuracy, F1 (positive class), balanced accuracy, macro-F1.

    Balanced accuracy is the mean recall of the classes present in `truth`; macro-F1 the mean F1 of the
    classes present in truth or prediction. Both follow scikit-learn (tested against it).
    """
    truth, predicted = np.asarray(truth).astype(bool), np.asarray(predicted).astype(bool)
    if truth.shape != predicted.shape or truth.ndim != 1 or truth.size == 0:
        raise ValueError(
            f"truth and predictions must be equal non-empty (n,) arrays; got {truth.shape} and {predicted.shape}"
        )
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in (False, True) if np.any(truth == c)]
    return {
        "accuracy": float(np.mean(truth == predicted)),
        "f1": _f1(truth, predicted, True),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": _macro_f1(truth, predicted),
    }


def majority_baseline(truth: np.ndarray, train_positive_rate: float) -> dict[str, float]:
    """The four binary metrics of always predicting the training set's majority class."""
    majority = train_positive_rate > 0.5
    return binary_metrics(truth, np.full(np.asarray(truth).shape, majority))


def mean_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """ChaLearn First Impressions score: 1 - mean |y - y_hat| (scores in [0, 1])."""
    return float(1.0 - np.mean(np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(predicted, np.float64))))


def pearson(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson correlation of two (n,) arrays; NaN when either side is constant (or has fewer than 2 values)."""
    x, y = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def ccc(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Lin's concordance correlation coefficient 2 cov / (var_x + var_y + (mean_x - mean_y)^2), the measure
    of ABAW's continuous valence-arousal track; NaN for fewer than 2 values or two constant sides."""
    x, y = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * np.mean((x - x.mean()) * (y - y.mean())) / denominator) if denominator > 0 else float("nan")


def mse(truth: np.ndarray, predicted: np.ndarray) -> float:
    x, y = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    return float(np.mean((x - y) ** 2))


def why_undefined(metric: str, truth: np.ndarray, predicted: np.ndarray) -> str:
    """Why `metric` of these (n,) labels and predictions is not a number (NaN): what a user reads beside the
    null that stands for it in a JSON file."""
    x, y = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    name = metric.replace("_", " ")
    if not np.isfinite(y).all():
        return f"{int((~np.isfinite(y)).sum())} of the predictions are not numbers (the model gave NaN)"
    if x.size < 2:
        return f"{x.size} labelled value(s); {name} needs at least 2"
    if metric == "pearson_r" and np.ptp(x) == 0:
        return f"every label is {x[0]:.4g}; a correlation needs labels that vary"
    if metric == "pearson_r" and np.ptp(y) == 0:
        return f"every prediction is {y[0]:.4g}; a correlation needs predictions that vary"
    if metric == "ccc":
        return f"every label and every prediction is {x[0]:.4g}; a concordance needs values that vary or differ"
    return f"{name} is not a number for these values"


def undefined_reasons(
    names: tuple[str, ...], scores: dict[str, dict[str, float]], truth: np.ndarray, probabilities: np.ndarray
) -> dict[str, dict[str, str]]:
    """Per output, why each of its metrics in `scores` that is not finite is undefined (outputs without
    such a metric are left out). truth and probabilities (..., n_outputs), truth NaN where there is no label:
    (N, n) for the clips, (N, T, n) for the seconds."""
    out: dict[str, dict[str, str]] = {}
    for k, name in enumerate(names):
        row = scores.get(name, {})
        x, y = truth[..., k], probabilities[..., k]
        labelled = ~np.isnan(x)
        reasons = {m: why_undefined(m, x[labelled], y[labelled]) for m, v in row.items() if not np.isfinite(v)}
        if reasons:
            out[name] = reasons
    return out


def regression_metrics(truth: np.ndarray, predicted: np.ndarray, baseline: float | None = None) -> dict[str, float]:
    """(n,) scores in [0, 1] -> mean accuracy, Pearson r, MSE (and, given the training mean `baseline`,
    the MSE and mean accuracy of always predicting it)."""
    row = {
        "mean_accuracy": mean_accuracy(truth, predicted),
        "pearson_r": pearson(truth, predicted),
        "mse": mse(truth, predicted),
    }
    if baseline is not None:
        constant = np.full(np.asarray(truth).shape, baseline)
        row["baseline_mse"] = mse(truth, constant)
        row["baseline_mean_accuracy"] = mean_accuracy(truth, constant)
    return row


def score_seconds(
    names: tuple[str, ...], task: str, truth: np.ndarray, probabilities: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per output, metrics over every labelled second: truth and probabilities (N, T, n_outputs), truth
    NaN where a second has no label. Regression: Pearson r, CCC, MSE, mean accuracy; binary: the four
    binary metrics of probability > 0.5."""
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        mask = ~np.isnan(truth[..., k])
        x, y = truth[..., k][mask], probabilities[..., k][mask]
        if x.size == 0:
            continue
        if task == "binary":
            out[name] = binary_metrics(x, y > 0.5)
        else:
            out[name] = {"pearson_r": pearson(x, y), "ccc": ccc(x, y), "mse": mse(x, y)}
            out[name]["mean_accuracy"] = mean_accuracy(x, y)
    return out


def score_outputs(
    names: tuple[str, ...],
    task: str,
    truth: np.ndarray,
    probabilities: np.ndarray,
    train_positive_rate: np.ndarray | None = None,
    train_mean: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per output name, its metrics. truth and probabilities (N, n_outputs); binary truth is 0/1 and the
    prediction is probability > 0.5; `train_positive_rate` (n_outputs,) adds the majority baseline,
    `train_mean` (n_outputs,) the training-mean baseline of a regression output."""
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        if task == "binary":
            row = binary_metrics(truth[:, k], probabilities[:, k] > 0.5)
            if train_positive_rate is not None:
                base = majority_baseline(truth[:, k], float(train_positive_rate[k]))
                row.update({f"majority_{m}": v for m, v in base.items()})
        else:
            mean = None if train_mean is None else float(train_mean[k])
            row = regression_metrics(truth[:, k], probabilities[:, k], mean)
        out[name] = row
    return out


def headline(task: str, scores: dict[str, dict[str, float]]) -> tuple[str, float]:
    """The validation metric for early stopping: mean balanced accuracy (binary) or mean accuracy (regression)."""
    key = "balanced_accuracy" if task == "binary" else "mean_accuracy"
    return key, float(np.mean([row[key] for row in scores.values()]))
