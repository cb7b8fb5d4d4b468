"""The ``vector`` output: several numbers per row (multi-target regression).

The real table is the penguins: body mass and flipper length are predicted together from
species, island, sex and the bill's measures. A quarter of the target cells of the
training rows are blanked, each dimension on its own, so many rows have one target and
not the other; the held-out rows have blanks too, so each dimension is scored on its own
rows. The model is compared with a ridge regression per dimension on the same split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import fit, serving, train_block
from plait.errors import DataError, PlaitError
from plait.spec import load_spec

TARGETS = ["body_mass_g", "flipper_length_mm"]
INPUTS = [
    {"name": "species", "type": "category", "embedding_dim": 2},
    {"name": "island", "type": "category", "embedding_dim": 2},
    {"name": "sex", "type": "category", "encoding": "onehot"},
    {"name": "bill_length_mm", "type": "number"},
    {"name": "bill_depth_mm", "type": "number"},
]
SPEC = {
    "inputs": INPUTS,
    "head": {"layers": [16]},
    "outputs": [{"name": "size", "type": "vector", "columns": TARGETS}],
    "train": train_block(epochs=150, learning_rate=0.03),
}


def blanked(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """The frame with about ``share`` of each target column's cells set missing."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    for column in TARGETS:
        frame.loc[rng.random(len(frame)) < share, column] = np.nan
    return frame


