"""Split-conformal prediction intervals of ``number`` and ``vector`` outputs (``interval``).

The table is synthetic and heteroscedastic (the noise grows with ``x1``), large enough that
coverage on a thousand held-out rows sits near the configured level: a model with a
number output ``y`` (level 0.9) and a vector output ``pair`` (level 0.8), whose second
dimension is far noisier than its first, so their widths must differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import fit, serving, train_block
from plait.errors import ConfigError
from plait.spec import load_spec
from plait.targets.number import NumberOutput
from plait.targets.vector import VectorOutputState

LEVELS = {"y": 0.9, "pair": 0.8}
SPEC = {
    "inputs": [{"name": "x1", "type": "number"}, {"name": "x2", "type": "number"}],
    "head": {"layers": [16]},
    "outputs": [
        {"name": "y", "type": "number", "interval": LEVELS["y"]},
        {"name": "pair", "type": "vector", "columns": ["a", "b"], "interval": LEVELS["pair"]},
    ],
    "train": train_block(epochs=60, learning_rate=0.02, validation_split=0.25),
}


def synthetic(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    noise = rng.normal(size=(3, rows))
    return pd.DataFrame({"x1": x1, "x2": x2,
                         "y": 2 * x1 - x2 + noise[0] * (0.5 + 0.5 * np.abs(x1)),
                         "a": x1 + x2 + 0.3 * noise[1], "b": 3 * x2 + 3.0 * noise[2]})


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic(2000, 21), synthetic(1000, 12)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return fit(SPEC, split[0])


@pytest.fixture(scope="module")
def predicted(model: Any, split: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return model.predict(split[1])


@pytest.fixture(scope="module")
def scores(model: Any, split: tuple[pd.DataFrame, pd.DataFrame]) -> dict:
    return model.evaluate(split[1])


@pytest.fixture(scope="module")
def bundle(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("intervals") / "synthetic")


def covered(truth: pd.Series, low: pd.Series, high: pd.Series) -> float:
    return float(((truth >= low) & (truth <= high)).mean())


def test_held_out_coverage_is_near_the_level(predicted: pd.DataFrame, split: tuple, scores: dict) -> None:
    test = split[1]
    measured = {"y": covered(test["y"], predicted["y_low"], predicted["y_high"])}
    for dimension in ("a", "b"):
        measured[dimension] = covered(test[dimension], predicted[f"pair_{dimension}_low"],
                                      predicted[f"pair_{dimension}_high"])
    assert 0.84 <= measured["y"] <= 0.96, measured
    assert all(0.72 <= measured[d] <= 0.88 for d in ("a", "b")), measured
    # evaluate measures the same thing on the same rows.
    assert scores["y"]["coverage"] == pytest.approx(measured["y"])
    per_dimension = scores["pair"]["per_dimension"]
    assert [per_dimension[d]["coverage"] for d in ("a", "b")] == pytest.approx([measured["a"], measured["b"]])
    assert scores["pair"]["coverage"] == pytest.approx((measured["a"] + measured["b"]) / 2)


def test_intervals_hold_the_prediction_with_one_width_each(predicted: pd.DataFrame, model: Any,
                                                          scores: dict) -> None:
    assert list(predicted.columns) == ["y", "y_low", "y_high", "pair_a", "pair_b", "pair_a_low",
                                       "pair_a_high", "pair_b_low", "pair_b_high"]
    widths = {}
    for column in ("y", "pair_a", "pair_b"):
        low, middle, high = (predicted[f"{column}{end}"] for end in ("_low", "", "_high"))
        assert (low <= middle).all() and (middle <= high).all()
        width = high - low
        assert width.min() > 0 and np.allclose(width, width.iloc[0])  # split conformal: one width
        widths[column] = float(width.iloc[0])
    states = model.states_
    assert widths["y"] == pytest.approx(2 * states["y"].interval_half_width)
    halves = states["pair"].interval_half_width
    assert [widths["pair_a"], widths["pair_b"]] == pytest.approx([2 * q for q in halves])
    assert widths["pair_b"] > 3 * widths["pair_a"]  # the noisier dimension gets the wider interval
    assert scores["y"]["interval_width"] == pytest.approx(widths["y"])
    assert scores["pair"]["interval_width"] == pytest.approx((widths["pair_a"] + widths["pair_b"]) / 2)


def test_coverage_and_width_have_no_baseline_or_lift(scores: dict, model: Any) -> None:
    for name in ("y", "pair"):
        assert "mae" in scores[name]["lift"]
        compared = set(scores[name]["lift"]) | set(scores[name]["baseline"])
        assert not {"coverage", "interval_width"} & compared
    assert scores["y"]["interval"]["level"] == LEVELS["y"]
    assert scores["y"]["interval"]["rows"] == model.states_["y"].interval_rows == 500
    # On the validation split the width was set on, coverage reaches the level by construction.
    assert model.metrics_["validation"]["y"]["coverage"] >= LEVELS["y"]
    notes = model.spec.outputs[0].notes(scores["y"])
    assert len(notes) == 1 and "level 0.9" in notes[0] and "500 validation rows" in notes[0]


def test_the_bundle_reloads_with_equal_intervals(model: Any, bundle: Path, split: tuple,
                                                 predicted: pd.DataFrame, scores: dict) -> None:
    import plait

    loaded = plait.load(bundle)
    assert loaded.states_ == model.states_
    pd.testing.assert_frame_equal(loaded.predict(split[1]), predicted)
    page = loaded.report_files(scores, "held-out rows")["report.html"].decode()
    assert "interval coverage" in page and "Intervals at level 0.8" in page and "half-width" in page


def test_the_server_answers_the_bounds(bundle: Path, split: tuple, predicted: pd.DataFrame) -> None:
    rows = split[1].head(6)
    records = json.loads(rows[["x1", "x2"]].to_json(orient="records"))
    with serving(bundle) as url:
        answer = httpx.post(f"{url}/v1/predict", json=records, timeout=60)
        schema = httpx.get(f"{url}/v1/schema", timeout=30).json()
    assert answer.status_code == 200, answer.text
    got = pd.DataFrame(answer.json()["predictions"])
    assert list(got.columns) == list(predicted.columns)
    pd.testing.assert_frame_equal(got, predicted.head(6), check_dtype=False, rtol=1e-5, atol=1e-6)
    columns = {out["name"]: out["columns"] for out in schema["outputs"]}
    assert columns["y"] == ["y", "y_low", "y_high"]
    assert columns["pair"][2:] == ["pair_a_low", "pair_a_high", "pair_b_low", "pair_b_high"]


def test_without_validation_rows_an_interval_is_a_config_error(split: tuple) -> None:
    spec = {**SPEC, "train": train_block(epochs=1, validation_split=0.0)}
    with pytest.raises(ConfigError) as raised:
        fit(spec, split[0].head(200))
    message = str(raised.value)
    assert "no validation rows" in message
    assert "outputs[0] 'y': interval 0.9" in message and "outputs[1] 'pair': interval 0.8" in message
    assert "train.validation_split" in message and "--valid" in message


def test_the_level_is_checked_and_older_states_load() -> None:
    for level in (0.0, 1.0, 1.5):
        outputs = [{"name": "y", "type": "number", "interval": level}]
        with pytest.raises(ConfigError, match="interval"):
            load_spec({"inputs": [{"name": "x1", "type": "number"}], "outputs": outputs})
    # A bundle written before intervals has no half-width: no interval columns, no coverage.
    older = NumberOutput(name="y").load_state({"shift": 0.0, "divide": 1.0, "mean": 0.0})
    assert older.interval_half_width is None
    assert NumberOutput(name="y").prediction_columns(older) == ["y"]
    with pytest.raises(ValueError, match="interval_half_width"):
        VectorOutputState(names=["a", "b"], shift=[0.0] * 2, divide=[1.0] * 2, mean=[0.0] * 2,
                          interval_half_width=[1.0])


def test_too_few_validation_rows_use_the_largest_residual_and_say_so() -> None:
    from plait.metrics import conformal_half_width
    from plait.targets.number import interval_note

    assert conformal_half_width(np.array([-3.0, 1.0, 2.0]), 0.9) == 3.0
    assert "Too few rows" in interval_note(0.9, "prediction ± 3", 3)
    assert "Too few rows" not in interval_note(0.9, "prediction ± 3", 9)
