"""The bundle on disk: exactly its files, checksummed; the same numbers after loading; a
plain-Keras ``model.keras``; whole or absent when replaced or when saving fails. And the
package itself: ``import plait`` loads no backend, ``plait --help`` answers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plait
from plait.errors import BundleError, PlaitError

FILES = ["MANIFEST.json", "history.json", "metrics.json", "model.keras", "spec.yaml", "state.json"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its checksum."""
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary names a save may leave beside the bundle."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def loaded(penguin_bundle: Path) -> plait.Model:
    return plait.load(penguin_bundle)


def test_save_then_load_predicts_identical_numbers(penguin_model: plait.Model, loaded: plait.Model,
                                                   penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, test = penguin_split
    before, after = penguin_model.predict(test), loaded.predict(test)
    assert before.columns.tolist() == after.columns.tolist()
    for column in before.columns:
        assert np.array_equal(before[column].to_numpy(), after[column].to_numpy()), column
    assert loaded.evaluate(test) == penguin_model.evaluate(test)
    assert loaded.states_ == penguin_model.states_
    assert loaded.history_ == penguin_model.history_


def test_bundle_holds_exactly_its_files_with_their_checksums(penguin_bundle: Path) -> None:
    import keras

    assert sorted(os.listdir(penguin_bundle)) == FILES
    manifest = json.loads((penguin_bundle / "MANIFEST.json").read_text())
    assert manifest["files"] == {name: sha256(penguin_bundle / name) for name in FILES
                                 if name != "MANIFEST.json"}
    assert manifest["plait"] == plait.__version__ and manifest["keras"] == keras.__version__
    assert manifest["backend"] == "jax"
    assert plait.load_spec(penguin_bundle / "spec.yaml").outputs[0].name == "species"
    history = json.loads((penguin_bundle / "history.json").read_text())
    assert len(history["loss"]) == 150
    assert "validation" in json.loads((penguin_bundle / "metrics.json").read_text())


@pytest.fixture()
def copy(penguin_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(penguin_bundle, tmp_path / "copy"))


@pytest.mark.parametrize("name", ["state.json", "model.keras", "spec.yaml"])
def test_a_changed_file_is_refused_by_its_checksum(copy: Path, name: str) -> None:
    with (copy / name).open("ab") as file:
        file.write(b" ")
    with pytest.raises(BundleError) as caught:
        plait.load(copy)
    assert str(caught.value) == (f"{copy / name}: its sha256 does not match MANIFEST.json; the file was "
                                 "changed or damaged after saving")


@pytest.mark.parametrize(("change", "expected"), [
    (lambda states: states["island"].pop("vocabulary"), "states.island.vocabulary: Field required"),
    (lambda states: states["body_mass_g"].update(divide="heavy"),
     "states.body_mass_g.divide: Input should be a valid number"),
    (lambda states: states["species"].update(colour="red"),
     "states.species.colour: Extra inputs are not permitted"),
    (lambda states: states.pop("sex"), "no fitted state for 'sex'"),
])
def test_a_fitted_state_is_validated_by_its_type_when_a_bundle_loads(copy: Path, change: object,
                                                                     expected: str) -> None:
    from plait.bundle import update

    state = json.loads((copy / "state.json").read_text())
    change(state["states"])
    update(copy, {"state.json": json.dumps(state).encode()})  # checksums match: only the content is wrong
    with pytest.raises(BundleError) as caught:
        plait.load(copy)
    assert str(caught.value).startswith(f"{copy / 'state.json'}: ")
    assert expected in str(caught.value)


def test_a_missing_file_or_manifest_is_refused(copy: Path, tmp_path: Path) -> None:
    (copy / "history.json").unlink()
    with pytest.raises(BundleError, match=r"history.json is missing; the bundle is incomplete"):
        plait.load(copy)
    (copy / "MANIFEST.json").unlink()
    with pytest.raises(BundleError, match=r"not a plait bundle \(no MANIFEST.json\)"):
        plait.load(copy)
    with pytest.raises(BundleError, match="no such bundle directory"):
        plait.load(tmp_path / "nowhere")


def test_model_keras_loads_with_plain_keras_in_safe_mode(penguin_bundle: Path, loaded: plait.Model) -> None:
    script = textwrap.dedent("""
        import json, sys
        import keras
        model = keras.saving.load_model(sys.argv[1])  # safe_mode is on by default
        print(json.dumps({"params": model.count_params(),
                          "classes": sorted({type(layer).__name__ for layer in model.layers}),
                          "inputs": sorted(tensor.name for tensor in model.inputs)}))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(penguin_bundle / "model.keras")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["params"] == loaded.keras_model.count_params()
    assert "Lambda" not in found["classes"] and "Dense" in found["classes"]
    assert found["inputs"] == sorted(s.name for s in loaded.spec.inputs)


def test_saving_over_a_bundle_replaces_it_whole(loaded: plait.Model, tmp_path: Path) -> None:
    target = loaded.save(tmp_path / "bundle")
    loaded.metrics_ = {**loaded.metrics_, "note": "second save"}
    try:
        loaded.save(target)
    finally:
        loaded.metrics_ = {k: v for k, v in loaded.metrics_.items() if k != "note"}
    assert sorted(os.listdir(target)) == FILES and leftovers(tmp_path) == []
    assert plait.load(target).metrics_["note"] == "second save"


def test_a_failed_save_leaves_the_old_bundle_or_nothing(loaded: plait.Model, tmp_path: Path) -> None:
    target = loaded.save(tmp_path / "bundle")
    before = snapshot(target)
    metrics = loaded.metrics_
    loaded.metrics_ = {"unwritable": object()}  # fails after model.keras is written
    try:
        with pytest.raises(PlaitError, match="cannot write object to JSON"):
            loaded.save(target)
        with pytest.raises(PlaitError, match="cannot write object to JSON"):
            loaded.save(tmp_path / "new")
    finally:
        loaded.metrics_ = metrics
    assert snapshot(target) == before
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # no partial folder, no new bundle
    plait.load(target)


def test_a_folder_that_is_not_a_bundle_is_never_replaced(loaded: plait.Model, tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="exists and is not a plait bundle; refusing to replace it"):
        loaded.save(tmp_path / "results")
    assert os.listdir(tmp_path / "results") == ["notes.txt"]


def test_import_plait_loads_no_backend() -> None:
    script = ("import sys, plait; plait.load_spec; plait.PlaitError; "
              "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_plait_help_answers_in_a_fresh_process() -> None:
    done = subprocess.run([sys.executable, "-m", "plait", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for command in ("train", "predict", "evaluate", "describe"):
        assert command in done.stdout
