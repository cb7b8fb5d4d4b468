"""Time series: the ``inception`` and ``resnet`` encoders learn a shape planted in synthetic
series (one channel and three), ``scale: series`` z-normalises each row on its own,
``plait code`` writes both networks with plait's layers and parameter counts (checked
against counts worked out by hand from the published architectures), and the example's
``.ts`` reader reads the shipped UCR/UEA files.

As in test_inputs.py, one model holds every input with ``merge: []`` and one output per
input, so JAX compiles once for the four encoder × channel cases.
"""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from conftest import fit, train_block
from plait.codegen import generate
from plait.data import read_table
from plait.errors import DataError
from plait.graph import build, compile_model
from plait.model import placeholder_states
from plait.preprocess import encode_inputs
from plait.spec import load_spec
from test_codegen import summary

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "timeseries"
STEPS = 32
TRAIN_ROWS, HELD_OUT = 200, 100
SMALL = {  # the published networks, narrowed so that a test trains them in seconds
    "inception": {"kind": "inception", "filters": 8, "depth": 3, "kernel_sizes": [9, 5, 3], "bottleneck": 8},
    "resnet": {"kind": "resnet", "filters": [8, 16], "kernel_sizes": [8, 5, 3]},
}


def waves(rows: int, channels: int, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """Sine waves (label 0) or square waves (label 1) of random period, phase, offset and
    amplitude in the first channel, noise in the others: only the shape tells the label."""
    square = rng.random(rows) < 0.5
    steps = np.arange(STEPS)
    series = []
    for is_square in square:
        wave = np.sin(2 * np.pi * steps / rng.uniform(8, 16) + rng.uniform(0, 2 * np.pi))
        if is_square:
            wave = np.sign(wave)
        first = rng.normal(0, 3) + rng.uniform(0.5, 5) * wave + rng.normal(0, 0.2, STEPS)
        if channels == 1:
            series.append(first.tolist())
        else:
            series.append(np.column_stack([first, *rng.normal(size=(channels - 1, STEPS))]).tolist())
    return series, square.astype(int)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each encoder on one channel and on three, trained in one model; held-out scores."""
    rng = np.random.default_rng(3)
    rows = TRAIN_ROWS + HELD_OUT
    one, y1 = waves(rows, 1, rng)
    three, y3 = waves(rows, 3, rng)
    frame = pd.DataFrame({"one": one, "three": three, "y1": y1, "y3": y3})
    inputs = [{"name": f"{kind}_{column}", "column": column, "type": "sequence", "scale": "series",
               "encoder": encoder} for kind, encoder in SMALL.items() for column in ("one", "three")]
    spec = {
        "inputs": inputs,
        "merge": [],
        "outputs": [{"name": f"{s['name']}_out", "column": "y1" if s["column"] == "one" else "y3",
                     "type": "binary", "from": s["name"]} for s in inputs],
        # batches of 16: steps enough for batch normalisation's moving statistics, which
        # predictions use, to follow the weights
        "train": train_block(epochs=20, batch_size=16, learning_rate=0.002),
    }
    model = fit(spec, frame.iloc[:TRAIN_ROWS])
    return {"model": model, "scores": model.evaluate(frame.iloc[TRAIN_ROWS:])}


@pytest.mark.parametrize("name", ["inception_one", "inception_three", "resnet_one", "resnet_three"])
def test_each_encoder_learns_the_shape_of_a_series(learned: dict, name: str) -> None:
    scores = learned["scores"][f"{name}_out"]
    assert scores["rows"] == HELD_OUT
    assert scores["accuracy"] >= scores["baseline"]["accuracy"] + 0.2, scores


def test_encoders_build_the_published_blocks(learned: dict) -> None:
    keras_model = learned["model"].keras_model
    layers = {layer.name: type(layer).__name__ for layer in keras_model.layers}
    # the first module reads one channel: no bottleneck; later ones narrow 4 × 8 channels to 8
    assert "inception_one_inception1_bottleneck" not in layers
    assert keras_model.get_layer("inception_one_inception2_bottleneck").output.shape == (None, STEPS, 8)
    assert keras_model.get_layer("inception_three_inception1_bottleneck").output.shape == (None, STEPS, 8)
    assert keras_model.get_layer("inception_one_inception3_concat").output.shape == (None, STEPS, 32)
    assert layers["inception_one_shortcut3_add"] == "Add"
    assert keras_model.get_layer("inception_one_average").output.shape == (None, 32)
    # ResNet: a 1×1 convolution on the shortcut only where the channels change
    assert layers["resnet_three_block1_shortcut_conv"] == "Conv1D"
    assert layers["resnet_three_block2_shortcut_conv"] == "Conv1D"
    assert keras_model.get_layer("resnet_three_average").output.shape == (None, 16)


# -- scale: series ----------------------------------------------------------------------


def encoded(config: dict, train: pd.DataFrame, data: pd.DataFrame) -> tuple[np.ndarray, object]:
    spec = load_spec({"inputs": [{"name": "s", **config}], "outputs": [{"name": "y", "type": "binary"}]})
    state = spec.inputs[0].fit(read_table(train))
    return encode_inputs(spec, {"s": state}, read_table(data)).inputs["s"], state


def test_scale_series_z_normalises_each_row_and_channel_on_its_own() -> None:
    rng = np.random.default_rng(0)
    rows = [np.column_stack([rng.normal(mean, spread, 12), rng.normal(-mean, 1, 12)]).tolist()
            for mean, spread in ((0, 1), (100, 0.01), (-5, 30))]
    rows.append([[7.0, float(step)] for step in range(12)])  # a constant first channel
    train = pd.DataFrame({"s": rows, "y": [0, 1, 0, 1]})
    values, state = encoded({"type": "sequence", "scale": "series"}, train, train)
    assert values.shape == (4, 12, 2) and values.dtype == np.float32
    np.testing.assert_allclose(values[:3].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(values[:3].std(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(values[3, :, 0], 0)  # std 0: divided by 1, not by 0
    np.testing.assert_allclose(values[3, :, 1], (np.arange(12) - 5.5) / np.arange(12).std(), rtol=1e-5)
    # the state holds no per-row statistics: plain JSON that validates again
    assert state.shift == [0.0, 0.0] and state.divide == [1.0, 1.0]
    assert type(state).model_validate(json.loads(state.model_dump_json())) == state


def test_scale_series_uses_a_row_s_own_steps_before_padding_and_cutting() -> None:
    train = pd.DataFrame({"s": [[1.0, 2.0, 3.0, 4.0], [10.0, 30.0]], "y": [0, 1]})
    values, _ = encoded({"type": "sequence", "scale": "series", "steps": 3}, train,
                        pd.DataFrame({"s": [[1.0, 2.0, 3.0, 400.0], [10.0, 30.0], [5.0, None, 7.0]]}))
    # a row cut to 3 steps is normalised on those 3; a short row on its own 2, then padded
    np.testing.assert_allclose(values[0, :, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    np.testing.assert_allclose(values[1, :, 0], [-1.0, 1.0, 0.0], rtol=1e-6)
    # a missing step is left out of its row's statistics and reads 0
    np.testing.assert_allclose(values[2, :, 0], [-1.0, 0.0, 1.0], rtol=1e-6)


def test_scale_series_is_a_checked_config_value() -> None:
    from plait.errors import ConfigError

    with pytest.raises(ConfigError, match=r"inputs\[0\]\.scale: found 'rows'"):
        load_spec({"inputs": [{"name": "s", "type": "sequence", "scale": "rows"}],
                   "outputs": [{"name": "y", "type": "binary"}]})


# -- plait code -------------------------------------------------------------------------

# Parameters worked out by hand from the published networks (weights, biases, and batch
# normalisation's four values per channel), plus the output's Dense(1) of 128 + 1.
HAND_COUNTED = {
    # InceptionTime, 150 steps of 1 channel: module 1 reads 1 channel (no bottleneck):
    # 32 × (40 + 20 + 10) + 32 + 4 × 128; modules 2–6: bottleneck 128 × 32, the three
    # widths 32 × 32 × 70, pooling path 128 × 32, 4 × 128; shortcuts 1 × 128 and 128 × 128,
    # each with 4 × 128.
    "inception": (2_784 + 5 * 80_384 + 640 + 16_896 + 129, {"steps": 150, "features": 1}),
    # ResNet, 100 steps of 6 channels: blocks of 64, 128, 128 filters, widths 8, 5, 3
    # (with biases), a 1×1 shortcut convolution in the first two, 4 values per channel for
    # each batch normalisation.
    "resnet": (37_504 + 207_360 + 264_576 + 129, {"steps": 100, "features": 6}),
}


@pytest.mark.parametrize("kind", sorted(HAND_COUNTED))
def test_plait_code_writes_the_same_network(kind: str, tmp_path: Path) -> None:
    parameters, shape = HAND_COUNTED[kind]
    spec = load_spec({"inputs": [{"name": "series", "type": "sequence", "scale": "series", **shape,
                                  "encoder": {"kind": kind}}],
                      "outputs": [{"name": "value", "type": "number"}]})
    model = compile_model(build(spec, placeholder_states(spec)), spec)
    script = tmp_path / f"{kind}.py"
    script.write_text(generate(spec, source=f"a {kind} config", model=model), encoding="utf-8")
    written = runpy.run_path(str(script), run_name="generated_script")["model"]
    assert model.count_params() == parameters
    assert summary(written) == summary(model)
    assert "z-normalised per feature over its own steps" in script.read_text(encoding="utf-8")


def test_kernels_wider_than_the_series_are_capped() -> None:
    spec = load_spec({"inputs": [{"name": "s", "type": "sequence", "steps": 12, "features": 2,
                                  "encoder": {"kind": "inception", "depth": 1}}],
                      "outputs": [{"name": "y", "type": "binary"}]})
    model = build(spec, placeholder_states(spec))
    widths = [model.get_layer(f"s_inception1_conv{index}").kernel_size[0] for index in (1, 2, 3)]
    assert widths == [12, 12, 10]


# -- the example's .ts reader -----------------------------------------------------------


def prepare() -> ModuleType:
    """examples/timeseries/prepare.py, imported as a module."""
    loaded = importlib.util.spec_from_file_location("timeseries_prepare", EXAMPLE / "prepare.py")
    module = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = module  # its dataclass looks its module up there
    loaded.loader.exec_module(module)
    return module


def test_ts_reader_reads_the_shipped_sets() -> None:
    reader = prepare()
    gunpoint = reader.read_ts(EXAMPLE / "data" / "GunPoint_TRAIN.ts")
    table = gunpoint.table()
    assert table.num_rows == 50 and table.schema.field("series").type == pa.list_(pa.float64())
    assert {len(row) for row in table.column("series").to_pylist()} == {150}
    assert gunpoint.header["problemname"] == "GunPoint"
    assert sorted(set(table.column("label").to_pylist())) == ["1", "2"]
    motions = reader.read_ts(EXAMPLE / "data" / "BasicMotions_TEST.ts").table()
    steps = np.array(motions.column("series").to_pylist())
    assert steps.shape == (40, 100, 6)
    assert sorted(set(motions.column("label").to_pylist())) == ["Badminton", "Running", "Standing", "Walking"]


@pytest.mark.parametrize(("line", "message"), [
    ("1,2,3:4,5,x:1", "line 6: found 'x'; expected a number or '?'"),
    ("1,2,3:4,5:1", "line 6: found channels of 2 to 3 values"),
    ("1,2,3:1", "line 6: found 1 channel(s); expected 2"),
    ("1,2,3:4,5,6:7", "line 6: found the label '7'; expected one of ['1', '2']"),
])
def test_ts_reader_names_the_line_of_a_bad_case(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.ts"
    path.write_text("# a comment\n@univariate false\n@dimensions 2\n@classLabel true 1 2\n"
                    f"@data\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"bad.ts, {message}")):
        prepare().read_ts(path)


def test_example_configs_load_and_init_types_the_shipped_sets_as_series() -> None:
    from plait.init import infer_config

    for config in sorted(EXAMPLE.glob("*.yaml")):
        spec = load_spec(config)
        assert spec.inputs[0].scale == "series" and spec.inputs[0].encoder.kind in ("inception", "resnet")
    reader = prepare()
    for name, features in (("GunPoint", 1), ("BasicMotions", 6)):
        table = reader.read_ts(EXAMPLE / "data" / f"{name}_TRAIN.ts").table()
        series = yaml.safe_load(infer_config(table, ["label"]))["inputs"][0]
        assert series == {"name": "series", "type": "sequence", "features": features, "scale": "series",
                          "encoder": {"kind": "inception"}}
