"""``train.ensemble``: several copies of the network, each trained on its own from its own
seed, saved as one Keras model that averages their outputs.

Member k of an ensemble is shown to be exactly the network a single run with seed
``seed + k`` trains; the saved model's outputs are shown to be the members' mean, through
``predict``, a reloaded bundle, the script ``plait code`` writes and the ONNX export; an
interrupted ensemble resumes to the same weights.
"""

from __future__ import annotations

import copy
import json
import runpy
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest

import plait
from conftest import fit, train_block
from plait.codegen import generate_for
from plait.errors import ConfigError
from plait.graph import build, members
from plait.model import describe_model
from plait.spec import load_spec

SPEC = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number", "optional": True},
        {"name": "island", "type": "category", "embedding_dim": 2},
        {"name": "note", "column": "island", "type": "text", "length": 3, "embedding_dim": 4,
         "encoder": {"kind": "gru", "units": 4}},
    ],
    "head": {"layers": [8], "dropout": 0.1},
    "outputs": [
        {"name": "species", "type": "category"},
        {"name": "body_mass_g", "type": "number", "loss": "huber", "weight": 0.5},
    ],
    "train": train_block(epochs=12, learning_rate=0.03, seed=4, ensemble=3,
                         early_stopping={"monitor": "val_loss", "patience": 3}),
}


def with_train(**changes: Any) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["train"].update(changes)
    return spec


@pytest.fixture(scope="module")
def data(penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return penguin_split[0]


@pytest.fixture(scope="module")
def valid(penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return penguin_split[1]


@pytest.fixture(scope="module")
def ensemble(data: pd.DataFrame, valid: pd.DataFrame) -> Any:
    return fit(SPEC, data, validation_data=valid)


@pytest.fixture(scope="module")
def bundle(ensemble: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensemble.save(tmp_path_factory.mktemp("ensemble") / "bundle", report=True)


def raw(network: Any, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(values) for name, values in network.predict(x, verbose=0).items()}


def test_member_k_is_the_network_a_single_run_with_seed_plus_k_trains(ensemble: Any, data: pd.DataFrame,
                                                                      valid: pd.DataFrame) -> None:
    networks = members(ensemble.keras_model)
    assert [network.name for network in networks] == ["member_0", "member_1", "member_2"]
    x = ensemble.encode(data)
    for index in (0, 2):
        single = fit(with_train(ensemble=1, seed=4 + index), data, validation_data=valid)
        expected, got = raw(single.keras_model, x), raw(networks[index], x)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    first, last = raw(networks[0], x), raw(networks[2], x)
    assert np.abs(first["species"] - last["species"]).max() > 1e-3  # other seeds, other networks


def test_the_model_predicts_the_members_mean(ensemble: Any, data: pd.DataFrame) -> None:
    x = ensemble.encode(data)
    got = ensemble.raw_outputs(x)
    each = [raw(network, x) for network in members(ensemble.keras_model)]
    for name in ("species", "body_mass_g"):
        np.testing.assert_allclose(got[name], np.mean([member[name] for member in each], axis=0), atol=1e-6)
    assert np.allclose(got["species"].sum(axis=1), 1.0, atol=1e-5)  # still probabilities
    assert ensemble.metrics_["validation"]["species"]["accuracy"] > 0.9
    histories = ensemble.history_["members"]
    assert len(histories) == 3 and all(len(h["val_loss"]) >= 1 for h in histories)


def test_parameters_and_describe_count_every_member(ensemble: Any, data: pd.DataFrame) -> None:
    single_spec = load_spec(with_train(ensemble=1))
    single = describe_model(single_spec, build(single_spec, ensemble.states_))
    described = ensemble.describe()
    assert {owner: entry["params"] for owner, entry in described.items()} == {
        owner: 3 * entry["params"] for owner, entry in single.items()}
    assert sum(entry["params"] for entry in described.values()) == ensemble.keras_model.count_params()
    layers = [row["layer"] for row in described["note"]["layers"]]
    assert "member_0/note_gru" in layers and "member_2/note_gru" in layers
    assert [row["layer"] for row in described["species"]["layers"]][-1] == "species_average"


def test_the_bundle_reloads_and_its_report_draws_each_member(bundle: Path, ensemble: Any,
                                                               data: pd.DataFrame) -> None:
    loaded = plait.load(bundle)
    pd.testing.assert_frame_equal(loaded.predict(data.head(20)), ensemble.predict(data.head(20)))
    assert len(json.loads((bundle / "history.json").read_text())["members"]) == 3
    assert (bundle / "plots" / "loss.png").stat().st_size > 1000
    assert (bundle / "plots" / "species_training.png").stat().st_size > 1000


def test_plait_code_writes_a_member_function_and_the_average(bundle: Path, ensemble: Any,
                                                              data: pd.DataFrame, tmp_path: Path) -> None:
    script = tmp_path / "ensemble.py"
    script.write_text(generate_for(bundle))
    text = script.read_text()
    assert "def build_member(name: str) -> keras.Model:" in text
    assert 'members = [build_member(f"member_{index}") for index in range(3)]' in text
    assert "import plait" not in text and max(map(len, text.splitlines())) <= 99
    built = runpy.run_path(str(script))["model"]
    assert built.count_params() == ensemble.keras_model.count_params()
    x = ensemble.encode(data.head(16))
    got, expected = raw(built, x), ensemble.raw_outputs(x)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)


def test_the_onnx_export_averages_too(bundle: Path, ensemble: Any, data: pd.DataFrame,
                                      tmp_path: Path) -> None:
    import onnxruntime

    from plait.export import export

    out = tmp_path / "ensemble.onnx"
    export(bundle, "onnx", out)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = ensemble.encode(data.head(16))
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(None, x), strict=True))
    for name, values in ensemble.raw_outputs(x).items():
        np.testing.assert_allclose(got[name], values, atol=1e-4)


