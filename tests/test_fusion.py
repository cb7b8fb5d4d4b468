"""Fusion merges (``attention``, ``gated``), ``modality_dropout`` and the ``transformer``
encoder: each learns a signal on held-out rows, the gate leans towards the informative
branch and ``explain`` reports it, a dropped branch is exactly a missing input, the model
survives save and load, and ``plait code`` writes it as a Keras-only script.

One model holds them all, trained once: four outputs, each reading one part (a text
transformer with first-token pooling, a sequence transformer with mean pooling, a gated
node, an attention node with modality dropout), each with its own signal. The gate's
weights are checked on a model of the gated node alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import fit, train_block
from plait.errors import ConfigError
from plait.spec import load_spec

ROWS, HELD_OUT = 600, 200
DROP = 0.25
WORDS = ["fit", "size", "blue", "shirt", "fabric", "soft", "wash", "long", "short", "price"]
STEPS = 8

SPEC = {
    "inputs": [
        {"name": "review", "type": "text", "length": 6, "embedding_dim": 8,
         "encoder": {"kind": "transformer", "blocks": 1, "heads": 2, "units": 16, "pooling": "first"}},
        {"name": "motion", "type": "sequence",
         "encoder": {"kind": "transformer", "blocks": 1, "heads": 2, "units": 16}},
        {"name": "g_signal", "type": "number"},
        {"name": "g_noise", "type": "number"},
        {"name": "a_signal", "type": "category", "embedding_dim": 3, "optional": True},
        {"name": "a_noise", "type": "number"},
    ],
    "merge": [
        {"name": "gate", "strategy": "gated", "units": 8, "inputs": ["g_signal", "g_noise"]},
        {"name": "fused", "strategy": "attention", "units": 8, "heads": 2, "blocks": 1, "dropout": 0.0,
         "pooling": "first", "modality_dropout": DROP, "inputs": ["a_signal", "a_noise"]},
    ],
    "outputs": [
        {"name": "t", "type": "binary", "from": "review"},
        {"name": "s", "type": "binary", "from": "motion"},
        {"name": "g", "type": "number", "from": "gate"},
        {"name": "a", "type": "binary", "from": "fused"},
    ],
    "train": train_block(epochs=60, batch_size=200, learning_rate=0.01),
}


def frame(rows: int, seed: int) -> pd.DataFrame:
    """Each target has one source: a cue word anywhere in the text (``t``), whether the
    series rises or falls (``s``: the same values in the other order, so only positions
    tell), ``g_signal`` (``g``, a number: a gate switching between a noise token and the
    signal's could classify its sign with either branch weighted most, but a number needs
    the signal's value in every row) and the category ``a_signal`` (``a``; missing in a
    tenth of the rows)."""
    rng = np.random.default_rng(seed)
    t, s, a = (rng.integers(0, 2, rows) for _ in range(3))
    texts = []
    for label in t:
        words = list(rng.choice(WORDS, 5))
        words.insert(int(rng.integers(0, 6)), "good" if label else "bad")
        texts.append(" ".join(words))
    ramp = np.linspace(-1.0, 1.0, STEPS)
    motion = [list(np.where(rising, ramp, -ramp) + rng.normal(0, 0.3, STEPS) + rng.normal(0, 1))
              for rising in s]
    categories = np.where(a == 1, rng.choice(["p", "q"], rows), rng.choice(["u", "v"], rows)).astype(object)
    categories[rng.random(rows) < 0.1] = None
    g_signal = rng.normal(size=rows)
    return pd.DataFrame({
        "review": texts, "motion": motion,
        "g_signal": g_signal, "g_noise": rng.normal(size=rows),
        "a_signal": categories, "a_noise": rng.normal(size=rows),
        "t": t, "s": s, "g": 3 * g_signal + 1 + rng.normal(0, 0.1, rows), "a": a,
    })


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame(ROWS, 0), frame(HELD_OUT, 1)


@pytest.fixture(scope="module")
def model(data: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return fit(SPEC, data[0])


def encoded(model: Any, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    from plait.data import read_table
    from plait.preprocess import encode_inputs

    return encode_inputs(model.spec, model.states_, read_table(rows)).inputs


# -- learning ---------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["t", "s", "a"])
def test_each_part_learns_its_signal_on_held_out_rows(output: str, model: Any,
                                                      data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    held_out = data[1]
    truth = held_out[output].to_numpy()
    majority = max(truth.mean(), 1 - truth.mean())
    accuracy = (model.predict(held_out)[output].to_numpy().astype(int) == truth).mean()
    assert accuracy >= majority + 0.2, (output, accuracy, majority)


def test_the_gated_node_learns_its_number(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assert model.evaluate(data[1])["g"]["r2"] > 0.8


def test_layers_of_each_part(model: Any) -> None:
    kinds = {layer.name: type(layer).__name__ for layer in model.keras_model.layers}
    assert kinds["review_transformer_position"] == "PositionEmbedding"
    assert kinds["review_transformer_first"] == "FirstStep"
    assert kinds["motion_transformer_mean"] == "GlobalAveragePooling1D"
    assert kinds["motion_transformer_1_attention"] == "MultiHeadAttention"
    assert kinds["gate_gate"] == "Softmax" and kinds["gate"] == "Dot"
    assert kinds["fused_drop_a_signal"] == "ModalityDropout" and "fused_drop_a_noise" not in kinds
    assert kinds["fused_tokens"] == "Concatenate" and kinds["fused"] == "FirstStep"
    assert model.keras_model.get_layer("fused_tokens").output.shape == (None, 2, 8)
    assert model.keras_model.get_layer("gate").output.shape == (None, 8)


# -- the gate ---------------------------------------------------------------------------


GATED_SPEC = {
    "inputs": [{"name": "g_signal", "type": "number"}, {"name": "g_noise", "type": "number"}],
    "merge": {"name": "gate", "strategy": "gated", "units": 8},
    "outputs": [{"name": "g", "type": "number"}],
    "train": train_block(epochs=60, batch_size=200, learning_rate=0.01),
}


@pytest.fixture(scope="module")
def gated(data: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    """The gated node alone, explained on the held-out rows.

    Where the gate sits among other parts that fit their targets first, it may barely move
    from equal weights (the big model above, with some seeds): the gate is one way among
    others to fit, so its weights say where it leans, not what matters; the permutation
    drops do that."""
    model = fit(GATED_SPEC, data[0])
    model.explain(data[1], repeats=1)
    return model


def test_gate_leans_on_the_informative_branch_and_explain_reports_it(
        gated: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    result = gated.importance_
    gates = result["gates"]
    assert list(gates) == ["gate"] and list(gates["gate"]) == ["g_signal", "g_noise"]
    assert sum(gates["gate"].values()) == pytest.approx(1.0, abs=1e-5)
    assert gates["gate"]["g_signal"] > 0.75 > 0.25 > gates["gate"]["g_noise"]
    assert {"data", "rows", "repeats", "seed", "metrics", "reference", "inputs"} <= set(result)
    assert result["inputs"]["g_signal"]["g"]["permutation"]["mean"] > 0.5
    # the same means as reading the gate layer directly
    import keras

    keras_model = gated.keras_model
    probe = keras.Model(keras_model.input, keras_model.get_layer("gate_gate").output)
    weights = probe.predict(encoded(gated, data[1]), verbose=0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights.mean(axis=0), list(gates["gate"].values()), rtol=1e-5)


def test_no_gates_without_a_gated_node(model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    from types import SimpleNamespace

    from plait.explain import gate_weights
    from plait.graph import build
    from plait.model import placeholder_states

    spec = load_spec({"inputs": TWO, "merge": {"strategy": "add"},
                      "outputs": [{"name": "y", "type": "binary"}]})
    unfitted = SimpleNamespace(spec=spec, keras_model=build(spec, placeholder_states(spec)))
    assert gate_weights(unfitted, {}) == {}
    assert set(gate_weights(model, encoded(model, data[1]))) == {"gate"}


def test_the_report_shows_the_gate_weights(gated: Any) -> None:
    from plait.report import render

    page = render(gated, None, "held-out rows", {"importance.png": b"", "model.png": b""})
    table = page[page.index("<h3>Gate weights</h3>"):]
    weight = gated.importance_["gates"]["gate"]["g_signal"]
    assert "<td>gate</td><td>g_signal</td>" in table and f"{weight:.4f}" in table


# -- modality dropout -------------------------------------------------------------------


def test_a_dropped_branch_is_a_missing_input_in_training_and_nothing_drops_in_inference(
        model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    x = encoded(model, data[0])
    x["a_signal_mask"] = np.ones_like(x["a_signal_mask"])
    missing = {**x, "a_signal_mask": np.zeros_like(x["a_signal_mask"])}
    import keras

    # the part of the model that output ``a`` reads, so that each eager call runs only it
    keras_model = model.keras_model
    names = ["a_signal", "a_signal_mask", "a_noise"]
    path = keras.Model({name: keras_model.input[name] for name in names}, keras_model.get_layer("a").output)

    def a(inputs: dict, training: bool) -> np.ndarray:
        return np.asarray(path({name: inputs[name] for name in names}, training=training)).ravel()

    present, absent = a(x, False), a(missing, False)
    trained = a(x, True)
    distinct = np.abs(present - absent) > 1e-3  # rows where being missing changes the answer
    assert distinct.mean() > 0.5
    dropped = np.isclose(trained, absent, atol=1e-5) & distinct
    kept = np.isclose(trained, present, atol=1e-5) & distinct
    assert (dropped | kept)[distinct].all()  # each row is either intact or exactly missing
    assert 0.5 * DROP < dropped.sum() / distinct.sum() < 1.5 * DROP
    np.testing.assert_allclose(a(x, False), present)  # inference drops nothing
    # another training call draws other rows (the seed generator moves on)
    again = a(x, True)
    assert not np.array_equal(np.isclose(again, absent, atol=1e-5), np.isclose(trained, absent, atol=1e-5))


def test_the_model_predicts_when_the_optional_input_is_missing(
        model: Any, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    held_out = data[1].assign(a_signal=None)
    predicted = model.predict(held_out)
    assert len(predicted) == len(held_out) and predicted["a_proba"].notna().all()
    # without its signal the answer is near the base rate, not the confident answer of a row
    assert predicted["a_proba"].between(0.2, 0.8).mean() > 0.9


def optional_frame(rows: int, seed: int) -> pd.DataFrame:
    """``c`` (optional) says most about ``y``; ``b`` a little, and all there is without ``c``."""
    rng = np.random.default_rng(seed)
    c = rng.choice(list("pquv"), rows)
    b = rng.normal(size=rows)
    effect = np.where(np.isin(c, ["p", "q"]), 1.5, -1.5)
    return pd.DataFrame({"c": c, "b": b, "y": (effect + b + 0.3 * rng.normal(size=rows) > 0).astype(int)})


def test_modality_dropout_teaches_the_model_to_do_without_the_optional_input() -> None:
    """Trained with every ``c`` present, a model is sure of itself without it, and wrong;
    with modality dropout it has seen rows without ``c`` and is as unsure as ``b`` allows."""
    train, held_out = optional_frame(600, 0), optional_frame(400, 1)
    losses = {}
    for rate in (0.0, 0.5):
        spec = {"inputs": [{"name": "c", "type": "category", "embedding_dim": 4, "optional": True},
                           {"name": "b", "type": "number"}],
                "merge": {"strategy": "concat", "modality_dropout": rate}, "head": {"layers": [8]},
                "outputs": [{"name": "y", "type": "binary"}],
                "train": train_block(epochs=60, batch_size=200, learning_rate=0.01)}
        model = fit(spec, train)
        assert (model.predict(held_out)["y"].astype(int) == held_out["y"]).mean() > 0.9  # with c
        p = model.predict(held_out.assign(c=None))["y_proba"].to_numpy().clip(1e-6, 1 - 1e-6)
        y = held_out["y"].to_numpy()
        losses[rate] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    assert losses[0.5] < 0.75 * losses[0.0], losses


# -- save, load, plait code -------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("fusion") / "bundle")


def test_save_load_predict_the_same(model: Any, bundle: Path,
                                    data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    import plait
    from plait.layers.modality import ModalityDropout
    from plait.layers.position import FirstStep, PositionEmbedding

    loaded = plait.load(bundle)
    used = {type(layer) for layer in loaded.keras_model.layers}
    assert {PositionEmbedding, FirstStep, ModalityDropout} <= used
    pd.testing.assert_frame_equal(loaded.predict(data[1]), model.predict(data[1]))


def test_plait_code_scripts_are_keras_only_with_plaits_parameters(
        model: Any, bundle: Path, data: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    """The bundle's script loads the trained weights and predicts plait's numbers; scripts
    of configs (mean pooling in the attention merge, first-token in the encoder, gating of
    three branches with modality dropout) build plait's models, parameter for parameter."""
    from plait.codegen import generate, generate_for
    from plait.graph import build, compile_model
    from plait.model import placeholder_states
    from test_codegen import run_scripts, summary

    (tmp_path / "bundle_model.py").write_text(generate_for(bundle), encoding="utf-8")
    np.savez(tmp_path / "inputs.npz", **encoded(model, data[1]))
    jobs = [{"script": "bundle_model.py", "inputs": "inputs.npz", "predictions": "predictions.npz"}]
    expected = {"bundle_model.py": summary(model.keras_model)}
    for name, spec in VARIANTS.items():
        spec = load_spec(spec)
        built = compile_model(build(spec, placeholder_states(spec)), spec)
        (tmp_path / f"{name}.py").write_text(generate(spec, model=built), encoding="utf-8")
        jobs.append({"script": f"{name}.py"})
        expected[f"{name}.py"] = summary(built)
    for job in jobs:
        text = (tmp_path / job["script"]).read_text(encoding="utf-8")
        assert max(len(line) for line in text.splitlines()) <= 99, job["script"]
    results = run_scripts(jobs, tmp_path)
    assert results["plait modules"] == []
    for script, wanted in expected.items():
        got = results[script]
        assert (got["trainable"], got["total"]) == (wanted["trainable"], wanted["total"]), script
        assert got["layers"] == wanted["layers"], script
    with np.load(tmp_path / "predictions.npz") as predicted:
        reference = model.keras_model.predict(encoded(model, data[1]), verbose=0)
        for name in ("t", "s", "g", "a"):
            np.testing.assert_allclose(predicted[name], reference[name], rtol=1e-5, atol=1e-6)


