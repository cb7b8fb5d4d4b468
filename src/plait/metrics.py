"""Metrics computed in numpy on decoded predictions, in the target's own units.

Each output's scores come beside those of a trivial baseline (majority class or training
mean) and the ``lift``: how much better the model is, positive when it is better, for every
metric (for errors and log loss that is baseline minus model). ``curves`` holds what the
plots are drawn from (ROC and precision-recall points, calibration bins, a sample of
residuals), small enough to keep in ``metrics.json``.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse", "hamming_loss"})
THRESHOLD_METRICS = ("f1", "accuracy", "precision", "recall")
CURVE_POINTS = 200
RESIDUAL_SAMPLE = 500
CALIBRATION_BINS = 10


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
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    log_loss = -np.mean(np.where(positive, np.log(clipped), np.log(1 - clipped)))
    return {
        "accuracy": float(np.mean(predicted == positive)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc(positive, probability),
        "pr_auc": average_precision(positive, probability),
        "log_loss": float(log_loss),
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
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(probability, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    counts = np.bincount(bins, minlength=CALIBRATION_BINS)
    filled = counts > 0
    predicted_mean = np.bincount(bins, probability, CALIBRATION_BINS)[filled] / counts[filled]
    observed = np.bincount(bins, positive.astype(float), CALIBRATION_BINS)[filled] / counts[filled]
    return {
        "roc": {"fpr": _thin(false_rate), "tpr": _thin(true_rate)},
        "pr": {"recall": _thin(recall), "precision": _thin(precision),
               "positive_rate": float(positive.mean()) if positive.size else 0.0},
        "calibration": {"predicted": _round(predicted_mean), "observed": _round(observed),
                        "rows": counts[filled].tolist()},
    }


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
    picked = np.clip(probability[np.arange(truth.size), truth], EPSILON, 1.0)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "log_loss": float(-np.mean(np.log(picked))),
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
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    aucs = [roc_auc(positive[:, i], probability[:, i]) for i in range(len(labels))]
    aucs = [auc for auc in aucs if np.isfinite(auc)]
    return {
        "micro_f1": float(micro),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "jaccard": float(jaccard.mean()) if jaccard.size else 0.0,
        "hamming_loss": float(np.mean(called != positive)) if positive.size else 0.0,
        "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "log_loss": float(-np.mean(np.where(positive, np.log(clipped), np.log(1 - clipped))))
        if positive.size else float("nan"),
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


def _thin(values: np.ndarray) -> list[float]:
    """At most ``CURVE_POINTS`` + 1 evenly spaced points, the first and last kept."""
    if values.size > CURVE_POINTS + 1:
        values = values[np.unique(np.linspace(0, values.size - 1, CURVE_POINTS + 1).round().astype(int))]
    return _round(values)


def _round(values: np.ndarray) -> list[float]:
    return [round(float(value), 6) for value in values]
