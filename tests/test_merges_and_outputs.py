"""Merges, named merge nodes, the head and the outputs: what each computes, which inputs
each output depends on, and predictions decoded back to the targets' own labels and units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import fit, layer_names, train_block
from plait.data import read_table
from plait.errors import ConfigError
from plait.graph import build
from plait.preprocess import encode_inputs, fit_states
from plait.spec import load_spec

ELEMENTWISE = {"add": np.add, "average": lambda a, b: (a + b) / 2, "multiply": np.multiply,
               "maximum": np.maximum}


def built(config: dict, frame: pd.DataFrame) -> tuple:
    """The Keras model plait builds for ``config`` with states fitted on ``frame``, untrained,
    and ``frame`` encoded for it."""
    spec = load_spec(config)
    table = read_table(frame)
    states = fit_states(spec, table)
    return build(spec, states), encode_inputs(spec, states, table).inputs


def two_vectors(strategy: str, sizes: tuple[int, int] = (3, 3), **merge: object) -> dict:
    return {"inputs": [{"name": "left", "type": "vector", "size": sizes[0], "scale": "none"},
                       {"name": "right", "type": "vector", "size": sizes[1], "scale": "none"}],
            "merge": {"strategy": strategy, **merge}, "outputs": [{"name": "y", "type": "number"}]}


def vector_frame(sizes: tuple[int, int] = (3, 3)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"left": list(rng.normal(size=(6, sizes[0]))),
                         "right": list(rng.normal(size=(6, sizes[1]))), "y": rng.normal(size=6)})


@pytest.mark.parametrize("strategy", ["concat", *ELEMENTWISE])
def test_each_merge_computes_its_operation_on_the_branches(strategy: str) -> None:
    import keras

    model, x = built(two_vectors(strategy), vector_frame())
    merged = model.get_layer("merged")
    probe = keras.Model(model.inputs, merged.output)
    result = np.asarray(probe({"left": x["left"], "right": x["right"]}))
    if strategy == "concat":
        assert type(merged).__name__ == "Concatenate"
        np.testing.assert_allclose(result, np.concatenate([x["left"], x["right"]], axis=1), rtol=1e-6)
    else:
        np.testing.assert_allclose(result, ELEMENTWISE[strategy](x["left"], x["right"]), rtol=1e-6)


def test_concat_joins_branches_of_different_widths() -> None:
    model, _ = built(two_vectors("concat", (2, 5)), vector_frame((2, 5)))
    assert model.get_layer("merged").output.shape == (None, 7)


@pytest.mark.parametrize("strategy", list(ELEMENTWISE))
def test_elementwise_merge_of_unequal_branches_names_each_branch_and_shape(strategy: str) -> None:
    with pytest.raises(ConfigError) as caught:
        built(two_vectors(strategy, (2, 5)), vector_frame((2, 5)))
    assert str(caught.value).startswith(
        f"merge.strategy: found {strategy!r}, which needs branches of equal shape; "
        "left has [2], right has [5]. Set merge.project to a width")


@pytest.mark.parametrize("strategy", list(ELEMENTWISE))
def test_project_brings_every_branch_to_the_common_width(strategy: str) -> None:
    model, _ = built(two_vectors(strategy, (2, 5), project=4), vector_frame((2, 5)))
    for branch, width in (("left", 2), ("right", 5)):
        projection = model.get_layer(f"merged_project_{branch}")
        assert type(projection).__name__ == "Dense" and projection.units == 4
        assert projection.input.shape == (None, width)
    assert model.get_layer("merged").output.shape == (None, 4)


# -- named merge nodes, the head, and three kinds of output, trained together ------------


SPEC = {
    "inputs": [
        {"name": "a", "type": "number"},
        {"name": "b", "type": "number"},
        {"name": "shop", "type": "category", "embedding_dim": 4},
    ],
    "merge": [
        {"name": "profile", "strategy": "concat", "inputs": ["a", "b"]},
        {"name": "everything", "strategy": "add", "inputs": ["profile", "shop"], "project": 8},
    ],
    "head": {"layers": [16, 8], "activation": "tanh", "dropout": 0.1, "batch_norm": True},
    "outputs": [
        {"name": "churn", "type": "binary", "from": "profile", "layers": [8]},
        {"name": "tier", "type": "category", "from": "shop", "weight": 0.5},
        {"name": "revenue", "type": "number", "weight": 2.0},
    ],
    "train": train_block(epochs=80, learning_rate=0.03),
}
TIERS = {"north": 30, "south": 2, "east": 10, "west": 2}  # integer labels, not in text order


def shops_frame(rows: int, seed: int) -> pd.DataFrame:
    """churn depends on a and b; tier on the shop; revenue, in dollars, on all three."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    shop = rng.choice(list(TIERS), rows)
    tier = np.array([TIERS[s] for s in shop])
    return pd.DataFrame({
        "a": a, "b": b, "shop": shop,
        "churn": np.where(a + b > 0, "churned", "stayed"),
        "tier": tier,
        "revenue": 5000 + 800 * a + 40 * tier + rng.normal(0, 50, rows),
    })


