"""Training: a seed fixes the weights, the validation split is stratified or read from a file,
early stopping keeps the best epoch, class weights help the minority class, a model beats
the trivial baseline on held-out rows, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PENGUIN_SPEC, fit, train_block
from plait.data import read_table
from plait.model import Model
from plait.preprocess import held_out, stratified_split
from plait.spec import load_spec


def noisy_frame(rows: int, seed: int, positive_above: float = 0.0) -> pd.DataFrame:
    """A label that depends on a vector and a category, with noise: learnable, not exactly."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    shop = rng.choice(["a", "b", "c"], rows)
    score = x[:, 0] - 0.5 * x[:, 1] + np.where(shop == "a", 0.8, 0.0) + rng.normal(0, 0.7, rows)
    return pd.DataFrame({"x": list(x), "shop": shop, "y": (score > positive_above).astype(int)})


def spec(**train: object) -> dict:
    return {
        "inputs": [{"name": "x", "type": "vector"}, {"name": "shop", "type": "category"}],
        "head": {"layers": [16], "dropout": 0.2},  # dropout: the seed must fix its draws too
        "outputs": [{"name": "y", "type": "binary"}],
        "train": train_block(**{"epochs": 12, "learning_rate": 0.01, **train}),
    }


def weights(model: Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.keras_model.get_weights()]


def same_weights(first: Model, second: Model) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(weights(first), weights(second), strict=True))


# -- seeds, checkpoints and resuming --------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """The same config fitted several ways on the same rows."""
    folder = tmp_path_factory.mktemp("runs")
    frame = noisy_frame(200, seed=0)
    partial = fit(spec(), frame, epochs=5, checkpoint=folder / "resumed")
    return {
        "checkpointed": fit(spec(), frame, checkpoint=folder / "full"),
        "plain": fit(spec(), frame),
        "other_seed": fit(spec(seed=1), frame),
        "partial": partial,
        "resumed": fit(spec(), frame, checkpoint=folder / "resumed", resume=True),
    }


def test_the_same_seed_gives_identical_weights(runs: dict[str, Model]) -> None:
    assert same_weights(runs["checkpointed"], runs["plain"])
    assert runs["checkpointed"].history_ == runs["plain"].history_


def test_another_seed_gives_other_weights(runs: dict[str, Model]) -> None:
    assert not any(np.array_equal(a, b) for a, b in zip(weights(runs["plain"]), weights(runs["other_seed"]),
                                                         strict=True) if a.size > 1)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(runs: dict[str, Model]) -> None:
    assert len(runs["partial"].history_["loss"]) == 5
    assert not same_weights(runs["partial"], runs["checkpointed"])
    assert same_weights(runs["resumed"], runs["checkpointed"])
    # the history of the resumed run runs from the first epoch, as if never interrupted
    assert runs["resumed"].history_ == runs["checkpointed"].history_
    assert len(runs["resumed"].history_["loss"]) == 12


def test_resuming_with_another_config_is_refused(runs: dict[str, Model], tmp_path: Path) -> None:
    from plait.errors import PlaitError

    frame = noisy_frame(200, seed=0)
    fit(spec(epochs=1), frame, checkpoint=tmp_path / "run")
    with pytest.raises(PlaitError, match="this checkpoint was written for another config or other data"):
        fit(spec(epochs=1, learning_rate=0.5), frame, checkpoint=tmp_path / "run", resume=True)


# -- validation ---------------------------------------------------------------------


def test_validation_split_keeps_each_class_share() -> None:
    labels = np.array(["rare"] * 30 + ["common"] * 270)
    training, validation = stratified_split(labels, len(labels), 0.2, seed=3)
    assert np.intersect1d(training, validation).size == 0 and training.size + validation.size == 300
    assert (labels[validation] == "rare").sum() == 6 and (labels[validation] == "common").sum() == 54
    other_training, other_validation = stratified_split(labels, len(labels), 0.2, seed=4)
    assert not np.array_equal(validation, other_validation)  # the seed picks the rows