class StopIn(keras.callbacks.Callback):
    """Stops the process's training (an exception) at the end of the given epoch of the given
    member, as a kill would, after the checkpoint of that epoch is written."""

    def __init__(self, member: int, epoch: int) -> None:
        super().__init__()
        self.member, self.epoch, self.started = member, epoch, -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.started == self.member and epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_an_interrupted_ensemble_resumes_to_the_same_weights(data: pd.DataFrame, tmp_path: Path) -> None:
    spec = with_train(ensemble=2, epochs=6, validation_split=0.25)
    whole = fit(spec, data)
    with pytest.raises(KeyboardInterrupt):
        fit(spec, data, checkpoint=tmp_path / "run", callbacks=[StopIn(member=1, epoch=3)])
    assert (tmp_path / "run" / "member_0" / "done.weights.h5").is_file()
    assert json.loads((tmp_path / "run" / "member_1" / "progress.json").read_text())["epoch"] == 3
    resumed = fit(spec, data, checkpoint=tmp_path / "run", resume=True)
    x = whole.encode(data)
    for name, values in whole.raw_outputs(x).items():
        np.testing.assert_allclose(resumed.raw_outputs(x)[name], values, atol=1e-5)
    assert len(resumed.history_["members"][1]["loss"]) == len(whole.history_["members"][1]["loss"])


def test_an_ensemble_of_none_is_refused() -> None:
    expected = r"train.ensemble: found 0; expected: input should be greater than or equal to 1"
    with pytest.raises(ConfigError, match=expected):
        load_spec(with_train(ensemble=0))


def test_attributions_are_measured_on_the_average(ensemble: Any, data: pd.DataFrame) -> None:
    found = ensemble.attribute(data, rows=[0, 7])["rows"]
    predicted = ensemble.predict(data.iloc[[0, 7]])["body_mass_g"].tolist()
    for row, expected in zip(found, predicted, strict=True):
        unit = row["outputs"]["body_mass_g"][0]
        assert unit["value"] == pytest.approx(expected, rel=1e-5)  # the average, not a member
        total = sum(entry["total"] for entry in unit["inputs"].values() if "total" in entry)
        assert abs(unit["value"] - unit["baseline"] - total) < 0.01 * abs(unit["value"] - unit["baseline"])
