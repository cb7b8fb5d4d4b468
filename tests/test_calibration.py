"""Calibrated probabilities: ``calibrate: temperature`` on binary, category and set outputs,
and the expected calibration error every probabilistic output reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import plait
from conftest import fit, serving, train_block
from plait.errors import ConfigError
from plait.metrics import (
    LOWER_IS_BETTER,
    category_metrics,
    choose_threshold,
    set_metrics,
    sigmoid_at,
    softmax_at,
)
from plait.targets.base import Target
from plait.targets.binary import BinaryOutput, BinaryOutputState
from plait.targets.category import CategoryOutput, CategoryOutputState
from plait.targets.set import SetOutput, SetOutputState

OUTPUTS = ("flag", "kind", "tags")
FEATURES = 8


def noisy(rows: int, seed: int) -> pd.DataFrame:
    """Rows whose labels are drawn at random from probabilities well inside (0, 1): a wide
    network trained long and fast on few of them memorises the noise and is over-confident."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(FEATURES)})
    chance = 1 / (1 + np.exp(-(1.2 * x[:, 0] - 0.8 * x[:, 1])))
    frame["flag"] = np.where(rng.random(rows) < chance, "yes", "no")
    logits = np.stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]], axis=1)
    cumulative = np.cumsum(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), axis=1)
    frame["kind"] = np.asarray(["a", "b", "c"])[(rng.random((rows, 1)) > cumulative).sum(axis=1)]
    frame["red"] = (rng.random(rows) < 1 / (1 + np.exp(-x[:, 2]))).astype(int)
    frame["blue"] = (rng.random(rows) < 1 / (1 + np.exp(x[:, 0] - x[:, 3]))).astype(int)
    return frame


def spec(calibrate: str) -> dict:
    return {"inputs": [{"name": f"x{i}", "type": "number"} for i in range(FEATURES)],
            "head": {"layers": [64, 64]},
            "outputs": [{"name": "flag", "type": "binary", "calibrate": calibrate},
                        {"name": "kind", "type": "category", "calibrate": calibrate},
                        {"name": "tags", "type": "set", "columns": ["red", "blue"], "calibrate": calibrate}],
            "train": train_block(epochs=200, learning_rate=0.01, validation_split=0.3)}


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return noisy(1000, 1)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    """The same over-confident network (same data, same seed) without and with calibration."""
    train = noisy(800, 0)
    return {calibrate: fit(spec(calibrate), train) for calibrate in ("none", "temperature")}


@pytest.fixture(scope="module")
def scores(models: dict[str, Any], held_out: pd.DataFrame) -> dict[str, dict]:
    return {calibrate: model.evaluate(held_out) for calibrate, model in models.items()}


# -- the metric and the helpers ------------------------------------------------------------------


def test_top_label_ece_by_hand() -> None:
    # Top labels 0.95 (right), 0.65 (wrong), 0.75 (right), 0.85 (wrong), each alone in one of
    # the 15 bins: the mean of |outcome - confidence| = (0.05 + 0.65 + 0.25 + 0.85) / 4.
    probability = np.array([[0.95, 0.05], [0.35, 0.65], [0.25, 0.75], [0.85, 0.15]])
    assert category_metrics(np.array([0, 0, 1, 1]), probability)["ece"] == pytest.approx(0.45)


def test_set_ece_is_the_mean_over_labels() -> None:
    truth = np.array([[1, 0], [0, 0]])
    probability = np.array([[0.9, 0.1], [0.3, 0.2]])
    # label a: bins hold 0.9 (gap 0.1) and 0.3 (gap 0.3); label b: 0.1 and 0.2 (gaps 0.1, 0.2)
    expected = ((0.1 + 0.3) / 2 + (0.1 + 0.2) / 2) / 2
    assert set_metrics(truth, probability, np.array([0.5, 0.5]), ["a", "b"])["ece"] == pytest.approx(expected)


def test_ece_is_lower_is_better_and_a_tunable_metric() -> None:
    assert "ece" in LOWER_IS_BETTER
    for kind in (BinaryOutput, CategoryOutput, SetOutput):
        assert "ece" in kind.metric_names


def test_threshold_is_chosen_on_the_calibrated_probabilities() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random(400) < 0.5).astype(np.float32)
    sure = np.clip(np.where(truth == 1, 0.7, 0.3) + rng.normal(0, 0.3, 400), 0, 1)
    raw = sigmoid_at(sure, 0.1).reshape(-1, 1)  # logits ten times too large: over-confident
    out = BinaryOutput(name="y", calibrate="temperature")
    state = out.choose(Target(truth.reshape(-1, 1), np.ones(400, bool)), raw, out.placeholder_state())
    assert state.temperature > 5
    assert state.threshold == choose_threshold(truth, sigmoid_at(raw.ravel(), state.temperature))
    assert state.threshold_by == "f1"


