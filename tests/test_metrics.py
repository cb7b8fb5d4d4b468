"""plait's numpy metrics against scikit-learn's, the decision threshold chosen on the validation
split, and evaluation beside the baselines on a real trained model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

import plait
from conftest import fit, train_block
from plait.errors import ConfigError
from plait.metrics import (
    average_precision,
    binary_metrics,
    category_metrics,
    choose_threshold,
    number_metrics,
    roc_auc,
    with_baseline,
)
from plait.targets.base import Target
from plait.targets.binary import BinaryOutput


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that carry some signal, rounded so that scores tie."""
    rng = np.random.default_rng(11)
    truth = rng.integers(0, 2, 400)
    probability = np.clip(0.35 * truth + rng.uniform(0, 0.65, 400), 0.01, 0.99).round(2)
    return truth, probability


def test_binary_metrics_match_scikit_learn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    truth, probability = scored
    ours = binary_metrics(truth, probability, 0.45)
    called = (probability >= 0.45).astype(int)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(truth, called))
    assert ours["precision"] == pytest.approx(sk.precision_score(truth, called))
    assert ours["recall"] == pytest.approx(sk.recall_score(truth, called))
    assert ours["f1"] == pytest.approx(sk.f1_score(truth, called))
    assert ours["roc_auc"] == pytest.approx(sk.roc_auc_score(truth, probability))
    assert ours["pr_auc"] == pytest.approx(sk.average_precision_score(truth, probability))
    assert ours["log_loss"] == pytest.approx(sk.log_loss(truth, probability))
    assert ours["confusion_matrix"] == sk.confusion_matrix(truth, called).tolist()
    assert ours["threshold"] == 0.45
    assert 0.7 < ours["roc_auc"] < 0.99


def test_ranking_metrics_on_edge_cases() -> None:
    assert roc_auc(np.array([1, 1, 0]), np.array([0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.9])))
    perfect = np.array([0.1, 0.2, 0.8, 0.9])
    assert average_precision(np.array([0, 0, 1, 1]), perfect) == 1.0
    assert roc_auc(np.array([0, 0, 1, 1]), perfect) == 1.0


def test_category_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[truth]
    logits[:, 3] -= 3.0  # class 3 is hardly ever predicted: zero-division paths
    probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ours = category_metrics(truth, probability, ["a", "b", "c", "d"])
    called = probability.argmax(axis=1)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(truth, called))
    assert ours["macro_f1"] == pytest.approx(sk.f1_score(truth, called, average="macro"))
    assert ours["weighted_f1"] == pytest.approx(sk.f1_score(truth, called, average="weighted"))
    assert ours["log_loss"] == pytest.approx(sk.log_loss(truth, probability))
    assert ours["confusion_matrix"] == sk.confusion_matrix(truth, called).tolist()
    precision = sk.precision_score(truth, called, average=None, zero_division=0)
    recall = sk.recall_score(truth, called, average=None, zero_division=0)
    for index, label in enumerate("abcd"):
        assert ours["per_class"][label]["precision"] == pytest.approx(precision[index])
        assert ours["per_class"][label]["recall"] == pytest.approx(recall[index])
    assert ours["labels"] == ["a", "b", "c", "d"]


