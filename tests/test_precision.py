"""``train.precision``: mixed precision trains, keeps its outputs in float32, and its bundle
loads and predicts the same whatever dtype policy the caller has set globally."""

from __future__ import annotations

import runpy
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import plait
from conftest import fit, train_block
from plait.codegen import generate
from plait.errors import ConfigError
from plait.graph import build
from plait.model import placeholder_states
from plait.spec import load_spec

COMPUTE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def frame(rows: int = 512) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=rows)
    c = rng.choice(["a", "b", "c"], rows)
    y = ((x + (c == "a")) > 0.5).astype(int)
    words = np.where(y ^ (rng.random(rows) < 0.1), "good fine", "bad poor")
    return pd.DataFrame({"x": x, "c": c, "t": words, "y": y, "r": 2 * x + 1})


def config(precision: str) -> dict:
    return {
        "inputs": [{"name": "x", "type": "number"}, {"name": "c", "type": "category"},
                   {"name": "t", "type": "text", "length": 4, "optional": True}],
        "head": {"layers": [16]},
        "outputs": [{"name": "y", "type": "binary"}, {"name": "r", "type": "number"}],
        "train": train_block(epochs=30, batch_size=512, precision=precision),
    }


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_its_bundle_predicts_the_same(precision: str, tmp_path: Path) -> None:
    data = frame()
    model = fit(config(precision), data)
    network = model.keras_model
    computing = {layer.name: layer.compute_dtype for layer in network.layers if layer.weights}
    outputs = {"y", "r"}
    assert {computing[name] for name in computing if name not in outputs} == {COMPUTE[precision]}
    assert {computing[name] for name in outputs} == {"float32"}
    assert all(str(tensor.dtype) == "float32" for tensor in network.outputs)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored after building
    scaled = isinstance(network.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")

    predicted = model.predict(data)
    assert np.isfinite(predicted["y_proba"]).all() and np.isfinite(predicted["r"].astype(float)).all()
    assert ((predicted["y_proba"] > 0.5) == data["y"]).mean() > 0.8  # the majority class is ~0.6

    bundle = model.save(tmp_path / "bundle")
    other = "float32" if precision == "mixed_float16" else "mixed_float16"
    keras.mixed_precision.set_dtype_policy(other)
    try:
        loaded = plait.load(bundle)
        again = loaded.predict(data)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    reloaded = loaded.keras_model.layers
    assert {layer.name: layer.compute_dtype for layer in reloaded if layer.weights} == computing
    np.testing.assert_array_equal(again["y_proba"], predicted["y_proba"])
    np.testing.assert_array_equal(again["r"], predicted["r"])


def test_plait_code_sets_the_policy_and_builds_the_same_dtypes(tmp_path: Path) -> None:
    spec = load_spec(config("mixed_float16"))
    script = tmp_path / "model.py"
    script.write_text(generate(spec), encoding="utf-8")
    assert 'keras.mixed_precision.set_dtype_policy("mixed_float16")' in script.read_text(encoding="utf-8")
    try:
        written = runpy.run_path(str(script), run_name="generated_script")["model"]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    plaits = build(spec, placeholder_states(spec))
    assert [(layer.name, layer.dtype_policy.name) for layer in written.layers] == \
        [(layer.name, layer.dtype_policy.name) for layer in plaits.layers]
    assert "set_dtype_policy" not in generate(load_spec(config("float32")))


def test_an_unknown_precision_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision: found 'float16'; expected one of"):
        load_spec(config("float16"))
