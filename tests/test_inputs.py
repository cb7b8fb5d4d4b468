"""Every input type: the arrays its encoder makes from raw columns (with statistics from the
training rows only), the Keras input and branch it gets, and that a model reading that
input alone learns a signal planted in synthetic data.

To pay JAX's compilation once, one model holds every input with ``merge: []`` and one
output per input, each reading only its own input's branch with ``from``: the branches
share no weights, so every output is a model on that input alone, scored on held-out rows
against the majority class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import fit, layer_names, png_bytes, train_block, write_png
from plait.data import read_table
from plait.preprocess import encode_inputs
from plait.spec import load_spec

TRAIN_ROWS = 240


def encoder(*inputs: dict, train: pd.DataFrame | str | Path) -> tuple:
    """The states of these inputs fitted on ``train``, and a function encoding any table with
    them."""
    spec = load_spec({"inputs": list(inputs), "merge": [] if len(inputs) > 1 else {},
                      "outputs": [{"name": f"{s['name']}_out", "type": "binary", "from": s["name"]}
                                  for s in inputs]})
    states = {s.name: s.fit(read_table(train)) for s in spec.inputs}

    def encode(data: pd.DataFrame | str | Path) -> dict[str, np.ndarray]:
        return encode_inputs(spec, states, read_table(data)).inputs

    return states, encode


def input_shapes(model: object) -> dict[str, tuple]:
    return {tensor.name: tuple(tensor.shape) for tensor in model.keras_model.inputs}  # type: ignore[attr-defined]


# -- number -------------------------------------------------------------------------


def test_number_standard_scaling_uses_training_statistics_only() -> None:
    train = pd.DataFrame({"n": [2.0, 4.0, 6.0, 8.0], "y": [0, 1, 0, 1]})
    states, encode = encoder({"name": "n", "type": "number"}, train=train)
    mean, std = 5.0, np.std([2.0, 4.0, 6.0, 8.0])
    assert states["n"].shift == mean and states["n"].divide == pytest.approx(std)
    # new rows are scaled with the training mean and deviation, not their own
    encoded = encode(pd.DataFrame({"n": [5.0, 100.0, -3.0]}))["n"]
    assert encoded.dtype == np.float32 and encoded.shape == (3, 1)
    np.testing.assert_allclose(encoded.ravel(), [0.0, 95 / std, -8 / std], rtol=1e-6)


def test_number_minmax_scaling_and_each_fill_policy() -> None:
    train = pd.DataFrame({"n": [1.0, 2.0, 10.0, np.nan, np.inf], "y": [0, 1, 0, 1, 0]})
    probe = pd.DataFrame({"n": [1.0, 10.0, np.nan, -np.inf]})
    states, encode = encoder({"name": "n", "type": "number", "scale": "minmax"}, train=train)
    # non-finite training values count neither in the statistics nor in the range
    assert (states["n"].shift, states["n"].divide) == (1.0, 9.0)
    filled = (13 / 3 - 1) / 9  # missing values take the mean of 1, 2 and 10, then are scaled
    np.testing.assert_allclose(encode(probe)["n"].ravel(), [0.0, 1.0, filled, filled], rtol=1e-6)
    expected_fill = {"mean": 13 / 3, "median": 2.0, "zero": 0.0, 7.5: 7.5}
    for fill, value in expected_fill.items():
        _, encode = encoder({"name": "n", "type": "number", "scale": "none", "fill": fill}, train=train)
        np.testing.assert_allclose(encode(probe)["n"].ravel(), [1.0, 10.0, value, value], rtol=1e-6)


# -- vector -------------------------------------------------------------------------


def test_vector_from_columns_scales_each_element_with_its_own_statistics() -> None:
    train = pd.DataFrame({"a": [0.0, 2.0, 4.0], "b": [10.0, 10.0, 40.0], "y": [0, 1, 0]})
    states, encode = encoder({"name": "v", "type": "vector", "columns": ["a", "b"]}, train=train)
    assert states["v"].size == 2 and states["v"].shift == [2.0, 20.0]
    encoded = encode(pd.DataFrame({"a": [2.0, 4.0], "b": [20.0, np.nan]}))["v"]
    std_a, std_b = np.std([0.0, 2.0, 4.0]), np.std([10.0, 10.0, 40.0])
    assert states["v"].divide == pytest.approx([std_a, std_b])
    # a missing element takes its training mean, which scales to 0
    np.testing.assert_allclose(encoded, [[0.0, 0.0], [2 / std_a, 0.0]], rtol=1e-6)


def test_vector_from_a_list_column_and_reshaped_from_nested_lists() -> None:
    train = pd.DataFrame({"v": [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]],
                          "grid": [[[1, 2, 3], [4, 5, 6]], [[6, 5, 4], [3, 2, 1]]], "y": [0, 1]})
    states, encode = encoder({"name": "v", "type": "vector", "scale": "minmax"},
                             {"name": "grid", "type": "vector", "shape": [2, 3], "scale": "none"},
                             train=train)
    assert states["v"].size == 3 and states["grid"].size == 6
    encoded = encode(train)
    np.testing.assert_allclose(encoded["v"], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert encoded["grid"].shape == (2, 2, 3)
    np.testing.assert_array_equal(encoded["grid"][0], [[1, 2, 3], [4, 5, 6]])  # row-major


# -- category -----------------------------------------------------------------------


def test_category_vocabulary_most_frequent_first_with_the_oov_slot_at_zero() -> None:
    train = pd.DataFrame({"c": ["b", "a", "b", "c", "b", "a", "rare"], "y": [0, 1] * 3 + [0]})
    states, encode = encoder({"name": "c", "type": "category", "min_frequency": 2}, train=train)
    assert states["c"].vocabulary == ["b", "a"]  # "c" and "rare" seen once: below min_frequency
    encoded = encode(pd.DataFrame({"c": ["a", "b", "c", "never", None]}))["c"]
    assert encoded.dtype == np.int32 and encoded.shape == (5, 1)
    np.testing.assert_array_equal(encoded.ravel(), [2, 1, 0, 0, 0])


def test_category_of_integers_reads_them_as_labels() -> None:
    train = pd.DataFrame({"c": [30, 7, 30, 100], "y": [0, 1, 0, 1]})
    states, encode = encoder({"name": "c", "type": "category"}, train=train)
    assert states["c"].vocabulary == ["30", "100", "7"]  # ties in sorted (text) order
    np.testing.assert_array_equal(encode(pd.DataFrame({"c": [7, 100, 30, 8]}))["c"].ravel(),
                                  [3, 2, 1, 0])


# -- binary -------------------------------------------------------------------------


def test_binary_flags_with_the_positive_value_and_the_training_rate_for_missing() -> None:
    train = pd.DataFrame({"f": ["no", "yes", "yes", "yes", None], "y": [0, 1, 0, 1, 0]})
    states, encode = encoder({"name": "f", "type": "binary"}, train=train)
    assert (states["f"].levels, states["f"].fill) == (["no", "yes"], 0.75)
    np.testing.assert_allclose(encode(pd.DataFrame({"f": ["yes", "no", None]}))["f"].ravel(),
                               [1.0, 0.0, 0.75])
    _, encode = encoder({"name": "f", "type": "binary", "positive": "no"}, train=train)
    np.testing.assert_allclose(encode(pd.DataFrame({"f": ["yes", "no"]}))["f"].ravel(), [0.0, 1.0])
    _, encode = encoder({"name": "f", "type": "binary"},
                        train=pd.DataFrame({"f": [True, False, True], "y": [0, 1, 0]}))
    np.testing.assert_allclose(encode(pd.DataFrame({"f": [False, True]}))["f"].ravel(), [0.0, 1.0])


# -- text ---------------------------------------------------------------------------


def test_text_tokens_vocabulary_ids_padding_and_truncation() -> None:
    train = pd.DataFrame({"t": ["Good, good food!", "bad food", "It's GOOD"], "y": [1, 0, 1]})
    states, encode = encoder({"name": "t", "type": "text", "length": 4}, train=train)
    assert states["t"].vocabulary == ["good", "food", "bad", "it's"]
    encoded = encode(pd.DataFrame({"t": ["food is good", "", None, "bad bad bad bad bad good"]}))["t"]
    assert encoded.dtype == np.int32 and encoded.shape == (4, 4)
    # ids: 0 padding, 1 unknown, then the vocabulary from 2; an empty text is one unknown word
    np.testing.assert_array_equal(encoded, [[3, 1, 2, 0], [1, 0, 0, 0], [1, 0, 0, 0], [4, 4, 4, 4]])


def test_text_length_defaults_to_the_95th_percentile_and_vocabulary_is_capped() -> None:
    texts = ["w"] * 19 + ["a b c d e f g h i j"]  # 95th percentile of lengths 1 × 19, 10
    train = pd.DataFrame({"t": texts, "y": [0, 1] * 10})
    states, _ = encoder({"name": "t", "type": "text"}, train=train)
    assert states["t"].length == int(np.percentile([1] * 19 + [10], 95))
    states, _ = encoder({"name": "t", "type": "text", "vocabulary_size": 4}, train=train)
    assert states["t"].vocabulary == ["w", "a"]  # two slots go to padding and unknown


# -- image --------------------------------------------------------------------------


def test_image_pixels_are_scaled_to_unit_range_and_resized(tmp_path: Path) -> None:
    write_png(tmp_path / "pics" / "solid.png", np.full((8, 12), 51, np.uint8))
    frame = pd.DataFrame({"p": ["pics/solid.png"], "b": [png_bytes(np.full((5, 3, 3), [255, 0, 102]))],
                          "y": [1]})
    frame.to_parquet(tmp_path / "data.parquet")
    _, encode = encoder({"name": "p", "type": "image", "size": [4, 6], "channels": 1},
                        {"name": "b", "type": "image", "size": [2, 2]}, train=tmp_path / "data.parquet")
    encoded = encode(tmp_path / "data.parquet")
    assert encoded["p"].shape == (1, 4, 6, 1) and encoded["p"].dtype == np.float32
    np.testing.assert_allclose(encoded["p"], 0.2, rtol=1e-6)  # 51 / 255
    assert encoded["b"].shape == (1, 2, 2, 3)
    np.testing.assert_allclose(encoded["b"].reshape(-1, 3), [[1.0, 0.0, 0.4]] * 4, atol=1e-6)


def test_image_paths_resolve_against_the_data_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           data_files: tuple[Path, Path]) -> None:
    monkeypatch.chdir(tmp_path)  # nowhere near the images
    train, _ = data_files
    assert not Path(pd.read_parquet(train)["path"][0]).is_absolute()
    _, encode = encoder({"name": "path", "type": "image", "size": [24, 24], "channels": 1}, train=train)
    first = encode(train)["path"][0, :, :, 0]
    assert first.max() == pytest.approx(250 / 255) and (first == first.max()).sum() >= 24 * 3


# -- sequence -----------------------------------------------------------------------


def test_sequence_steps_padded_or_cut_and_each_feature_standardised() -> None:
    train = pd.DataFrame({"s": [[[1.0, 10.0], [3.0, 30.0]], [[5.0, 50.0]]], "y": [0, 1]})
    states, encode = encoder({"name": "s", "type": "sequence"}, train=train)
    assert (states["s"].steps, states["s"].features) == (2, 2)  # the longest training row
    assert states["s"].shift == [3.0, 30.0]
    std = np.std([1.0, 3.0, 5.0])
    encoded = encode(pd.DataFrame({"s": [[[3.0, 30.0]], [[5.0, 30.0], [1.0, 30.0], [9.0, 9.0]]]}))["s"]
    assert encoded.shape == (2, 2, 2) and encoded.dtype == np.float32
    # shorter rows padded with zeros at the end; longer ones cut to the training steps
    np.testing.assert_allclose(encoded, [[[0.0, 0.0], [0.0, 0.0]],
                                         [[2 / std, 0.0], [-2 / std, 0.0]]], rtol=1e-6)
    _, encode = encoder({"name": "s", "type": "sequence", "steps": 3, "scale": "none"},
                        train=pd.DataFrame({"s": [[1.0, 2.0], [4.0]], "y": [0, 1]}))
    np.testing.assert_array_equal(encode(pd.DataFrame({"s": [[7.0]]}))["s"], [[[7.0], [0.0], [0.0]]])




# -- every input type, trained ------------------------------------------------------


def tabular_frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Each input column carries its own signal about its own target column."""
    n = rng.normal(3.0, 2.0, rows)
    cols = rng.normal(size=(rows, 3))
    listed = rng.normal(size=(rows, 4))
    grid = rng.normal(size=(rows, 2, 3))
    colour = rng.choice(["red", "green", "blue", "grey", "pink", "teal"], rows)
    code = rng.choice([3, 17, 42, 99], rows)
    flag = rng.random(rows) < 0.5
    return pd.DataFrame({
        "n": n, "y_n": n > 3.5,
        "c0": cols[:, 0], "c1": cols[:, 1], "c2": cols[:, 2], "y_cols": cols[:, 0] - cols[:, 1] > 0,
        "listed": list(listed), "y_listed": listed[:, 2] + listed[:, 3] > 0,
        "grid": [g.tolist() for g in grid], "y_grid": grid[:, 1, 2] > 0,
        "colour": colour, "y_colour": np.isin(colour, ["red", "grey", "teal"]),
        "code": code, "y_code": np.isin(code, [3, 99]),
        "flag": np.where(flag, "yes", "no"), "y_flag": flag,
    })


