"""Metrics computed in numpy on decoded predictions, in the target's own units.

Each output's scores come beside those of a trivial baseline (majority class or training
mean) and the ``lift``: how much better the model is, positive when it is better, for every
metric (for errors and log loss that is baseline minus model). ``curves`` holds what the
plots are drawn from (ROC and precision-recall points, calibration bins, a sample of
residuals), small enough to keep in ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

EPSILON = 1e-7
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse", "hamming_loss", "ece"})
THRESHOLD_METRICS = ("f1", "accuracy", "precision", "recall")
CURVE_POINTS = 200
RESIDUAL_SAMPLE = 500
CALIBRATION_BINS = 10
ECE_BINS = 15
TEMPERATURES = (0.05, 20.0)
"""The range a fitted temperature is searched in."""


def with_baseline(scores: dict, baseline: dict, kind: str) -> dict:
    """``scores`` with the baseline's scores and the lift over them.

    >>> with_baseline({"mae": 1.0, "r2": 0.5}, {"mae": 3.0, "r2": 0.0}, "training mean")["lift"]
    {'mae': 2.0, 'r2': 0.5}
    """
    lift = {}
    for name, value in scores.items():
        if isinstance(value, float) and isinstance(baseline.get(name), float) and name != "threshold":
            better = baseline[name] - value if name in LOWER_IS_BETTER else value - baseline[name]
            lift[name] = float(better)
    return {**scores, "baseline": {"kind": kind, **baseline}, "lift": lift}


def drop(name: str, reference: float, changed: float) -> float:
    """How much worse ``changed`` is than ``reference`` for metric ``name`` (positive = worse).

    >>> drop("mae", 1.0, 1.5), drop("accuracy", 0.9, 0.6)
    (0.5, 0.30000000000000004)
    """
    return changed - reference if name in LOWER_IS_BETTER else reference - changed


def ranked_counts(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores from high to low, and the true and false positives when every row
    scoring at least that much is called positive."""
    order = np.argsort(-score, kind="mergesort")
    ordered = score[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    true_positives = np.cumsum(positive[order])[last_of_each]
    return ordered[last_of_each], true_positives, last_of_each + 1 - true_positives


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates, from (0, 0) to (1, 1)."""
    _, true_positives, false_positives = ranked_counts(positive, score)
    negatives = max(positive.size - np.count_nonzero(positive), 1)
    return (np.r_[0.0, false_positives / negatives],
            np.r_[0.0, true_positives / max(np.count_nonzero(positive), 1)])


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    count = np.count_nonzero(positive)
    if count == 0 or count == positive.size:
        return float("nan")
    false_rate, true_rate = roc_curve(positive, score)
    return float(np.trapezoid(true_rate, false_rate))


def precision_recall_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at each distinct threshold, from the highest score down."""
    _, true_positives, false_positives = ranked_counts(positive, score)
    precision = true_positives / (true_positives + false_positives)
    return true_positives / max(np.count_nonzero(positive), 1), precision


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (precision weighted by each
    gain in recall); NaN without positives.

    >>> round(average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4)
    0.8333
    """
    if not np.count_nonzero(positive):
        return float("nan")
    recall, precision = precision_recall_curve(positive, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(truth: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """truth in {0, 1}; probability of class 1; rows at or above ``threshold`` are called 1.

    >>> scores = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.6, 0.7]), 0.5)
    >>> scores["accuracy"], scores["recall"], scores["confusion_matrix"]
    (0.75, 1.0, [[1, 1], [0, 2]])
    """
    positive = truth == 1
    predicted = probability >= threshold
    true_positive = np.count_nonzero(predicted & positive)
    precision = true_positive / max(np.count_nonzero(predicted), 1)
    recall = true_positive / max(np.count_nonzero(positive), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(predicted == positive)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc(positive, probability),
        "pr_auc": average_precision(positive, probability),
        "log_loss": binary_log_loss(positive, probability),
        "ece": expected_calibration_error(positive, probability),
        "threshold": float(threshold),
        "confusion_matrix": confusion_matrix(positive.astype(int), predicted.astype(int), 2),
    }


def choose_threshold(truth: np.ndarray, probability: np.ndarray, by: str = "f1") -> float | None:
    """The probability threshold that maximises metric ``by`` (``f1``, ``accuracy``,
    ``precision`` or ``recall``) on these rows; ties go to the higher F1, then to the higher
    threshold. Halfway between neighbouring scores, so it does not sit on a seen value.
    None when the rows hold only one class.

    >>> round(choose_threshold(np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.4, 0.6, 0.9])), 6)
    0.3
    """
    positive = truth == 1
    positives = np.count_nonzero(positive)
    if positives == 0 or positives == truth.size:
        return None
    scores, true_positives, false_positives = ranked_counts(positive, probability)
    # One more candidate above every score: nothing called positive.
    true_positives, false_positives = np.r_[0, true_positives], np.r_[0, false_positives]
    edges = np.r_[1.0, scores, 0.0]
    cuts = (edges[:-1] + edges[1:]) / 2
    called = true_positives + false_positives
    false_negatives = positives - true_positives
    candidates = {
        "f1": 2 * true_positives / (2 * true_positives + false_positives + false_negatives),
        "accuracy": (true_positives + truth.size - positives - false_positives) / truth.size,
        "precision": np.divide(true_positives, called, out=np.zeros(called.size), where=called > 0),
        "recall": true_positives / positives,
    }
    best = np.lexsort((cuts, candidates["f1"], candidates[by]))[-1]
    return float(cuts[best])


def binary_curves(truth: np.ndarray, probability: np.ndarray) -> dict:
    """ROC and precision-recall points and calibration bins, for the plots."""
    positive = truth == 1
    false_rate, true_rate = roc_curve(positive, probability)
    recall, precision = precision_recall_curve(positive, probability)
    return {
        "roc": {"fpr": _thin(false_rate), "tpr": _thin(true_rate)},
        "pr": {"recall": _thin(recall), "precision": _thin(precision),
               "positive_rate": float(positive.mean()) if positive.size else 0.0},
        "calibration": reliability(positive, probability),
    }


def _binned(outcome: np.ndarray, confidence: np.ndarray, bins: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of ``confidence`` over [0, 1] that holds rows: its rows, their
    mean confidence and the rate of ``outcome`` among them."""
    index = np.clip((confidence * bins).astype(int), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    filled = counts > 0
    mean = np.bincount(index, confidence, bins)[filled] / counts[filled]
    rate = np.bincount(index, outcome.astype(float), bins)[filled] / counts[filled]
    return counts[filled], mean, rate


def reliability(outcome: np.ndarray, confidence: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """The reliability curve the calibration plot draws: per bin of ``confidence``, its mean
    (``predicted``), how often ``outcome`` held (``observed``) and the ``rows``.

    >>> reliability(np.array([1, 0, 1, 1]), np.array([0.1, 0.3, 0.8, 0.9]), bins=2)
    {'predicted': [0.2, 0.85], 'observed': [0.5, 1.0], 'rows': [2, 2]}
    """
    counts, mean, rate = _binned(outcome, confidence, bins)
    return {"predicted": _round(mean), "observed": _round(rate), "rows": counts.tolist()}


def expected_calibration_error(outcome: np.ndarray, confidence: np.ndarray, bins: int = ECE_BINS) -> float:
    """The gap between how often ``outcome`` held and the mean ``confidence``, per equal-width
    bin of confidence, averaged with the bins' rows as weights; NaN without rows. For a binary
    output the outcome is the positive class and the confidence its probability; for a
    category output, whether the top label was right and its probability.

    Below, bin [0, 0.5) holds confidences 0.1 and 0.3 (mean 0.2, outcome rate 0.5: gap 0.3)
    and bin [0.5, 1] holds 0.8 and 0.9 (mean 0.85, rate 1.0: gap 0.15): (0.3 + 0.15) / 2.

    >>> round(expected_calibration_error(np.array([1, 0, 1, 1]), np.array([0.1, 0.3, 0.8, 0.9]), 2), 6)
    0.225
    """
    if not confidence.size:
        return float("nan")
    counts, mean, rate = _binned(outcome, confidence, bins)
    return float(np.sum(counts * np.abs(rate - mean)) / confidence.size)


def binary_log_loss(positive: np.ndarray, probability: np.ndarray) -> float:
    """The mean cross-entropy of 0/1 outcomes (any shape) and their probabilities.

    >>> round(binary_log_loss(np.array([1, 0]), np.array([0.8, 0.4])), 4)
    0.367
    """
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    return float(-np.mean(np.where(positive == 1, np.log(clipped), np.log(1 - clipped))))


def category_log_loss(truth: np.ndarray, probability: np.ndarray) -> float:
    """The mean cross-entropy of class indices and rows × classes of probabilities."""
    picked = probability[np.arange(truth.size), truth]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def sigmoid_at(probability: np.ndarray, temperature: float) -> np.ndarray:
    """Sigmoid probabilities with their logits divided by ``temperature`` (> 1 softens them).

    >>> [round(float(p), 4) for p in sigmoid_at(np.array([0.5, 0.9]), 2.0)]
    [0.5, 0.75]
    """
    clipped = np.clip(probability.astype(np.float64), EPSILON, 1 - EPSILON)
    logit = np.log(clipped) - np.log1p(-clipped)
    return 1.0 / (1.0 + np.exp(-logit / temperature))


def softmax_at(probability: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax rows with their logits divided by ``temperature``; the logits are the log
    probabilities, right up to a constant per row, which the softmax ignores.

    >>> softmax_at(np.array([[0.8, 0.2]]), 2.0).round(4).tolist()
    [[0.6667, 0.3333]]
    """
    logits = np.log(np.clip(probability.astype(np.float64), EPSILON, 1.0)) / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(loss: Callable[[float], float], steps: int = 30) -> float:
    """The temperature in ``TEMPERATURES`` at which ``loss`` is least: the best of a grid even
    in log T, then a golden-section search between its neighbours (the log loss of scaled
    logits is smooth with one minimum in T; the grid only keeps the search in bounds).

    >>> round(fit_temperature(lambda t: (np.log(t) - np.log(3.0)) ** 2), 4)
    3.0
    """
    def at(log_temperature: float) -> float:
        return loss(float(np.exp(log_temperature)))

    grid = np.linspace(np.log(TEMPERATURES[0]), np.log(TEMPERATURES[1]), 25)
    best = int(np.argmin([at(x) for x in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_loss, right_loss = at(left), at(right)
    # Each step keeps one inner point and its loss: one new evaluation per step.
    for _ in range(steps):
        if left_loss <= right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - ratio * (high - low)
            left_loss = at(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + ratio * (high - low)
            right_loss = at(right)
    return float(np.exp((low + high) / 2))


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Rows are the true class, columns the predicted class."""
    flat = np.bincount(truth * classes + predicted, minlength=classes * classes)
    return flat.reshape(classes, classes).tolist()


def category_metrics(truth: np.ndarray, probability: np.ndarray, labels: list[str] | None = None) -> dict:
    """truth: class indices; probability: rows × classes. Macro F1 averages the classes
    that occur in the truth or the predictions; weighted F1 weights them by support.

    >>> probability = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    >>> scores = category_metrics(np.array([0, 1, 2, 1]), probability, ["a", "b", "c"])
    >>> scores["accuracy"], scores["per_class"]["b"]["recall"]
    (0.75, 0.5)
    """
    classes = probability.shape[1]
    labels = labels or [str(index) for index in range(classes)]
    predicted = probability.argmax(axis=1)
    matrix = np.asarray(confusion_matrix(truth, predicted, classes))
    hits = np.diag(matrix)
    called, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, called, out=np.zeros(classes), where=called > 0)
    recall = np.divide(hits, support, out=np.zeros(classes), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(classes), where=total > 0)
    seen = (support > 0) | (called > 0)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "log_loss": category_log_loss(truth, probability),
        "ece": expected_calibration_error(predicted == truth, probability.max(axis=1)),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]),
                    "f1": float(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }


