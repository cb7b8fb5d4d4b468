"""The text ``bag`` encoder: word n-grams weighted by TF-IDF (or presence, or count) as
(id, weight) pairs, read by a linear layer.

The encoded values are checked against a hand computation on a tiny corpus; a small model
learns a signal only word pairs carry, saves, loads and predicts the same, and its
``plait code`` script builds a model with the same parameters.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import plait
from conftest import fit, train_block
from plait.codegen import generate
from plait.data import Table
from plait.encoders.bag import stable_hash
from plait.errors import ConfigError
from plait.spec import load_spec

TRAIN = ["Good fit", "good good fabric", "bad fit", None]


def text_input(**encoder: object) -> plait.Spec:
    spec = load_spec({"inputs": [{"name": "review", "type": "text", "encoder": {"kind": "bag", **encoder}}],
                      "outputs": [{"name": "y", "type": "binary"}]})
    return spec.inputs[0]


def table(texts: list) -> Table:
    return Table(pa.table({"review": pa.array(texts, pa.string())}), "data.parquet")


def pairs(values: np.ndarray, vocabulary: list[str]) -> list[dict[str, float]]:
    """Each row's n-grams (by text) with their weights."""
    return [{vocabulary[int(i) - 1]: float(w) for i, w in row if i > 0} for row in values]


def idf(frequency: int, rows: int = 4) -> float:
    return math.log((1 + rows) / (1 + frequency)) + 1


def test_vocabulary_and_tfidf_weights_by_hand() -> None:
    review = text_input(ngrams=2)
    state = review.fit(table(TRAIN)).bag
    # document frequency first, then byte order; "fit good" and "fabric bad" would cross rows
    assert state.vocabulary == ["fit", "good", "bad", "bad fit", "fabric", "good fabric", "good fit",
                                "good good"]
    assert state.frequency == [2, 2, 1, 1, 1, 1, 1, 1]
    assert state.rows == 4 and state.slots == 4  # "good good fabric": 4 distinct n-grams
    encoded = review.encode(table(["fit good fit", "great fit", None, ""]), review.fit(table(TRAIN)))
    assert encoded.values.shape == (4, 4, 2) and encoded.values.dtype == np.float32
    # "fit good" (row 0), "great" and "great fit" (row 1) are outside the vocabulary
    assert encoded.unseen == 3
    np.testing.assert_array_equal(encoded.missing, [False, False, True, False])
    raw = {"fit": (1 + math.log(2)) * idf(2), "good": idf(2), "good fit": idf(1)}
    norm = math.sqrt(sum(value**2 for value in raw.values()))
    got = pairs(encoded.values, state.vocabulary)
    assert got[0].keys() == raw.keys()
    for gram, value in raw.items():
        assert got[0][gram] == pytest.approx(value / norm, rel=1e-6)
    assert got[1] == {"fit": pytest.approx(1.0)}
    assert got[2] == {} and got[3] == {}
    np.testing.assert_array_equal(encoded.values[2], review.neutral(review.fit(table(TRAIN))))
    # a row within its slots keeps id order: the most frequent n-grams first
    assert [state.vocabulary[int(i) - 1] for i in encoded.values[0, :3, 0]] == ["fit", "good", "good fit"]
    assert np.linalg.norm(encoded.values[0, :, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize(("weighting", "normalize", "expected"), [
    ("binary", False, {"good": 1.0, "fabric": 1.0, "good good": 1.0, "good fabric": 1.0}),
    ("count", False, {"good": 2.0, "fabric": 1.0, "good good": 1.0, "good fabric": 1.0}),
    ("count", True, {"good": 2 / 7**0.5, "fabric": 1 / 7**0.5, "good good": 1 / 7**0.5,
                     "good fabric": 1 / 7**0.5}),
    ("binary", True, {"good": 0.5, "fabric": 0.5, "good good": 0.5, "good fabric": 0.5}),
])
def test_binary_and_count_weighting(weighting: str, normalize: bool, expected: dict) -> None:
    review = text_input(weighting=weighting, normalize=normalize)
    state = review.fit(table(TRAIN))
    got = pairs(review.encode(table(["good good fabric"]), state).values, state.bag.vocabulary)
    assert got == [{gram: pytest.approx(value) for gram, value in expected.items()}]


def test_unigrams_only_and_min_frequency() -> None:
    review = load_spec({"inputs": [{"name": "review", "type": "text", "min_frequency": 2, "lowercase": False,
                                    "encoder": {"kind": "bag", "ngrams": 1}}],
                        "outputs": [{"name": "y", "type": "binary"}]}).inputs[0]
    state = review.fit(table(TRAIN))
    assert state.bag.vocabulary == ["fit"]  # "Good" and "good" are two words, in one row each
    encoded = review.encode(table(["Good good fit"]), state)
    assert encoded.unseen == 2 and pairs(encoded.values, state.bag.vocabulary) == [{"fit": 1.0}]


def test_n_grams_past_the_vocabulary_share_hash_buckets() -> None:
    review = text_input(ngrams=2, max_features=2, hash_buckets=3)
    state = review.fit(table(TRAIN))
    bag = state.bag
    assert bag.vocabulary == ["fit", "good"] and bag.size == 1 + 2 + 3
    rest = ["bad", "bad fit", "fabric", "good fabric", "good fit", "good good"]
    bucket = {gram: 3 + int(value % 3) for gram, value in zip(rest, stable_hash(pa.array(rest)).tolist(),
                                                               strict=True)}
    rows_with = {}  # document frequency of each bucket on the training rows
    for row_grams in [{"good fit"}, {"good good", "good fabric", "fabric"}, {"bad", "bad fit"}]:
        for found in {bucket[gram] for gram in row_grams}:
            rows_with[found] = rows_with.get(found, 0) + 1
    assert bag.frequency == [2, 2] + [rows_with.get(3 + b, 0) for b in range(3)]
    encoded = review.encode(table(["bad fit", "awful fit"]), state)
    ids = [sorted(int(i) for i in row[:, 0] if i > 0) for row in encoded.values]
    assert ids[0] == sorted({1, bucket["bad"], bucket["bad fit"]})
    # n-grams never seen in training hash alike; all of them count as unseen
    unseen_buckets = {3 + int(v % 3) for v in stable_hash(pa.array(["awful", "awful fit"])).tolist()}
    assert set(ids[1]) == {1} | unseen_buckets
    assert encoded.unseen == 4


def test_rows_keep_their_heaviest_n_grams_in_slots_never_a_vocabulary_wide_matrix() -> None:
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(3000)])
    texts = [" ".join(rng.choice(words, 40)) for _ in range(300)]
    review = text_input(ngrams=2, slots=16)
    state = review.fit(table(texts))
    assert len(state.bag.vocabulary) > 10000
    encoded = review.encode(table(texts), state)
    assert encoded.values.shape == (300, 16, 2)
    full = text_input(ngrams=2).encode(table(texts), text_input(ngrams=2).fit(table(texts))).values
    # the kept weights are the 16 largest of the row, heaviest first, normalised over all of
    # its n-grams
    np.testing.assert_allclose(encoded.values[:, :, 1], -np.sort(-full[:, :, 1], axis=1)[:, :16], rtol=1e-6)
    assert np.linalg.norm(full[:, :, 1], axis=1) == pytest.approx(np.ones(300))