def date_frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Moments with a time zone, labelled by whether it is the weekend there; ISO dates
    labelled by whether they fall in summer."""
    when = pd.to_datetime(rng.integers(1_577_836_800, 1_735_689_600, rows), unit="s", utc=True)
    local = when.tz_convert("America/New_York")
    day = pd.to_datetime(rng.integers(18_262, 20_089, rows), unit="D")
    return pd.DataFrame({"when": local, "y_when": local.dayofweek >= 5,
                         "day": day.strftime("%Y-%m-%d"), "y_day": day.month.isin([6, 7, 8])})


def text_frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Filler words with one word of sentiment at a random place; the label is that word's."""
    filler = np.array(["the", "a", "item", "was", "it", "this", "one", "my", "is", "and"])
    good, bad = ["great", "lovely", "perfect"], ["awful", "broken", "poor"]
    label = rng.random(rows) < 0.5
    texts = []
    for positive in label:
        words = list(rng.choice(filler, rng.integers(3, 8)))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(good if positive else bad)))
        texts.append(" ".join(words))
    return pd.DataFrame({"review": texts, "y_review": label})


def sequence_frame(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Two features over 6 to 10 steps; the label says whether the first one rises."""
    rising = rng.random(rows) < 0.5
    series = []
    for up in rising:
        steps = int(rng.integers(6, 11))
        trend = np.linspace(-1, 1, steps) * (1 if up else -1)
        series.append(np.stack([trend + rng.normal(0, 0.2, steps), rng.normal(size=steps)], 1).tolist())
    return pd.DataFrame({"series": series, "y_series": rising})


def bar_image(rng: np.random.Generator, left: bool, size: int = 24) -> np.ndarray:
    """Grey noise with a bright vertical bar in the left or right half."""
    pixels = rng.integers(0, 90, (size, size)).astype(np.uint8)
    column = int(rng.integers(2, size // 2 - 3)) + (0 if left else size // 2)
    pixels[:, column:column + 3] = 250
    return pixels


def image_frame(rows: int, rng: np.random.Generator, folder: Path) -> pd.DataFrame:
    """PNG files under ``folder/img`` named by relative paths, and RGB PNGs as bytes."""
    left = rng.random(rows) < 0.5
    paths = [write_png(folder / "img" / f"{row}.png", bar_image(rng, is_left)).relative_to(folder)
             for row, is_left in enumerate(left)]
    blobs = [png_bytes(np.stack([bar_image(rng, is_left)] * 3, axis=-1)) for is_left in left]
    return pd.DataFrame({"path": [str(path) for path in paths], "photo": blobs, "y_image": left})


TEXT_ENCODERS = {
    "t_mean": ({"kind": "mean"}, "GlobalAveragePooling1D"),
    "t_cnn": ({"kind": "cnn", "filters": 8, "kernel_size": 3}, "Conv1D"),
    "t_lstm": ({"kind": "lstm", "units": 8}, "LSTM"),
    "t_gru": ({"kind": "gru", "units": 8}, "GRU"),
    "t_bilstm": ({"kind": "lstm", "units": 8, "bidirectional": True}, "Bidirectional"),
}
SEQUENCE_ENCODERS = {
    "s_lstm": ({"kind": "lstm", "units": 8}, "LSTM"),
    "s_gru": ({"kind": "gru", "units": 8}, "GRU"),
    "s_cnn": ({"kind": "cnn", "filters": 8, "kernel_size": 3}, "Conv1D"),
}
IMAGE_ENCODER = {"filters": [6, 8], "kernel_size": 3, "pool": 2}

INPUTS = [  # each input config, with the target column it has a signal about
    ({"name": "n", "type": "number"}, "y_n"),
    ({"name": "cols", "type": "vector", "columns": ["c0", "c1", "c2"]}, "y_cols"),
    ({"name": "listed", "type": "vector", "size": 4}, "y_listed"),
    ({"name": "grid", "type": "vector", "shape": [2, 3]}, "y_grid"),
    ({"name": "colour", "type": "category", "embedding_dim": 3}, "y_colour"),
    ({"name": "code", "type": "category", "encoding": "onehot"}, "y_code"),
    ({"name": "flag", "type": "binary"}, "y_flag"),
    *[({"name": name, "column": "review", "type": "text", "length": 8, "embedding_dim": 8,
        "encoder": config}, "y_review") for name, (config, _) in TEXT_ENCODERS.items()],
    *[({"name": name, "column": "series", "type": "sequence", "encoder": config}, "y_series")
      for name, (config, _) in SEQUENCE_ENCODERS.items()],
    ({"name": "path", "type": "image", "size": [16, 16], "channels": 1, "encoder": IMAGE_ENCODER}, "y_image"),
    ({"name": "photo", "type": "image", "size": [16, 16],
      "encoder": {**IMAGE_ENCODER, "pooling": "max", "batch_norm": True}}, "y_image"),
    ({"name": "when", "type": "date"}, "y_when"),
    ({"name": "day", "type": "date"}, "y_day"),
]
HELD_OUT = 100


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Training and held-out Parquet files beside an ``img`` folder, with every kind of column."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    rows = TRAIN_ROWS + HELD_OUT
    frame = pd.concat([tabular_frame(rows, rng), text_frame(rows, rng), sequence_frame(rows, rng),
                       image_frame(rows, rng, folder), date_frame(rows, rng)], axis=1)
    targets = [column for column in frame.columns if column.startswith("y_")]
    frame[targets] = frame[targets].astype(int)
    frame.iloc[:TRAIN_ROWS].to_parquet(folder / "train.parquet")
    frame.iloc[TRAIN_ROWS:].to_parquet(folder / "test.parquet")
    return folder / "train.parquet", folder / "test.parquet"


@pytest.fixture(scope="module")
def trained(data_files: tuple[Path, Path]) -> tuple:
    """The model with one output per input, and its scores on the held-out file."""
    train, test = data_files
    spec = {
        "inputs": [config for config, _ in INPUTS],
        "merge": [],
        "outputs": [{"name": f"{config['name']}_out", "column": target, "type": "binary",
                     "from": config["name"], "layers": [8]} for config, target in INPUTS],
        "train": train_block(epochs=60, learning_rate=0.03),
    }
    model = fit(spec, train)
    return model, model.evaluate(test)


@pytest.mark.parametrize("name", [config["name"] for config, _ in INPUTS])
def test_a_model_on_each_input_alone_learns(trained: tuple, name: str) -> None:
    _, scores = trained
    accuracy, baseline = scores[f"{name}_out"]["accuracy"], scores[f"{name}_out"]["baseline"]["accuracy"]
    assert scores[f"{name}_out"]["rows"] == HELD_OUT
    assert accuracy >= baseline + 0.2, (accuracy, baseline)


def test_tabular_inputs_have_their_keras_shapes_and_layers(trained: tuple) -> None:
    model, _ = trained
    shapes = input_shapes(model)
    assert {name: shapes[name] for name in ("n", "cols", "listed", "grid", "colour", "code", "flag")} == {
        "n": (None, 1), "cols": (None, 3), "listed": (None, 4), "grid": (None, 2, 3),
        "colour": (None, 1), "code": (None, 1), "flag": (None, 1)}
    layers, keras_model = layer_names(model), model.keras_model
    assert layers["grid_reshape"] == "Reshape"
    assert keras_model.get_layer("grid_reshape").output.shape == (None, 6)
    assert layers["colour_embedding"] == "Embedding"
    assert keras_model.get_layer("colour_embedding").input_dim == 7  # 6 colours + the OOV slot
    assert keras_model.get_layer("colour_flatten").output.shape == (None, 3)
    assert layers["code_onehot"] == "CategoryEncoding"
    assert keras_model.get_layer("code_onehot").output.shape == (None, 5)  # 4 codes + the OOV slot
    # number, vector and binary values go to the output's own layers as they are
    assert keras_model.get_layer("n_out_dense_1").input.shape == (None, 1)
    assert keras_model.get_layer("cols_out_dense_1").input.shape == (None, 3)


def test_text_encoders_build_their_layers(trained: tuple) -> None:
    model, _ = trained
    layers, keras_model = layer_names(model), model.keras_model
    for name, (_, kind) in TEXT_ENCODERS.items():
        assert input_shapes(model)[name] == (None, 8)
        branch = [cls for layer, cls in layers.items()
                  if layer.startswith(name + "_") and not layer.startswith(name + "_out")]
        assert branch[0] == "Embedding" and kind in branch, (name, branch)
    assert keras_model.get_layer("t_bilstm_bilstm").output.shape == (None, 16)  # 8 units each way
    assert keras_model.get_layer("t_lstm_lstm").output.shape == (None, 8)
    assert keras_model.get_layer("t_cnn_max").output.shape == (None, 8)
    assert keras_model.get_layer("t_mean_mean").output.shape == (None, 8)
    # the averaging and recurrent encoders skip padding; the convolution reads it
    assert keras_model.get_layer("t_mean_embedding").mask_zero
    assert not keras_model.get_layer("t_cnn_embedding").mask_zero


def test_image_conv_stack_layers_and_shapes(trained: tuple) -> None:
    model, _ = trained
    shapes = input_shapes(model)
    assert (shapes["path"], shapes["photo"]) == ((None, 16, 16, 1), (None, 16, 16, 3))
    layers, keras_model = layer_names(model), model.keras_model
    assert [layers[f"path_{n}"] for n in ("conv_1", "pool_1", "conv_2", "pool_2", "flatten")] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten"]
    # 16 → convolution 14 → pooling 7 → convolution 5 → pooling 2: 2 × 2 × 8 values
    assert keras_model.get_layer("path_flatten").output.shape == (None, 32)
    assert layers["photo_norm_1"] == "BatchNormalization" and layers["photo_max"] == "GlobalMaxPooling2D"
    assert keras_model.get_layer("photo_max").output.shape == (None, 8)


def test_sequence_encoders_build_their_layers(trained: tuple) -> None:
    model, _ = trained
    layers = layer_names(model)
    for name, (_, kind) in SEQUENCE_ENCODERS.items():
        assert input_shapes(model)[name] == (None, 10, 2)  # the longest training row: 10 steps
        assert kind in {cls for layer, cls in layers.items() if layer.startswith(name + "_")}
    assert model.keras_model.get_layer("s_gru_gru").output.shape == (None, 8)
    assert model.keras_model.get_layer("s_cnn_conv").output.shape == (None, 10, 8)
