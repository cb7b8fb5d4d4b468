"""``plait export``: a small trained bundle written as ONNX, SavedModel and LiteRT, each run
on its own runtime (ONNX Runtime, TensorFlow, the TFLite interpreter) on ``Model.encode``'s
arrays and compared with the Keras outputs; the command in a real subprocess.

The bundle has a text input (word ids), a number (optional, so with a mask input), a vector
and a small image with max pooling (which jax2onnx writes in a form plait rewrites for ONNX
Runtime); a binary, a number and a category output (two of the same shape, so outputs
matched by position instead of name would show).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import fit, png_bytes, train_block
from plait.errors import PlaitError
from plait.export import export, place

TOLERANCE = 1e-4
WORDS = ["good", "bad", "fine", "great", "awful", "ok", "soft", "warm"]

SPEC = {
    "inputs": [
        {"name": "note", "type": "text", "length": 5},
        {"name": "x", "type": "number", "optional": True},
        {"name": "readings", "type": "vector", "size": 3},
        {"name": "photo", "type": "image", "size": [8, 8], "encoder": {"filters": [4], "pool": 2}},
    ],
    "head": {"layers": [8], "dropout": 0.1},
    "outputs": [{"name": "label", "type": "binary"}, {"name": "amount", "type": "number"},
                {"name": "kind", "type": "category"}],
    "train": train_block(epochs=2),
}


def table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    brightness = rng.integers(0, 255, rows)
    return pd.DataFrame({
        "note": [" ".join(rng.choice(WORDS, 3)) for _ in range(rows)],
        "x": np.where(rng.random(rows) < 0.1, np.nan, x),
        "readings": [list(v) for v in rng.normal(size=(rows, 3)).round(3)],
        "photo": [png_bytes(np.full((8, 8, 3), b)) for b in brightness],
        "label": (x > 0).astype(int),
        "amount": 3 * x + brightness / 50,
        "kind": rng.choice(["a", "b", "c"], rows),
    })


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit(SPEC, table(300, 0)).save(tmp_path_factory.mktemp("export") / "bundle")


@pytest.fixture(scope="module")
def loaded(bundle: Path) -> Any:
    import plait

    return plait.load(bundle)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Rows the model has not seen (a missing number among them), without their labels."""
    return table(40, 1).drop(columns=["label", "amount", "kind"])