def set_metrics(truth: np.ndarray, probability: np.ndarray, thresholds: np.ndarray,
                labels: list[str]) -> dict:
    """truth: rows × labels of 0/1; probability: rows × labels; a label is called where its
    probability reaches its threshold. Micro F1 counts every (row, label) decision; macro F1
    averages the labels that occur in the truth or the predictions; Jaccard is each row's
    |called and true| / |called or true| averaged over rows (1 for a row with neither);
    Hamming loss is the share of wrong decisions; ROC-AUC is the mean over the labels that
    occur with both classes.

    >>> truth = np.array([[1, 0], [1, 1], [0, 0]])
    >>> probability = np.array([[0.9, 0.2], [0.4, 0.7], [0.1, 0.6]])
    >>> scores = set_metrics(truth, probability, np.array([0.5, 0.5]), ["a", "b"])
    >>> round(scores["micro_f1"], 4), scores["jaccard"], round(scores["hamming_loss"], 4)
    (0.6667, 0.5, 0.3333)
    >>> scores["per_label"]["a"]
    {'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'support': 2}
    """
    positive = truth == 1
    called = probability >= thresholds
    hits = np.count_nonzero(called & positive, axis=0)
    calls, support = np.count_nonzero(called, axis=0), np.count_nonzero(positive, axis=0)
    precision = hits / np.maximum(calls, 1)
    recall = hits / np.maximum(support, 1)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(labels)), where=total > 0)
    seen = (support > 0) | (calls > 0)
    micro = 2 * hits.sum() / max(calls.sum() + support.sum(), 1)
    either = np.count_nonzero(called | positive, axis=1)
    both = np.count_nonzero(called & positive, axis=1)
    jaccard = np.where(either > 0, both / np.maximum(either, 1), 1.0)
    aucs = [roc_auc(positive[:, i], probability[:, i]) for i in range(len(labels))]
    aucs = [auc for auc in aucs if np.isfinite(auc)]
    return {
        "micro_f1": float(micro),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "jaccard": float(jaccard.mean()) if jaccard.size else 0.0,
        "hamming_loss": float(np.mean(called != positive)) if positive.size else 0.0,
        "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "log_loss": binary_log_loss(positive, probability) if positive.size else float("nan"),
        "ece": float(np.mean([expected_calibration_error(positive[:, i], probability[:, i])
                              for i in range(len(labels))])) if positive.size else float("nan"),
        "per_label": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def number_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE, RMSE and R² (NaN when the truth is constant).

    >>> number_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))["mae"]
    0.3333333333333333
    """
    error = predicted - truth
    variance = np.sum((truth - truth.mean()) ** 2) if truth.size else 0.0
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(1 - np.sum(error**2) / variance) if variance > 0 else float("nan"),
    }


def residual_sample(truth: np.ndarray, predicted: np.ndarray, seed: int = 0) -> dict:
    """At most ``RESIDUAL_SAMPLE`` (truth, prediction) pairs drawn at random, for the plot."""
    rows = np.arange(truth.size)
    if truth.size > RESIDUAL_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(truth.size, RESIDUAL_SAMPLE, replace=False))
    return {"residuals": {"truth": _round(truth[rows]), "predicted": _round(predicted[rows])}}


def conformal_rank(rows: int, level: float) -> int:
    """Which of ``rows`` sorted absolute residuals is the split-conformal half-width at
    ``level``: the ceil((rows + 1) * level)-th smallest (1-based). Above ``rows`` when there
    are too few rows for the level.

    >>> conformal_rank(100, 0.9), conformal_rank(5, 0.9)
    (91, 6)
    """
    # The tolerance keeps float noise (0.9 * 10 = 9.000000000000002) from adding a rank.
    return math.ceil((rows + 1) * level - 1e-9)


def conformal_half_width(residuals: np.ndarray, level: float) -> float:
    """The half-width q for which prediction ± q holds a new row's truth with probability at
    least ``level`` (split conformal: rows exchangeable with these validation residuals).
    With too few rows for the level, the largest residual (the guarantee then does not
    hold); NaN without any.

    >>> conformal_half_width(np.arange(1.0, 11.0), 0.8)  # the 9th smallest of 10
    9.0
    >>> conformal_half_width(np.array([2.0, 1.0]), 0.9)  # 3rd of 2: too few, the largest
    2.0
    """
    if not residuals.size:
        return float("nan")
    ordered = np.sort(np.abs(residuals))
    return float(ordered[min(conformal_rank(ordered.size, level), ordered.size) - 1])


def interval_metrics(truth: np.ndarray, predicted: np.ndarray, half_width: float) -> dict:
    """``coverage``, the share of rows whose truth lies within prediction ± ``half_width``,
    and ``interval_width``, the intervals' mean width (no baseline: neither is better when
    merely larger or smaller).

    >>> interval_metrics(np.array([1.0, 2.0, 5.0, 4.0]), np.array([1.5, 2.0, 3.0, 4.0]), 1.0)
    {'coverage': 0.75, 'interval_width': 2.0}
    """
    if not truth.size or not np.isfinite(half_width):
        return {"coverage": float("nan"), "interval_width": float("nan")}
    inside = np.abs(truth - predicted) <= half_width
    return {"coverage": float(inside.mean()), "interval_width": float(2 * half_width)}


def _thin(values: np.ndarray) -> list[float]:
    """At most ``CURVE_POINTS`` + 1 evenly spaced points, the first and last kept."""
    if values.size > CURVE_POINTS + 1:
        values = values[np.unique(np.linspace(0, values.size - 1, CURVE_POINTS + 1).round().astype(int))]
    return _round(values)


def _round(values: np.ndarray) -> list[float]:
    return [round(float(value), 6) for value in values]


def ranked(result: dict) -> list[tuple[str, str, str, dict, dict]]:
    """(input, output, metric, permutation, switch_off) rows, most important inputs first: by
    their mean permutation drop relative to the largest drop for the same output, averaged
    over the outputs (so outputs scored on different scales count alike)."""
    inputs, outputs = list(result["inputs"]), list(result["metrics"])
    drops = np.array([[result["inputs"][name][out]["permutation"]["mean"] for out in outputs]
                      for name in inputs], np.float64)
    drops = np.nan_to_num(drops)
    largest = np.maximum(drops.max(axis=0), 1e-12)
    strength = (drops / largest).mean(axis=1)
    order = [inputs[i] for i in np.argsort(-strength, kind="stable")]
    return [(name, out, result["metrics"][out], cell["permutation"], cell["switch_off"])
            for name in order for out, cell in result["inputs"][name].items()]