THREE = [{"name": "n", "type": "number", "optional": True}, {"name": "c", "type": "category"},
         {"name": "w", "type": "text", "length": 5, "vocabulary_size": 100,
          "encoder": {"kind": "transformer", "units": 8, "heads": 2}}]
VARIANTS = {
    "attention_mean": {"inputs": THREE, "merge": {"strategy": "attention", "units": 8, "heads": 4},
                       "outputs": [{"name": "y", "type": "category"}]},
    "gated_dropped": {"inputs": THREE, "merge": {"strategy": "gated", "units": 4, "modality_dropout": 0.5},
                      "head": {"layers": [4]}, "outputs": [{"name": "y", "type": "number"}]},
}


# -- config errors ----------------------------------------------------------------------


TWO = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]


def problems(merge: Any = None, inputs: list | None = None) -> str:
    raw = {"inputs": inputs or TWO, "outputs": [{"name": "y", "type": "binary"}]}
    if merge is not None:
        raw["merge"] = merge
    with pytest.raises(ConfigError) as caught:
        spec = load_spec(raw)
        from plait.graph import build
        from plait.model import placeholder_states

        build(spec, placeholder_states(spec))
    return str(caught.value)


@pytest.mark.parametrize(("merge", "inputs", "expected"), [
    ({"strategy": "attention", "units": 10, "heads": 4}, None,
     "merge: units: found 10 with heads: 4; expected units divisible by heads"),
    ({"strategy": "attention", "pooling": "max"}, None,
     "merge.pooling: found 'max'; expected one of 'mean' or 'first'"),
    ({"strategy": "attention", "blocks": 0}, None, "merge.blocks: found 0; expected"),
    ({"strategy": "gated", "project": 8}, None,
     "merge: project: found 8; a gated merge projects every branch to its own units: set units instead"),
    ({"strategy": "gated", "heads": 2}, None, "merge.heads: unknown key; allowed keys here:"),
    ({"strategy": "concat", "modality_dropout": 1.0}, None,
     "merge.modality_dropout: found 1.0; expected: input should be less than 1"),
    ({"strategy": "concat", "modality_dropout": 0.3}, None,
     "merge.modality_dropout: found 0.3, but none of this node's branches ['a', 'b'] is an optional "
     "input; modality dropout drops only the branches of inputs with optional: true"),
    (None, [{"name": "a", "type": "text", "encoder": {"kind": "transformer", "units": 30, "heads": 4}},
            {"name": "b", "type": "number"}],
     "inputs[0].encoder: units: found 30 with heads: 4; expected units divisible by heads"),
    (None, [{"name": "a", "type": "sequence", "encoder": {"kind": "transformer", "pooling": "last"}},
            {"name": "b", "type": "number"}],
     "inputs[0].encoder.pooling: found 'last'; expected one of 'mean' or 'first'"),
])
def test_config_mistakes_name_the_path_and_what_is_allowed(merge: Any, inputs: Any, expected: str) -> None:
    assert expected in problems(merge, inputs)


def test_modality_dropout_on_a_node_with_an_optional_branch_is_accepted() -> None:
    spec = load_spec({"inputs": [TWO[0], {**TWO[1], "optional": True}],
                      "merge": {"strategy": "gated", "modality_dropout": 0.3},
                      "outputs": [{"name": "y", "type": "binary"}]})
    assert spec.main_node.modality_dropout == 0.3 and spec.main_node.units == 32