def test_number_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    truth = rng.normal(50, 10, 200)
    predicted = truth + rng.normal(0, 4, 200)
    ours = number_metrics(truth, predicted)
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(truth, predicted))
    assert ours["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, predicted)))
    assert ours["r2"] == pytest.approx(sk.r2_score(truth, predicted))


def test_lift_is_positive_when_the_model_is_better() -> None:
    scored = with_baseline({"mae": 2.0, "r2": 0.6}, {"mae": 5.0, "r2": 0.0}, "training mean")
    assert scored["lift"] == {"mae": 3.0, "r2": 0.6}
    assert scored["baseline"]["kind"] == "training mean"


@pytest.mark.parametrize("by", ["f1", "accuracy", "precision", "recall"])
def test_chosen_threshold_is_the_best_cut(scored: tuple[np.ndarray, np.ndarray], by: str) -> None:
    truth, probability = scored
    score = {"f1": sk.f1_score, "accuracy": sk.accuracy_score,
             "precision": lambda t, p: sk.precision_score(t, p, zero_division=0),
             "recall": sk.recall_score}[by]
    chosen = choose_threshold(truth, probability, by)
    assert 0 < chosen < 1 and chosen not in set(probability)
    best = max(score(truth, (probability >= cut).astype(int)) for cut in np.unique(probability))
    assert score(truth, (probability >= chosen).astype(int)) == pytest.approx(best)
    if by == "recall":  # every cut reaching recall 1 ties; the highest F1 among them wins
        assert chosen >= probability[truth == 1].min() - 0.01


def test_a_fixed_threshold_is_kept_and_a_chosen_one_is_a_new_state() -> None:
    fixed = BinaryOutput(name="y", threshold=0.3)
    state = fixed.placeholder_state()
    target, predicted = Target(np.array([0.0, 1.0, 1.0]), np.ones(3, bool)), np.array([0.1, 0.6, 0.9])
    assert fixed.choose(target, predicted, state) is state and state.threshold == 0.3
    chosen = BinaryOutput(name="y")
    before = chosen.placeholder_state()
    after = chosen.choose(target, predicted, before)
    assert (before.threshold, before.threshold_by) == (0.5, "default")
    assert after.threshold_by == "f1" and 0.1 < after.threshold <= 0.6


def test_threshold_and_threshold_by_together_are_refused() -> None:
    spec = {"inputs": [{"name": "x", "type": "number"}],
            "outputs": [{"name": "y", "type": "binary", "threshold": 0.3, "threshold_by": "recall"}]}
    with pytest.raises(ConfigError) as error:
        plait.load_spec(spec)
    assert "outputs[0]" in str(error.value) and "give one of them" in str(error.value)
    spec["outputs"][0] = {"name": "y", "type": "binary", "threshold_by": "auc"}
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.threshold_by: found 'auc'; expected one of"):
        plait.load_spec(spec)


def signal_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    return pd.DataFrame({"signal": signal, "noise": rng.normal(size=rows),
                         "y": np.where(signal + 0.6 * rng.normal(size=rows) > 0.5, "yes", "no")})


@pytest.fixture(scope="module")
def thresholded() -> plait.Model:
    spec = {"inputs": [{"name": "signal", "type": "number"}, {"name": "noise", "type": "number"}],
            "outputs": [{"name": "y", "type": "binary"}],
            "train": train_block(epochs=30, learning_rate=0.05, validation_split=0.3)}
    return fit(spec, signal_frame())


def test_threshold_is_chosen_on_validation_and_used(thresholded: plait.Model, tmp_path) -> None:
    state = thresholded.states_["y"]
    assert state.threshold_by == "f1" and state.threshold != 0.5
    validation = thresholded.metrics_["validation"]["y"]
    assert validation["threshold"] == state.threshold and validation["rows"] == 90
    assert validation["f1"] > validation["baseline"]["f1"] and validation["lift"]["roc_auc"] > 0.3
    bundle = thresholded.save(tmp_path / "bundle")
    stored = json.loads((bundle / "state.json").read_text())["states"]["y"]
    assert stored["threshold"] == state.threshold
    test = signal_frame(200, seed=1)
    loaded = plait.load(bundle)
    predicted = loaded.predict(test)
    expected = np.where(predicted["y_proba"] >= state.threshold, "yes", "no")
    assert predicted["y"].tolist() == expected.tolist()
    assert ((predicted["y_proba"] >= 0.5) != (predicted["y_proba"] >= state.threshold)).any()
    scores = loaded.evaluate(test)["y"]
    called = (predicted["y_proba"] >= state.threshold).astype(int)
    assert scores["threshold"] == state.threshold
    assert scores["f1"] == pytest.approx(sk.f1_score((test["y"] == "yes").astype(int), called))
    assert scores["pr_auc"] > scores["baseline"]["pr_auc"] + 0.2
    assert scores["baseline"]["kind"] == "majority class" and scores["baseline"]["roc_auc"] == 0.5
    assert len(scores["curves"]["roc"]["fpr"]) == len(scores["curves"]["roc"]["tpr"]) > 10
