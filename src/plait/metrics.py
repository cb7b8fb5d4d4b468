"""Metrics computed in numpy on decoded predictions, in the target's own units."""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7


def binary_metrics(truth: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """truth in {0, 1}; probability of class 1."""
    predicted = probability >= threshold
    positive = truth == 1
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
        "log_loss": float(log_loss),
        "threshold": float(threshold),
    }


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula, ties given their average rank."""
    n_positive = np.count_nonzero(positive)
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size)
    sorted_scores = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], score.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def category_metrics(truth: np.ndarray, probability: np.ndarray) -> dict:
    """truth: class indices; probability: rows × classes."""
    predicted = probability.argmax(axis=1)
    classes = probability.shape[1]
    f1_scores, supports = [], []
    for label in range(classes):
        true_positive = np.count_nonzero((predicted == label) & (truth == label))
        precision = true_positive / max(np.count_nonzero(predicted == label), 1)
        recall = true_positive / max(np.count_nonzero(truth == label), 1)
        f1_scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        supports.append(np.count_nonzero(truth == label))
    present = np.asarray(supports) > 0
    picked = np.clip(probability[np.arange(truth.size), truth], EPSILON, 1.0)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(np.mean(np.asarray(f1_scores)[present])) if present.any() else 0.0,
        "weighted_f1": float(np.average(f1_scores, weights=supports)) if sum(supports) else 0.0,
        "log_loss": float(-np.mean(np.log(picked))),
    }


def number_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    error = predicted - truth
    variance = np.sum((truth - truth.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": float(1 - np.sum(error**2) / variance) if variance > 0 else float("nan"),
    }
