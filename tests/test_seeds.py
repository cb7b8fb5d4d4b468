"""The seed gallery: every hand-written Keras model in ../shared/seeds, declared as a plait
config in examples/seeds/, builds the same network.

Each reference below is written independently from the seed's own code (with the
functional API, as the seed does; the wrong ones as their authors meant them) and compared
with plait's model: trainable parameters, layer types in order, output shape of each layer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras import layers  # noqa: E402

import plait  # noqa: E402
from plait.errors import ConfigError, DataError  # noqa: E402
from plait.graph import build, compile_model  # noqa: E402
from plait.model import placeholder_states  # noqa: E402
from plait.spec import load_spec  # noqa: E402

SEEDS = Path(__file__).resolve().parents[1] / "examples" / "seeds"
SEED_FILES = {
    "000": "000_c8855a25d639946a.txt",
    "001": "001_caa7107ec28ff826.txt",
    "002": "002_89b15327436d2fcd.txt",
    "003": "003_2b32583ae2424519.txt",
    "004": "004_d22b7a98ec2b9db5.txt",
}


# -- the seeds' models, written from the seeds ------------------------------------------


def seed_000_1() -> keras.Model:
    input_layer_1 = keras.Input(shape=(10,))
    input_layer_2 = keras.Input(shape=(5,))
    dense_layer_1 = layers.Dense(64, activation="relu")(input_layer_1)
    dense_layer_2 = layers.Dense(32, activation="relu")(input_layer_2)
    merged = layers.concatenate([dense_layer_1, dense_layer_2])
    dense_layer_3 = layers.Dense(16, activation="relu")(merged)
    output_layer = layers.Dense(1, activation="sigmoid")(dense_layer_3)
    return keras.Model(inputs=[input_layer_1, input_layer_2], outputs=output_layer)


def seed_000_2() -> keras.Model:
    input_layer_1 = keras.Input(shape=(10,))
    input_layer_2 = keras.Input(shape=(10,))
    dense_layer_1 = layers.Dense(10, activation="relu")(input_layer_1)
    dense_layer_2 = layers.Dense(10, activation="relu")(input_layer_2)
    merged = layers.Add()([dense_layer_1, dense_layer_2])
    dense_layer_3 = layers.Dense(5, activation="relu")(merged)
    output_layer = layers.Dense(1, activation="linear")(dense_layer_3)
    return keras.Model(inputs=[input_layer_1, input_layer_2], outputs=output_layer)


def seed_000_3() -> keras.Model:
    input_layer_1 = keras.Input(shape=(10, 5))
    input_layer_2 = keras.Input(shape=(20,))
    reshaped_layer_1 = layers.Reshape((50,))(input_layer_1)
    dense_layer_1 = layers.Dense(32, activation="relu")(reshaped_layer_1)
    dense_layer_2 = layers.Dense(32, activation="relu")(input_layer_2)
    merged = layers.concatenate([dense_layer_1, dense_layer_2])
    dense_layer_3 = layers.Dense(16, activation="relu")(merged)
    output_layer = layers.Dense(1, activation="sigmoid")(dense_layer_3)
    return keras.Model(inputs=[input_layer_1, input_layer_2], outputs=output_layer)


def seed_001_1() -> keras.Model:
    input_numeric = keras.Input(shape=(2,), name="numeric_input")
    input_text = keras.Input(shape=(50,), dtype="int32", name="text_input")
    dense1 = layers.Dense(16, activation="relu")(input_numeric)
    dense2 = layers.Dense(8, activation="relu")(dense1)
    embedding_layer = layers.Embedding(input_dim=10000, output_dim=16)(input_text)
    lstm_layer = layers.LSTM(32)(embedding_layer)
    merged = layers.concatenate([dense2, lstm_layer])
    dense3 = layers.Dense(16, activation="relu")(merged)
    output_layer = layers.Dense(1, activation="sigmoid")(dense3)
    return keras.Model(inputs=[input_numeric, input_text], outputs=output_layer)


def seed_002_1() -> keras.Model:
    input_numerical = keras.Input(shape=(20,), name="numerical_input")
    input_image = keras.Input(shape=(100, 100, 3), name="image_input")
    numerical_branch = layers.Dense(64, activation="relu")(input_numerical)
    numerical_branch = layers.Dense(32, activation="relu")(numerical_branch)
    image_branch = layers.Conv2D(32, (3, 3), activation="relu")(input_image)
    image_branch = layers.Conv2D(64, (3, 3), activation="relu")(image_branch)
    image_branch = layers.Flatten()(image_branch)
    image_branch = layers.Dense(32, activation="relu")(image_branch)
    merged_branch = layers.concatenate([numerical_branch, image_branch])
    output = layers.Dense(1, activation="sigmoid")(merged_branch)
    return keras.Model(inputs=[input_numerical, input_image], outputs=output)


def seed_002_2() -> keras.Model:
    input_sequence_1 = keras.Input(shape=(10, 5), name="seq_input_1")
    input_sequence_2 = keras.Input(shape=(15, 3), name="seq_input_2")
    lstm_branch_1 = layers.LSTM(32, return_sequences=False)(input_sequence_1)
    lstm_branch_2 = layers.LSTM(64, return_sequences=False)(input_sequence_2)
    merged_branch = layers.concatenate([lstm_branch_1, lstm_branch_2])
    output = layers.Dense(1, activation="sigmoid")(merged_branch)
    return keras.Model(inputs=[input_sequence_1, input_sequence_2], outputs=output)


def seed_002_3() -> keras.Model:
    # The seed multiplies with a Lambda around tf.multiply; Multiply is the same product.
    input_vector_1 = keras.Input(shape=(10,), name="vector_1")
    input_vector_2 = keras.Input(shape=(10,), name="vector_2")
    dense_branch_1 = layers.Dense(16, activation="relu")(input_vector_1)
    dense_branch_2 = layers.Dense(16, activation="relu")(input_vector_2)
    merged_branch = layers.Multiply()([dense_branch_1, dense_branch_2])
    output = layers.Dense(1, activation="sigmoid")(merged_branch)
    return keras.Model(inputs=[input_vector_1, input_vector_2], outputs=output)


def seed_003_1() -> keras.Model:
    image_input = keras.Input(shape=(64, 64, 3), name="image_input")
    x = layers.Conv2D(32, (3, 3), activation="relu")(image_input)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    image_features = layers.Dense(128, activation="relu")(x)
    text_input = keras.Input(shape=(100, 100), name="text_input")
    x = layers.LSTM(128)(text_input)
    text_features = layers.Dense(128, activation="relu")(x)
    merged = layers.concatenate([image_features, text_features])
    output = layers.Dense(1, activation="sigmoid")(merged)
    return keras.Model(inputs=[image_input, text_input], outputs=output)


def seed_003_2() -> keras.Model:
    # As meant: the mean of the three sensor readings, as one feature (the seed's
    # Average()(sensor_input) fails: Average merges two or more tensors).
    sensor_input = keras.Input(shape=(3,), name="sensor_input")
    time_series_input = keras.Input(shape=(20, 5), name="time_series_input")
    x = layers.LSTM(64)(time_series_input)
    time_series_features = layers.Dense(64, activation="relu")(x)
    readings = layers.Reshape((3, 1))(sensor_input)
    averaged_sensors = layers.GlobalAveragePooling1D()(readings)
    merged = layers.concatenate([time_series_features, averaged_sensors])
    output = layers.Dense(1, activation="sigmoid")(merged)
    return keras.Model(inputs=[sensor_input, time_series_input], outputs=output)


def seed_003_3() -> keras.Model:
    profile_input = keras.Input(shape=(10,), name="profile_input")
    x = layers.Dense(64, activation="relu")(profile_input)
    churn_prediction = layers.Dense(1, activation="sigmoid", name="churn_prediction")(x)
    purchase_input = keras.Input(shape=(20,), name="purchase_input")
    y = layers.Dense(64, activation="relu")(purchase_input)
    revenue_prediction = layers.Dense(1, activation="linear", name="revenue_prediction")(y)
    return keras.Model(inputs=[profile_input, purchase_input],
                       outputs=[churn_prediction, revenue_prediction])


def seed_004_1() -> keras.Model:
    numerical_input = keras.Input(shape=(10,), name="numerical_input")
    categorical_input = keras.Input(shape=(1,), name="categorical_input")
    numerical_processed = layers.Dense(64, activation="relu")(numerical_input)
    numerical_processed = layers.Dense(32, activation="relu")(numerical_processed)
    categorical_embedded = layers.Embedding(100, 16)(categorical_input)
    categorical_processed = layers.Flatten()(categorical_embedded)
    merged = layers.concatenate([numerical_processed, categorical_processed])
    output = layers.Dense(1)(merged)
    return keras.Model(inputs=[numerical_input, categorical_input], outputs=output)


def seed_004_2() -> keras.Model:
    image_input = keras.Input(shape=(64, 64, 3), name="image_input")
    text_input = keras.Input(shape=(100,), name="text_input")
    image_processed = layers.Conv2D(32, (3, 3), activation="relu")(image_input)
    image_processed = layers.MaxPooling2D((2, 2))(image_processed)
    image_processed = layers.Flatten()(image_processed)
    text_processed = layers.Embedding(10000, 64)(text_input)
    text_processed = layers.LSTM(32)(text_processed)
    merged = layers.concatenate([image_processed, text_processed])
    output = layers.Dense(10, activation="softmax")(merged)
    return keras.Model(inputs=[image_input, text_input], outputs=output)


def seed_004_3() -> keras.Model:
    # As meant: one mask input (the seed declares it twice), input_b zeroed where the
    # mask is 0, then concatenated with input_a.
    input_a = keras.Input(shape=(10,), name="input_a")
    input_b = keras.Input(shape=(5,), name="input_b")
    input_b_mask = keras.Input(shape=(1,), name="input_b_mask")
    input_b_processed = layers.Multiply()([input_b, input_b_mask])
    merged = layers.concatenate([input_a, input_b_processed])
    dense1 = layers.Dense(32, activation="relu")(merged)
    output = layers.Dense(1)(dense1)
    return keras.Model(inputs=[input_a, input_b_mask, input_b], outputs=output)


REFERENCES: dict[str, Callable[[], keras.Model]] = {
    "000-1": seed_000_1, "000-2": seed_000_2, "000-3": seed_000_3,
    "001-1": seed_001_1,
    "002-1": seed_002_1, "002-2": seed_002_2, "002-3": seed_002_3,
    "003-1": seed_003_1, "003-2": seed_003_2, "003-3": seed_003_3,
    "004-1": seed_004_1, "004-2": seed_004_2, "004-3": seed_004_3,
}

PARAMETERS = {
    "000-1": 2_465, "000-2": 281, "000-3": 3_361, "001-1": 167_129, "002-1": 18_897_281,
    "002-2": 22_369, "002-3": 369, "003-1": 4_071_297, "003-2": 22_146, "003-3": 2_178,
    "004-1": 4_433, "004-2": 961_162, "004-3": 545,
}

# -- comparing models -------------------------------------------------------------------


def trainable(model: Any) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def structure(model: Any) -> list[tuple[str, tuple]]:
    """Each layer's class and output shape, in the model's own (topological) order."""
    return [(type(layer).__name__, tuple(layer.output.shape)) for layer in model.layers]


def assert_same_network(model: Any, reference: Any) -> None:
    assert trainable(model) == trainable(reference)
    assert [kind for kind, _ in structure(model)] == [kind for kind, _ in structure(reference)]
    assert structure(model) == structure(reference)
    assert sorted(tuple(t.shape) for t in model.outputs) == sorted(
        tuple(t.shape) for t in reference.outputs)


@functools.cache
def plait_model(example: str) -> Any:
    """plait's model for an example, built once and shared by the tests (here and in
    test_codegen.py) that read its structure or train it."""
    spec = load_spec(SEEDS / f"{example}.yaml")
    return build(spec, placeholder_states(spec))


def arrays_for(model: Any, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random encoded arrays of the right shape and dtype for each of the model's inputs."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in model.inputs:
        shape = (rows, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            arrays[tensor.name] = rng.integers(0, 50, shape).astype(np.int32)
        elif tensor.name.endswith("_mask"):
            arrays[tensor.name] = rng.integers(0, 2, shape).astype(np.float32)
        else:
            arrays[tensor.name] = rng.random(shape, dtype=np.float32)
    return arrays


def targets_for(model: Any, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    targets = {}
    for name, tensor in zip(model.output_names, model.outputs, strict=True):
        width = tensor.shape[-1]
        targets[name] = (rng.integers(0, width, (rows, 1)) if width > 1
                         else rng.integers(0, 2, (rows, 1))).astype(np.float32)
    return targets


# -- the gallery ------------------------------------------------------------------------


def test_thirteen_examples() -> None:
    assert sorted(p.stem for p in SEEDS.glob("*.yaml")) == sorted(REFERENCES)
    counts = {seed: sum(name.startswith(seed) for name in REFERENCES) for seed in SEED_FILES}
    assert counts == {"000": 3, "001": 1, "002": 3, "003": 3, "004": 3}


@pytest.mark.parametrize("example", sorted(REFERENCES))
def test_config_names_its_seed(example: str) -> None:
    seed, number = example.split("-")
    first = (SEEDS / f"{example}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# Seed {seed} (../shared/seeds/{SEED_FILES[seed]}), example {number}")


@pytest.mark.parametrize("example", sorted(REFERENCES))
def test_same_network_as_the_seed(example: str) -> None:
    model = plait_model(example)
    reference = REFERENCES[example]()
    assert_same_network(model, reference)
    assert trainable(model) == PARAMETERS[example]


@pytest.mark.parametrize("example", sorted(REFERENCES))
def test_trains_an_epoch_and_predicts(example: str) -> None:
    spec = load_spec(SEEDS / f"{example}.yaml")
    model = compile_model(plait_model(example), spec)
    rows = 8
    x = arrays_for(model, rows)
    history = model.fit(x, targets_for(model, rows), epochs=1, batch_size=rows, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predicted = model.predict(x, batch_size=rows, verbose=0)
    for out in spec.outputs:
        width = 10 if example == "004-2" else 1
        assert predicted[out.name].shape == (rows, width)
        assert np.isfinite(predicted[out.name]).all()


# -- the seeds' mistakes, repeated in a config, are refused clearly ---------------------


def seed_config(example: str) -> dict:
    return yaml.safe_load((SEEDS / f"{example}.yaml").read_text(encoding="utf-8"))


def test_average_of_one_tensor_is_refused_with_the_fix() -> None:
    config = seed_config("003-2")
    config["inputs"][0].pop("reduce")
    config["merge"] = [
        {"name": "averaged_sensors", "strategy": "average", "inputs": ["sensor_input"]},
        {"name": "merged", "strategy": "concat", "inputs": ["time_series_input", "averaged_sensors"]},
    ]
    with pytest.raises(ConfigError) as error:
        load_spec(config)
    message = str(error.value)
    assert "merge[0].inputs: found ['sensor_input']; an average merge needs at least two" in message
    assert "set inputs[0].reduce: mean" in message


def test_mask_declared_beside_optional_is_refused() -> None:
    config = seed_config("004-3")
    config["inputs"].insert(1, {"name": "input_b_mask", "type": "vector", "size": 1})
    with pytest.raises(ConfigError) as error:
        load_spec(config)
    message = str(error.value)
    assert "inputs[1].name: found 'input_b_mask', the name of the presence mask" in message
    assert "inputs[2] (optional: true)" in message


def test_mask_declared_twice_is_refused() -> None:
    config = seed_config("004-3")
    config["inputs"][1].pop("optional")
    mask = {"name": "input_b_mask", "type": "vector", "size": 1}
    config["inputs"] += [dict(mask), dict(mask)]
    with pytest.raises(ConfigError, match=r"inputs\[3\].name: found 'input_b_mask', already the name "
                                          r"of inputs\[2\].name"):
        load_spec(config)


def test_lambda_merge_is_refused_with_the_strategies() -> None:
    config = seed_config("002-3")
    config["merge"] = {"strategy": "lambda"}
    with pytest.raises(ConfigError, match=r"merge.strategy: found 'lambda'; expected one of 'concat', "
                                          r"'add', 'average', 'multiply', 'maximum', 'attention' or "
                                          r"'gated'"):
        load_spec(config)


def test_one_hot_loss_for_labels_is_refused() -> None:
    # Seed 004, example 2 trains with categorical_crossentropy, which needs one-hot targets;
    # a category output takes the labels and its loss is not a key of the config.
    config = seed_config("004-2")
    config["outputs"][0]["loss"] = "categorical_crossentropy"
    with pytest.raises(ConfigError, match=r"outputs\[0\].loss: unknown key; allowed keys here: activation, "
                                          r"calibrate, class_weight, classes"):
        load_spec(config)


def test_independent_outputs_need_no_merge() -> None:
    config = seed_config("003-3")
    del config["merge"]
    with pytest.raises(ConfigError, match=r"set merge: \[\] for a model without a merge"):
        load_spec(config)
    config["merge"] = []
    config["outputs"][0].pop("from")
    with pytest.raises(ConfigError, match=r"outputs\[0\].from: missing; with merge: \[\]"):
        load_spec(config)


# -- the new options, end to end through plait.Model ----------------------------------


def test_optional_input_mask_comes_from_missing_rows() -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = 40
    frame = pd.DataFrame({
        "input_a": [rng.normal(size=10).tolist() for _ in range(rows)],
        "input_b": [None if i % 4 == 0 else rng.normal(size=5).tolist() for i in range(rows)],
        "target": rng.normal(size=rows),
    })
    config = seed_config("004-3")
    config["train"] = {"epochs": 1, "batch_size": 64, "validation_split": 0.0}
    model = plait.Model(config, verbose=0).fit(frame)
    from plait.data import read_table
    from plait.preprocess import encode_inputs

    encoded = encode_inputs(model.spec, model.states_, read_table(frame)).inputs
    assert encoded["input_b_mask"].ravel().tolist() == [0.0 if i % 4 == 0 else 1.0 for i in range(rows)]
    # an absent input_b contributes nothing, whatever values stand in for it
    changed = dict(encoded, input_b=encoded["input_b"] + 100.0)
    absent = encoded["input_b_mask"].ravel() == 0
    before = model.keras_model.predict(encoded, verbose=0)["target"][absent]
    after = model.keras_model.predict(changed, verbose=0)["target"][absent]
    np.testing.assert_allclose(before, after, rtol=1e-6)
    assert len(model.predict(frame)) == rows


def test_reduce_mean_averages_the_elements() -> None:
    model = plait_model("003-2")
    probe = keras.Model(model.get_layer("sensor_input").output, model.get_layer("sensor_input_mean").output)
    readings = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]], np.float32)
    np.testing.assert_allclose(np.asarray(probe(readings)), [[3.0], [1.0]])


def test_declared_classes_are_checked_against_the_data() -> None:
    import pandas as pd

    spec = {"inputs": [{"name": "x", "type": "number"}],
            "outputs": [{"name": "label", "type": "category", "classes": 3}],
            "train": {"epochs": 1, "validation_split": 0.0}}
    frame = pd.DataFrame({"x": np.arange(8.0), "label": ["a", "b"] * 4})
    with pytest.raises(DataError, match=r"found 2 distinct labels \['a', 'b'\]; expected 3"):
        plait.Model(spec, verbose=0).fit(frame)