def test_states_of_older_bundles_load_with_temperature_one() -> None:
    binary = BinaryOutputState.model_validate({"labels": ["no", "yes"], "kind": "string",
                                               "positive_rate": 0.4, "threshold": 0.5, "threshold_by": "f1"})
    category = CategoryOutputState.model_validate({"labels": ["a", "b"], "kind": "string",
                                                   "frequency": [0.5, 0.5]})
    tags = SetOutputState.model_validate({"labels": ["a", "b"], "rates": [0.5, 0.5], "thresholds": [0.5, 0.5],
                                          "threshold_by": "f1"})
    assert binary.temperature == category.temperature == tags.temperature == 1.0
    with pytest.raises(ValueError, match="temperature"):
        CategoryOutputState.model_validate({"labels": ["a", "b"], "kind": "string", "frequency": [0.5, 0.5],
                                            "temperature": 0.0})


def test_temperature_needs_validation_rows() -> None:
    config = spec("temperature")
    config["train"]["validation_split"] = 0.0
    with pytest.raises(ConfigError, match="calibrate: temperature is fitted on the validation rows"):
        fit(config, noisy(50, 0))


# -- a real over-confident model -------------------------------------------------------------------


def test_temperature_above_one_for_an_over_confident_model(models: dict[str, Any]) -> None:
    for name in OUTPUTS:
        assert models["none"].states_[name].temperature == 1.0
        assert models["temperature"].states_[name].temperature > 1.5, name


def test_calibration_lowers_held_out_ece_and_log_loss(scores: dict[str, dict]) -> None:
    for name in OUTPUTS:
        before, after = scores["none"][name], scores["temperature"][name]
        assert after["ece"] < before["ece"] / 2, name
        assert after["log_loss"] < before["log_loss"], name
        assert before["ece"] > 0.1, name  # the model really is over-confident


def test_ece_is_reported_with_a_baseline_without_calibration(scores: dict[str, dict]) -> None:
    for name in OUTPUTS:
        uncalibrated = scores["none"][name]
        assert 0.0 <= uncalibrated["ece"] <= 1.0
        assert isinstance(uncalibrated["baseline"]["ece"], float)
        lift = uncalibrated["baseline"]["ece"] - uncalibrated["ece"]
        assert uncalibrated["lift"]["ece"] == pytest.approx(lift)
        assert "temperature" not in uncalibrated


def test_category_labels_and_accuracy_do_not_change(models: dict[str, Any], scores: dict[str, dict],
                                                    held_out: pd.DataFrame) -> None:
    assert scores["temperature"]["kind"]["accuracy"] == scores["none"]["kind"]["accuracy"]
    plain, calibrated = models["none"].predict(held_out), models["temperature"].predict(held_out)
    assert (plain["kind"] == calibrated["kind"]).all()


def test_predictions_carry_the_calibrated_probabilities(models: dict[str, Any],
                                                        held_out: pd.DataFrame) -> None:
    model = models["temperature"]
    predicted = model.predict(held_out)
    raw, _ = model.predict_arrays(held_out)
    states = model.states_
    flag = sigmoid_at(raw["flag"].ravel(), states["flag"].temperature)
    np.testing.assert_allclose(predicted["flag_proba"], flag)
    kind = softmax_at(raw["kind"], states["kind"].temperature)
    np.testing.assert_allclose(predicted[[f"kind_proba_{label}" for label in "abc"]], kind)
    tags = sigmoid_at(raw["tags"], states["tags"].temperature)
    np.testing.assert_allclose(predicted[["tags_proba_red", "tags_proba_blue"]], tags)
    calls = np.where(predicted["flag_proba"] >= states["flag"].threshold, "yes", "no")
    assert (predicted["flag"] == calls).all()


def test_a_loaded_bundle_and_the_server_predict_the_same(models: dict[str, Any], held_out: pd.DataFrame,
                                                         tmp_path: Path) -> None:
    model = models["temperature"]
    bundle = model.save(tmp_path / "calibrated")
    expected = model.predict(held_out)
    loaded = plait.load(bundle)
    assert {name: loaded.states_[name].temperature for name in OUTPUTS} == {
        name: model.states_[name].temperature for name in OUTPUTS}
    pd.testing.assert_frame_equal(loaded.predict(held_out), expected, rtol=1e-6)
    rows = held_out.head(40)
    with serving(bundle) as url:
        records = rows[[f"x{i}" for i in range(FEATURES)]].to_dict("records")
        response = httpx.post(f"{url}/v1/predict", json=records, timeout=30)
    assert response.status_code == 200, response.text
    answer = pd.DataFrame(response.json()["predictions"])[list(expected.columns)]
    pd.testing.assert_frame_equal(answer, expected.head(40), check_dtype=False, rtol=1e-5, atol=1e-6)


def test_report_draws_the_reliability_before_and_after(models: dict[str, Any]) -> None:
    calibrated, plain = models["temperature"], models["none"]
    for name in OUTPUTS:
        assert "calibration_before" in calibrated.metrics_["validation"][name]["curves"]
        assert "calibration_before" not in plain.metrics_["validation"][name]["curves"]
    files = calibrated.report_files()
    for name in OUTPUTS:
        assert files[f"plots/{name}_calibration.png"].startswith(b"\x89PNG")
    page = files["report.html"].decode("utf-8")
    assert "ECE" in page and page.count("logits divided by the temperature") == 3