@pytest.fixture(scope="module")
def split(penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = penguin_split
    return blanked(train, 0.25, 3), blanked(test, 0.1, 4)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return fit(SPEC, split[0])


@pytest.fixture(scope="module")
def scores(model: Any, split: tuple[pd.DataFrame, pd.DataFrame]) -> dict:
    return model.evaluate(split[1])["size"]


@pytest.fixture(scope="module")
def bundle(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("vector") / "penguins")


def ridge_r2(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """R² on the held-out rows of a ridge regression per dimension, each fitted on the rows
    where its target is present, from the same inputs (categories one-hot, numbers
    standardised, gaps filled with the training mean)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    categories = ["species", "island", "sex"]
    columns = pd.get_dummies(train[categories].fillna("missing"), dtype=float).columns

    def features(frame: pd.DataFrame) -> np.ndarray:
        encoded = pd.get_dummies(frame[categories].fillna("missing"), dtype=float)
        encoded = encoded.reindex(columns=columns, fill_value=0.0)
        for number in ("bill_length_mm", "bill_depth_mm"):
            mean, std = train[number].mean(), train[number].std()
            encoded[number] = (frame[number].fillna(mean) - mean) / std
        return encoded.to_numpy()

    results = {}
    for target in TARGETS:
        known, held = train[target].notna(), test[target].notna()
        ridge = Ridge(alpha=1.0).fit(features(train)[known], train[target][known])
        results[target] = float(r2_score(test[target][held], ridge.predict(features(test)[held])))
    return results


def test_the_model_learns_every_dimension(scores: dict, split: tuple) -> None:
    assert scores["r2"] > 0.7
    assert scores["baseline"]["kind"] == "training means"
    assert scores["lift"]["r2"] > 0.6 and scores["lift"]["mae"] > 0
    for target in TARGETS:
        dimension = scores["per_dimension"][target]
        assert dimension["r2"] > 0.65, target
        assert dimension["mae"] < 0.6 * dimension["baseline"]["mae"], target
        assert dimension["r2"] > dimension["baseline"]["r2"] + 0.6, target
    # the headline is the mean over the dimensions
    means = {name: np.mean([scores["per_dimension"][t][name] for t in TARGETS]) for name in ("mae", "r2")}
    assert scores["mae"] == pytest.approx(means["mae"]) and scores["r2"] == pytest.approx(means["r2"])
    # as good as a ridge regression per dimension on the same split, give or take
    ridge = ridge_r2(*split)
    print({target: (round(scores["per_dimension"][target]["r2"], 4), round(ridge[target], 4))
           for target in TARGETS})
    assert scores["r2"] > np.mean(list(ridge.values())) - 0.05


def test_each_dimension_counts_its_present_rows(scores: dict, split: tuple, model: Any) -> None:
    train, test = split
    partial = train[TARGETS].isna().any(axis=1) & train[TARGETS].notna().any(axis=1)
    assert partial.sum() > 50  # many training rows have one target and not the other
    for target in TARGETS:
        assert scores["per_dimension"][target]["rows"] == int(test[target].notna().sum())
    assert scores["rows"] == int(test[TARGETS].notna().any(axis=1).sum())
    assert scores["rows"] > max(scores["per_dimension"][t]["rows"] for t in TARGETS)
    # the targets' own counts: a row with no target at all is the only one left out
    left_out = int(train[TARGETS].isna().all(axis=1).sum())
    assert model.data_report_["inputs"]["targets"]["size"]["missing"] == left_out
    headings, rows = model.spec.outputs[0].tables(scores)[0]
    assert headings == ["dimension", "MAE", "RMSE", "R²", "baseline MAE", "rows"]
    assert [row[0] for row in rows] == TARGETS and [row[-1] for row in rows] == [
        scores["per_dimension"][t]["rows"] for t in TARGETS]


def test_predictions_come_back_in_the_targets_units(model: Any, split: tuple) -> None:
    test = split[1]
    predicted = model.predict(test)
    assert list(predicted.columns) == ["size_body_mass_g", "size_flipper_length_mm"]
    assert predicted.notna().all().all()
    for target in TARGETS:
        truth = test[target].dropna()
        assert abs(predicted[f"size_{target}"].mean() - truth.mean()) < 0.15 * truth.std(), target
        assert predicted[f"size_{target}"].std() > 0.5 * truth.std(), target


def test_the_bundle_reloads_with_equal_predictions(model: Any, bundle: Path, split: tuple) -> None:
    import plait

    loaded = plait.load(bundle)
    pd.testing.assert_frame_equal(loaded.predict(split[1]), model.predict(split[1]))
    assert loaded.states_["size"] == model.states_["size"]
    files = loaded.report_files(loaded.evaluate(split[1]), "held-out penguins")
    page = files["report.html"].decode()
    assert "baseline MAE" in page and "flipper_length_mm" in page
    assert {f"plots/size_{target}_residuals.png" for target in TARGETS} <= set(files)


def test_each_dimension_is_explained_and_described(model: Any, split: tuple) -> None:
    from plait.export import describe_output

    found = model.attribute(split[1], rows=[0, 1])
    for row in found["rows"]:
        units = row["outputs"]["size"]
        assert [unit["unit"] for unit in units] == [f"size_{target}" for target in TARGETS]
        for unit in units:  # in grams and millimetres: the shares add up to the change, up to the gap
            shares = [entry["total"] for entry in unit["inputs"].values()]
            assert unit["value"] - unit["baseline"] - sum(shares) == pytest.approx(unit["gap"])
            assert abs(unit["gap"]) < 0.03 * sum(abs(share) for share in shares)
    state = model.states_["size"]
    described = describe_output(model.spec.outputs[0], state, np.zeros((1, 2), np.float32))
    assert described["names"] == TARGETS and described["shape"] == [None, 2]


def test_the_server_answers_each_dimension(bundle: Path, model: Any, split: tuple) -> None:
    rows = split[1].head(5)
    records = json.loads(rows[[s["name"] for s in INPUTS]].to_json(orient="records"))
    with serving(bundle) as url:
        answer = httpx.post(f"{url}/v1/predict", json=records, timeout=60)
        schema = httpx.get(f"{url}/v1/schema", timeout=30).json()
    assert answer.status_code == 200, answer.text
    got = pd.DataFrame(answer.json()["predictions"])
    assert sorted(got.columns) == ["size_body_mass_g", "size_flipper_length_mm"]
    pd.testing.assert_frame_equal(got, model.predict(rows).reset_index(drop=True)[list(got.columns)],
                                  check_dtype=False, rtol=1e-5)
    output = next(out for out in schema["outputs"] if out["name"] == "size")
    assert output["dimensions"] == TARGETS and output["bars"] == []


def test_plait_code_writes_the_masked_loss(bundle: Path, model: Any, split: tuple, tmp_path: Path) -> None:
    from plait.codegen import generate_for
    from plait.data import read_table
    from plait.preprocess import encode_inputs
    from test_codegen import run_scripts, summary

    script = generate_for(bundle)
    assert "class MaskedLoss(keras.losses.Loss):" in script
    assert 'MaskedLoss(name="masked_mse", reduction="sum_over_batch_size", kind="mse")' in script
    (tmp_path / "vector_model.py").write_text(script, encoding="utf-8")
    np.savez(tmp_path / "inputs.npz", **encode_inputs(model.spec, model.states_, read_table(split[1])).inputs)
    built = run_scripts([{"script": "vector_model.py", "inputs": "inputs.npz",
                          "predictions": "predictions.npz"}], tmp_path)["vector_model.py"]
    expected = summary(model.keras_model)
    assert built["trainable"] == expected["trainable"] == model.keras_model.count_params()
    # the same loss, but the script's own class rather than plait's
    assert built.pop("loss")["size"]["module"] == "generated_script"
    assert expected.pop("loss")["size"]["module"] == "plait.layers.masked"
    assert built == expected
    assert built["outputs"] == {"size": [None, 2]}
    with np.load(tmp_path / "predictions.npz") as predicted:
        np.testing.assert_allclose(predicted["size"], model.raw_outputs(
            encode_inputs(model.spec, model.states_, read_table(split[1])).inputs)["size"], rtol=1e-5,
            atol=1e-6)


# -- one list column ----------------------------------------------------------------------


def listed(frame: pd.DataFrame) -> pa.Table:
    """The inputs, and the two targets as one list column ``measures`` (a missing cell is a
    null element; a row missing both is a null list)."""
    lists = [None if np.isnan(row).all() else [None if np.isnan(v) else float(v) for v in row]
             for row in frame[TARGETS].to_numpy()]
    table = pa.Table.from_pandas(frame[[s["name"] for s in INPUTS]], preserve_index=False)
    return table.append_column("measures", pa.array(lists, pa.list_(pa.float64())))


def test_a_list_column_names_its_elements(split: tuple, tmp_path: Path) -> None:
    train, test = split
    pq.write_table(listed(train), tmp_path / "train.parquet")
    pq.write_table(listed(test), tmp_path / "test.parquet")
    spec = {**SPEC, "outputs": [{"name": "size", "type": "vector", "column": "measures",
                                 "names": ["mass", "flipper"], "loss": "huber"}],
            "train": train_block(epochs=100, learning_rate=0.03)}
    model = fit(spec, tmp_path / "train.parquet")
    assert model.states_["size"].names == ["mass", "flipper"]
    scores = model.evaluate(tmp_path / "test.parquet")["size"]
    counted = {name: v["rows"] for name, v in scores["per_dimension"].items()}
    assert counted == {"mass": int(test["body_mass_g"].notna().sum()),
                       "flipper": int(test["flipper_length_mm"].notna().sum())}
    assert scores["r2"] > 0.6
    predicted = model.predict(tmp_path / "test.parquet")
    assert list(predicted.columns) == ["size_mass", "size_flipper"]
    assert abs(predicted["size_mass"].mean() - test["body_mass_g"].mean()) < 0.15 * test["body_mass_g"].std()


def test_a_list_of_another_length_is_one_clear_error(split: tuple, tmp_path: Path) -> None:
    table = listed(split[0].head(40))
    lists = table.column("measures").to_pylist()
    lists[6] = [4000.0, 190.0, 3.0]
    table = table.set_column(table.column_names.index("measures"), "measures", pa.array(lists))
    pq.write_table(table, tmp_path / "ragged.parquet")
    spec = {**SPEC, "outputs": [{"name": "size", "type": "vector", "column": "measures"}],
            "train": train_block(epochs=1)}
    with pytest.raises(DataError) as caught:
        fit(spec, tmp_path / "ragged.parquet")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'ragged.parquet'}, row 7, column 'measures': ")
    assert "found 'a list of 3 numbers'; expected 2 numbers" in message
    assert len(message.splitlines()) == 1


def test_config_mistakes_are_named() -> None:
    def spec(output: dict) -> dict:
        return {"inputs": INPUTS[:1], "outputs": [{"name": "size", "type": "vector", **output}]}

    with pytest.raises(PlaitError, match="give either 'columns'"):
        load_spec(spec({"columns": TARGETS, "column": "measures"}))
    with pytest.raises(PlaitError, match="with 'columns' each dimension is named after its column"):
        load_spec(spec({"columns": TARGETS, "size": 2}))
    with pytest.raises(PlaitError, match="found 3 names for size 2"):
        load_spec(spec({"column": "measures", "size": 2, "names": ["a", "b", "c"]}))
    with pytest.raises(PlaitError, match=r"found 'body_mass_g', which inputs\[0\] also reads"):
        load_spec({**spec({"columns": TARGETS}), "inputs": [{"name": "body_mass_g", "type": "number"}]})