def test_the_models_split_is_stratified_on_the_first_classification_output(
        penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = penguin_split
    spec = load_spec(PENGUIN_SPEC)
    table = read_table(train)
    validation = held_out(spec, table, (0, 0), spec.train.validation_split)
    shares = train["species"].value_counts(normalize=True)
    for rows in (~validation, validation):
        species = train["species"][rows].value_counts(normalize=True)
        np.testing.assert_allclose(species[shares.index], shares, atol=0.02)
    assert validation.sum() == pytest.approx(0.2 * len(train), abs=2)


def test_penguin_model_reports_its_validation_rows(penguin_model: Model,
                                                   penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = penguin_split
    report = penguin_model.data_report_
    assert report["training_rows"] + report["validation_rows"] == len(train)
    assert penguin_model.metrics_["validation"]["rows"] == report["validation_rows"]
    assert "val_loss" in penguin_model.history_


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Path]:
    """Trained far past its best epoch on few noisy rows, with a separate validation file."""
    folder = tmp_path_factory.mktemp("stopping")
    valid = folder / "valid.jsonl"
    noisy_frame(150, seed=2).to_json(valid, orient="records", lines=True)
    config = spec(epochs=300, learning_rate=0.05, early_stopping={"patience": 4})
    config["head"] = {"layers": [64, 64]}
    return fit(config, noisy_frame(60, seed=1), validation_data=valid), valid


def test_a_validation_file_is_used_instead_of_a_split(stopped: tuple[Model, Path]) -> None:
    model, _ = stopped
    assert model.data_report_["training_rows"] == 60  # every training row trains
    assert model.data_report_["validation_rows"] == 150
    assert model.metrics_["validation"]["rows"] == 150


def test_early_stopping_stops_and_restores_the_best_epoch(stopped: tuple[Model, Path]) -> None:
    model, valid = stopped
    losses = model.history_["val_loss"]
    best = int(np.argmin(losses))
    assert len(losses) < 300 and len(losses) == best + 1 + 4  # patience 4 after the best epoch
    # the weights kept are the best epoch's: their validation loss is the lowest one seen
    assert model.evaluate(valid)["y"]["log_loss"] == pytest.approx(losses[best], rel=1e-4)
    assert losses[-1] > losses[best]


# -- class weights, and beating the baseline ------------------------------------------


@pytest.fixture(scope="module")
def imbalanced() -> tuple[dict, pd.DataFrame]:
    """About one positive in eight: an unweighted model rarely predicts the positive class."""
    frame = noisy_frame(500, seed=5, positive_above=1.8)
    train, test = frame.iloc[:350], frame.iloc[350:]
    scores = {}
    for weighting in (None, "balanced"):
        config = spec(epochs=60, learning_rate=0.03)
        config["outputs"][0]["class_weight"] = weighting
        scores[weighting] = fit(config, train).evaluate(test)["y"]
    return scores, frame


def test_balanced_class_weights_raise_the_recall_of_the_minority(imbalanced: tuple) -> None:
    scores, frame = imbalanced
    assert 0.05 < frame["y"].mean() < 0.2
    assert scores["balanced"]["recall"] >= scores[None]["recall"] + 0.25
    assert scores["balanced"]["precision"] < scores[None]["precision"]  # the price paid for it
    assert scores["balanced"]["roc_auc"] > 0.8


def test_penguin_model_beats_the_baselines_on_held_out_rows(
        penguin_model: Model, penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, test = penguin_split
    scores = penguin_model.evaluate(test)
    species, mass = scores["species"], scores["body_mass_g"]
    assert species["baseline"]["accuracy"] <= 0.5 and species["accuracy"] >= 0.9
    assert species["macro_f1"] >= species["baseline"]["macro_f1"] + 0.5
    assert mass["mae"] < 0.6 * mass["baseline"]["mae"] and mass["r2"] > 0.6