def test_a_sequence_input_refuses_a_bag() -> None:
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.encoder: found kind 'bag', which reads the words of "
                                          r"a text input; expected one of 'mean', "):
        load_spec({"inputs": [{"name": "s", "type": "sequence", "encoder": {"kind": "bag"}}],
                   "outputs": [{"name": "y", "type": "binary"}]})


def test_text_keys_a_bag_does_not_use_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"inputs\[0\]: found embedding_dim 8, length 20, which a bag "):
        load_spec({"inputs": [{"name": "t", "type": "text", "length": 20, "embedding_dim": 8,
                               "encoder": {"kind": "bag"}}], "outputs": [{"name": "y", "type": "binary"}]})


# -- a model ------------------------------------------------------------------------------

FILLER = [f"word{i}" for i in range(40)]


def reviews(rows: int, seed: int) -> pd.DataFrame:
    """Both classes hold "good" and "day" once each; only their order, the pair "good day"
    or "day good", tells the label: a signal no single word carries."""
    rng = np.random.default_rng(seed)
    label = rng.random(rows) < 0.5
    texts = []
    for positive in label:
        words = list(rng.choice(FILLER, 6))
        at = int(rng.integers(0, 7))
        words[at:at] = ["good", "day"] if positive else ["day", "good"]
        texts.append(" ".join(words))
    return pd.DataFrame({"review": texts, "y": label.astype(int)})


SPEC = {"inputs": [{"name": "review", "type": "text", "encoder": {"kind": "bag", "ngrams": 2, "units": 4}}],
        "outputs": [{"name": "y", "type": "binary"}],
        "train": train_block(epochs=40, learning_rate=0.05)}


@pytest.fixture(scope="module")
def trained() -> plait.Model:
    return fit(SPEC, reviews(400, 0))


def test_a_bag_learns_what_only_word_pairs_tell(trained: plait.Model) -> None:
    scores = trained.evaluate(reviews(200, 1))["y"]
    assert scores["accuracy"] >= scores["baseline"]["accuracy"] + 0.2, scores
    layer = trained.keras_model.get_layer("review_bag")
    assert type(layer).__name__ == "WeightedBag"
    assert layer.table.shape == (trained.states_["review"].bag.size, 4)


def test_saved_and_loaded_it_predicts_the_same(trained: plait.Model, tmp_path: Path) -> None:
    held_out = reviews(50, 2)
    again = plait.load(trained.save(tmp_path / "bundle"))
    pd.testing.assert_frame_equal(again.predict(held_out), trained.predict(held_out))


def test_its_plait_code_script_has_the_same_parameters(trained: plait.Model, tmp_path: Path) -> None:
    import keras

    from plait.layers.bag import WeightedBag

    script = tmp_path / "model.py"
    script.write_text(generate(trained.spec, trained.states_, model=trained.keras_model))
    text = script.read_text()
    assert "class WeightedBag(keras.layers.Layer)" in text
    assert "import plait" not in text and "from plait" not in text
    try:
        built = runpy.run_path(str(script), run_name="generated_script")["model"]
    finally:
        # the script registers its own copy of the class under plait's name
        keras.saving.register_keras_serializable(package="plait")(WeightedBag)
    assert built.count_params() == trained.keras_model.count_params()
    assert [type(layer).__name__ for layer in built.layers] == \
        [type(layer).__name__ for layer in trained.keras_model.layers]