@pytest.fixture(scope="module")
def shops() -> tuple:
    frame = shops_frame(300, seed=8)
    return fit(SPEC, frame.iloc[:240]), frame.iloc[240:].reset_index(drop=True)


def test_each_output_depends_on_the_inputs_it_reads_and_no_others(shops: tuple) -> None:
    model, held_out = shops
    before = model.predict(held_out)
    reads = {"churn": {"a", "b"}, "tier": {"shop"}, "revenue": {"a", "b", "shop"}}
    order = np.random.default_rng(0).permutation(len(held_out))
    for column in ("a", "b", "shop"):
        shuffled = held_out.assign(**{column: held_out[column].to_numpy()[order]})
        after = model.predict(shuffled)
        for output, inputs in reads.items():
            probability = f"{output}_proba" if output == "churn" else output
            if output == "tier":
                probability = "tier_proba_30"
            changed = not np.array_equal(before[probability].to_numpy(), after[probability].to_numpy())
            assert changed == (column in inputs), (column, output)


def test_merge_nodes_and_projections_in_the_keras_graph(shops: tuple) -> None:
    model, _ = shops
    keras_model = model.keras_model
    layers = layer_names(model)
    assert layers["profile"] == "Concatenate" and layers["everything"] == "Add"
    assert keras_model.get_layer("profile").output.shape == (None, 2)
    assert keras_model.get_layer("everything_project_profile").input.shape == (None, 2)
    assert keras_model.get_layer("everything_project_shop").input.shape == (None, 4)
    assert keras_model.get_layer("everything").output.shape == (None, 8)
    # churn's tower starts at the profile node; tier reads the shop branch; revenue the head
    assert keras_model.get_layer("churn_dense_1").input.name == keras_model.get_layer("profile").output.name
    assert keras_model.get_layer("tier").input.name == keras_model.get_layer("shop_flatten").output.name
    assert keras_model.get_layer("revenue").input.name == keras_model.get_layer("head_dropout_2").output.name


def test_head_layers_with_units_activation_batch_norm_and_dropout(shops: tuple) -> None:
    model, _ = shops
    keras_model = model.keras_model
    head = [(layer.name, type(layer).__name__) for layer in keras_model.layers
            if layer.name.startswith("head_")]
    assert head == [("head_dense_1", "Dense"), ("head_norm_1", "BatchNormalization"),
                    ("head_activation_1", "Activation"), ("head_dropout_1", "Dropout"),
                    ("head_dense_2", "Dense"), ("head_norm_2", "BatchNormalization"),
                    ("head_activation_2", "Activation"), ("head_dropout_2", "Dropout")]
    assert [keras_model.get_layer(f"head_dense_{i}").units for i in (1, 2)] == [16, 8]
    # the activation comes after the normalisation, so the dense layers have none of their own
    assert keras_model.get_layer("head_dense_1").activation.__name__ == "linear"
    assert keras_model.get_layer("head_activation_1").activation.__name__ == "tanh"
    assert keras_model.get_layer("head_dropout_2").rate == 0.1
    final = {name: (keras_model.get_layer(name).units, keras_model.get_layer(name).activation.__name__)
             for name in ("churn", "tier", "revenue")}
    assert final == {"churn": (1, "sigmoid"), "tier": (3, "softmax"), "revenue": (1, "linear")}