@pytest.fixture(scope="module")
def expected(loaded: Any, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    return loaded.raw_outputs(loaded.encode(rows))


def largest_difference(got: dict[str, Any], expected: dict[str, np.ndarray]) -> float:
    assert set(got) == set(expected)
    for name, values in expected.items():
        assert np.shape(got[name]) == values.shape, name
    return max(float(np.abs(np.asarray(got[name]) - values).max()) for name, values in expected.items())


def test_encode_gives_what_the_keras_model_is_fed(loaded: Any, rows: pd.DataFrame) -> None:
    encoded = loaded.encode(rows)
    inputs = {tensor.name: tensor for tensor in loaded.keras_model.inputs}
    assert set(encoded) == set(inputs) == {"note", "x", "x_mask", "readings", "photo"}
    for name, array in encoded.items():
        assert array.dtype == inputs[name].dtype and array.shape == (40, *inputs[name].shape[1:])
    assert encoded["note"].dtype == np.int32
    assert encoded["x_mask"].ravel().tolist() == rows["x"].notna().astype(float).tolist()
    raw, _ = loaded.predict_arrays(rows)
    assert largest_difference(loaded.raw_outputs(encoded), raw) == 0.0


def test_onnx_runs_in_onnx_runtime(bundle: Path, loaded: Any, rows: pd.DataFrame,
                                   expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    import onnxruntime

    out = tmp_path / "model.onnx"
    written = export(bundle, "onnx", out)
    assert written == [out, tmp_path / "model.onnx.inputs.json"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == set(loaded.encode(rows))
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(None, loaded.encode(rows)), strict=True))
    assert largest_difference(got, expected) < TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.inputs.json"]


def test_the_description_names_each_input_and_output(bundle: Path, loaded: Any, tmp_path: Path) -> None:
    export(bundle, "onnx", tmp_path / "model.onnx")
    described = json.loads((tmp_path / "model.onnx.inputs.json").read_text())
    inputs = {entry["name"]: entry for entry in described["inputs"]}
    assert list(inputs) == ["note", "x", "x_mask", "readings", "photo"]
    assert inputs["note"] == {
        "name": "note", "dtype": "int32", "shape": [None, 5], "type": "text",
        "encoding": "word ids (0: padding, 1: unknown word, then the fitted vocabulary)"}
    assert inputs["photo"]["shape"] == [None, 8, 8, 3] and inputs["photo"]["dtype"] == "float32"
    assert inputs["x_mask"]["encoding"] == "1.0 where x is present, 0.0 where it is missing"
    states = loaded.states_
    assert inputs["readings"]["encoding"] == loaded.spec.inputs[2].describe_array(states["readings"], True)
    outputs = {entry["name"]: entry for entry in described["outputs"]}
    assert outputs["label"]["shape"] == [None, 1]
    assert outputs["label"]["meaning"] == "the probability of '1' (the other label: '0')"
    assert outputs["label"]["threshold"] == states["label"].threshold
    assert outputs["kind"]["shape"] == [None, 3] and outputs["kind"]["labels"] == ["a", "b", "c"]
    assert "standardised" in outputs["amount"]["meaning"]


def test_saved_model_runs_in_tensorflow(bundle: Path, loaded: Any, rows: pd.DataFrame,
                                        expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    import tensorflow as tf

    out = tmp_path / "saved"
    assert export(bundle, "saved_model", out) == [out, out / "inputs.json"]
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    got = serve(**{name: tf.constant(array) for name, array in loaded.encode(rows).items()})
    assert largest_difference({name: value.numpy() for name, value in got.items()}, expected) < TOLERANCE
    assert json.loads((out / "inputs.json").read_text())["signature"] == "serving_default"
    # An export over an earlier one replaces it whole.
    export(bundle, "saved_model", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_litert_runs_in_the_tflite_interpreter(bundle: Path, loaded: Any, rows: pd.DataFrame,
                                               expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    import tensorflow as tf

    out = tmp_path / "model.tflite"
    assert export(bundle, "litert", out) == [out, tmp_path / "model.tflite.inputs.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter says it moves to ai_edge_litert
        interpreter = tf.lite.Interpreter(model_path=str(out))
    run = interpreter.get_signature_runner("serving_default")
    assert largest_difference(run(**loaded.encode(rows)), expected) < TOLERANCE


def plait_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plait", *args], capture_output=True, text=True,
                          timeout=600)


def test_the_command_exports_in_a_subprocess(bundle: Path, loaded: Any, rows: pd.DataFrame,
                                             expected: dict[str, np.ndarray], tmp_path: Path) -> None:
    import onnxruntime

    out = tmp_path / "cli" / "model.onnx"
    done = plait_command("export", str(bundle), "--format", "onnx", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"written: {out}", f"written: {out}.inputs.json"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(None, loaded.encode(rows)), strict=True))
    assert largest_difference(got, expected) < TOLERANCE


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite", "--out", "model.tflite"],
     "plait: error: --format: found 'tflite'; expected one of onnx, saved_model, litert"),
    (["--format", "litert", "--out", "model.onnx"],
     "plait: error: --out model.onnx: found extension '.onnx'; a litert file ends with .tflite"),
])
def test_a_mistake_gets_one_line_and_writes_nothing(bundle: Path, tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "plait", "export", str(bundle), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [message]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bundle_is_named(tmp_path: Path) -> None:
    done = plait_command("export", str(tmp_path / "absent"), "--format", "onnx",
                         "--out", str(tmp_path / "model.onnx"))
    assert done.returncode == 2
    message = f"plait: error: {tmp_path / 'absent'}: no such bundle directory"
    assert done.stderr.strip().splitlines() == [message]
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_no_saved_model_is_not_replaced(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(PlaitError, match="exists and is not a SavedModel folder"):
        export(bundle, "saved_model", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_missing_package_says_what_to_install(bundle: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "jax2onnx" else real(name, *rest))
    with pytest.raises(PlaitError) as caught:
        export(bundle, "onnx", tmp_path / "model.onnx")
    assert str(caught.value) == 'exporting to onnx needs jax2onnx: pip install "plait[export]"'
    assert list(tmp_path.iterdir()) == []


def test_placing_an_onnx_export_keeps_its_weights_file_and_drops_a_stale_one(tmp_path: Path) -> None:
    """jax2onnx writes weights over 1 MB to ``<file>.data``; it moves with the model, and one
    an earlier export left is removed when the new export has none."""
    out = tmp_path / "model.onnx"
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in ["model.onnx", "model.onnx.data", "model.onnx.inputs.json"]:
        (staged / name).write_text(name)
    placed = place(staged, out, "onnx")
    assert placed == [out, tmp_path / "model.onnx.data", tmp_path / "model.onnx.inputs.json"]
    for name in ["model.onnx", "model.onnx.inputs.json"]:
        (staged / name).write_text(f"new {name}")
    place(staged, out, "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.inputs.json", "staged"]
    assert out.read_text() == "new model.onnx"