def test_predict_columns_and_labels_decoded_in_their_own_type(shops: tuple) -> None:
    model, held_out = shops
    predicted = model.predict(held_out)
    assert predicted.columns.tolist() == ["churn", "churn_proba", "tier", "tier_proba_2", "tier_proba_10",
                                          "tier_proba_30", "revenue"]
    assert len(predicted) == len(held_out)
    assert set(predicted["churn"]) <= {"churned", "stayed"}
    assert all(type(label) is int for label in predicted["tier"]) and set(predicted["tier"]) <= {2, 10, 30}
    np.testing.assert_allclose(predicted.filter(like="tier_proba_").sum(axis=1), 1.0, rtol=1e-5)
    # the label shown is the class whose probability is highest, or past the threshold
    probabilities = predicted[["tier_proba_2", "tier_proba_10", "tier_proba_30"]].to_numpy()
    assert predicted["tier"].tolist() == [[2, 10, 30][i] for i in probabilities.argmax(axis=1)]
    positive = model.states_["churn"].labels[1]
    assert positive == "stayed"  # the later label in sorted order
    assert (predicted["churn"] == positive).tolist() == (predicted["churn_proba"] >= 0.5).tolist()


def test_outputs_learn_and_revenue_is_predicted_in_dollars(shops: tuple) -> None:
    model, held_out = shops
    scores = model.evaluate(held_out)
    assert scores["churn"]["accuracy"] >= scores["churn"]["baseline"]["accuracy"] + 0.3
    assert scores["tier"]["accuracy"] == 1.0 and scores["tier"]["baseline"]["accuracy"] < 0.6
    assert scores["revenue"]["mae"] < 0.3 * scores["revenue"]["baseline"]["mae"]
    assert scores["revenue"]["r2"] > 0.8
    predicted = model.predict(held_out)["revenue"]
    assert np.mean(np.abs(predicted - held_out["revenue"])) == pytest.approx(scores["revenue"]["mae"])


def test_number_target_is_learned_standardised_with_training_statistics(shops: tuple) -> None:
    model, _ = shops
    train = shops_frame(300, seed=8).iloc[:240]
    state = model.states_["revenue"]
    assert state.shift == pytest.approx(train["revenue"].mean())
    assert state.divide == pytest.approx(train["revenue"].std(ddof=0))
    # the raw output is in standard units: the model's own numbers are small
    raw, _ = model.predict_arrays(train)
    assert abs(float(np.mean(raw["revenue"]))) < 0.5 and 0.5 < float(np.std(raw["revenue"])) < 1.5


def test_each_output_has_its_loss_weight_and_metrics(shops: tuple) -> None:
    model, _ = shops
    history = model.history_
    assert {"churn_accuracy", "churn_auc", "tier_accuracy", "revenue_mae"} <= set(history)
    assert len(history["churn_auc"]) == SPEC["train"]["epochs"]
    # the total loss is the weighted sum of the outputs' losses
    total = (np.asarray(history["churn_loss"]) + 0.5 * np.asarray(history["tier_loss"])
             + 2.0 * np.asarray(history["revenue_loss"]))
    np.testing.assert_allclose(history["loss"], total, rtol=1e-4)
    assert history["churn_accuracy"][-1] > history["churn_accuracy"][0]


def test_binary_and_category_labels_as_integers_and_booleans() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=120)
    frame = pd.DataFrame({"x": x, "flag": x > 0, "level": np.where(x > 0.5, 7, np.where(x < -0.5, -1, 3))})
    spec = {"inputs": [{"name": "x", "type": "number"}],
            "outputs": [{"name": "flag", "type": "binary"}, {"name": "level", "type": "category"}],
            "head": {"layers": [8]}, "train": train_block(epochs=60, learning_rate=0.05)}
    model = fit(spec, frame)
    predicted = model.predict(frame)
    assert predicted.columns.tolist() == ["flag", "flag_proba", "level", "level_proba_-1", "level_proba_3",
                                          "level_proba_7"]
    assert all(type(value) is bool for value in predicted["flag"])
    assert all(type(value) is int for value in predicted["level"])
    assert np.mean(predicted["flag"] == frame["flag"]) > 0.9
    assert np.mean(predicted["level"] == frame["level"]) > 0.8
