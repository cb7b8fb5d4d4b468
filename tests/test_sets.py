"""``set`` input (tags) and ``set`` output (multi-label), on the penguins.

Each penguin gets tags read off its measurements with noise (``long_bill``, ``deep_bill``,
``long_flipper``, ``heavy``) and a few tags that carry nothing (``x1`` to ``x4``); the
labels to learn are ``Gentoo`` (species), ``Biscoe`` (island) and ``male``, given as three
0/1 columns or as one text of labels. Models are fitted on a fixed 75% of the rows and
scored on the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from conftest import PENGUINS, fit, train_block
from plait.data import Table
from plait.errors import ConfigError, DataError
from plait.spec import load_spec

LABELS = ["Gentoo", "Biscoe", "male"]


def tagged(frame: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    """The penguins with noisy tags of their measurements, and the labels to learn."""
    rng = np.random.default_rng(seed)
    rows = len(frame)
    measured = [("long_bill", frame.bill_length_mm + rng.normal(0, 1.5, rows) > 45),
                ("deep_bill", frame.bill_depth_mm + rng.normal(0, 0.7, rows) > 17),
                ("long_flipper", frame.flipper_length_mm + rng.normal(0, 4, rows) > 205),
                ("heavy", frame.body_mass_g + rng.normal(0, 200, rows) > 4200)]
    noise = [list(rng.choice(["x1", "x2", "x3", "x4"], rng.integers(0, 3), replace=False))
             for _ in range(rows)]
    tags = [[name for name, on in measured if on[row]] + noise[row] for row in range(rows)]
    male = frame.sex.map({"male": 1.0, "female": 0.0})
    labels = [None if pd.isna(sex) else "|".join(label for label, on in zip(LABELS, flags, strict=True) if on)
              for sex, flags in zip(male, zip(frame.species == "Gentoo", frame.island == "Biscoe", male == 1,
                                              strict=True), strict=True)]
    return frame.assign(tags=["|".join(t) for t in tags], tag_list=tags,
                        Gentoo=(frame.species == "Gentoo").astype(int), Biscoe=frame.island == "Biscoe",
                        male=male, labels=labels)


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = tagged(pd.read_csv(PENGUINS).dropna(subset=["bill_length_mm"]).reset_index(drop=True))
    order = np.random.default_rng(7).permutation(len(frame))
    cut = int(len(frame) * 0.75)
    return frame.iloc[order[:cut]].reset_index(drop=True), frame.iloc[order[cut:]].reset_index(drop=True)


COLUMNS_SPEC = {
    "inputs": [{"name": "tags", "type": "set", "embedding_dim": 8}],
    "head": {"layers": [16]},
    "outputs": [{"name": "kind", "type": "set", "columns": LABELS}],
    "train": train_block(epochs=150, learning_rate=0.03, validation_split=0.25),
}
COLUMN_SPEC = {
    "inputs": [{"name": "tags", "type": "set", "encoding": "multi_hot"},
               {"name": "body_mass_g", "type": "number"}],
    "head": {"layers": [16]},
    "outputs": [{"name": "kind", "type": "set", "column": "labels"}],
    "train": train_block(epochs=150, learning_rate=0.03, validation_split=0.25),
}


@pytest.fixture(scope="module")
def from_tags(split: tuple) -> Any:
    """Tags alone, embedded and averaged; the labels as three 0/1 columns."""
    return fit(COLUMNS_SPEC, split[0].drop(columns=["tag_list"]))


@pytest.fixture(scope="module")
def from_lists(split: tuple) -> Any:
    """Tags multi-hot, and the body mass; the labels as one text of labels."""
    return fit(COLUMN_SPEC, split[0].drop(columns=["tag_list"]))


@pytest.fixture(scope="module")
def bundle(from_lists: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return from_lists.save(tmp_path_factory.mktemp("sets") / "bundle")


# -- learning -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["from_tags", "from_lists"])
def test_the_labels_are_learned_well_above_the_baseline(name: str, split: tuple,
                                                        request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    scores = model.evaluate(split[1])["kind"]
    baseline = scores["baseline"]
    # over seeds 0 to 2: micro F1 0.76-0.78 from tags alone, 0.83-0.87 with the body mass,
    # against baselines of 0.35 or 0.54 (as the rate of a label in the training rows falls
    # on either side of 0.5)
    assert scores["micro_f1"] > baseline["micro_f1"] + 0.15, (scores["micro_f1"], baseline["micro_f1"])
    assert scores["micro_f1"] > 0.7 and scores["roc_auc"] > 0.85 and baseline["roc_auc"] == 0.5
    assert scores["hamming_loss"] < baseline["hamming_loss"] - 0.15
    assert scores["lift"]["hamming_loss"] > 0.15  # lower is better: the lift is baseline minus model
    assert scores["jaccard"] > baseline["jaccard"] and scores["macro_f1"] > baseline["macro_f1"]
    assert set(scores["per_label"]) == set(LABELS)
    assert scores["per_label"]["Gentoo"]["f1"] > 0.9  # long flippers and shallow bills


def test_thresholds_are_chosen_per_label_on_the_validation_rows(from_tags: Any, split: tuple) -> None:
    state = from_tags.states_["kind"]
    assert state.labels == LABELS and state.threshold_by == "f1"
    assert len(set(state.thresholds)) == 3 and any(abs(t - 0.5) > 0.02 for t in state.thresholds)
    scores = from_tags.metrics_["validation"]["kind"]
    assert scores["thresholds"] == dict(zip(LABELS, state.thresholds, strict=True))
    # training rates, the baseline's probabilities
    train = split[0]
    expected = [train.Gentoo.mean(), train.Biscoe.mean(), train.male.fillna(0).mean()]
    np.testing.assert_allclose(state.rates, expected, atol=0.1)  # fitted on the training rows of the split


def test_a_fixed_threshold_is_kept(split: tuple) -> None:
    spec = {**COLUMNS_SPEC, "outputs": [{"name": "kind", "type": "set", "columns": LABELS, "threshold": 0.3}],
            "train": train_block(epochs=2, validation_split=0.25)}
    state = fit(spec, split[0].drop(columns=["tag_list"])).states_["kind"]
    assert state.thresholds == [0.3] * 3 and state.threshold_by == "fixed"


# -- predictions --------------------------------------------------------------------------


def test_predictions_are_the_labels_at_or_over_their_thresholds(from_lists: Any, split: tuple,
                                                                tmp_path: Path) -> None:
    state = from_lists.states_["kind"]
    assert state.labels == sorted(LABELS)  # labels from a column: those seen, sorted
    predicted = from_lists.predict(split[1])
    probabilities = [f"kind_proba_{label}" for label in state.labels]
    assert list(predicted.columns) == ["kind", *probabilities]
    called = predicted[probabilities].to_numpy() >= np.asarray(state.thresholds)
    expected = ["|".join(label for label, on in zip(state.labels, row, strict=True) if on) for row in called]
    assert predicted["kind"].tolist() == expected
    assert {"", "Biscoe|Gentoo|male"} <= set(expected)
    # one text column: the same in Parquet, and in CSV (where an empty text reads back as missing)
    predicted.to_parquet(tmp_path / "p.parquet")
    predicted.to_csv(tmp_path / "p.csv", index=False)
    assert pd.read_parquet(tmp_path / "p.parquet")["kind"].tolist() == expected
    assert pd.read_csv(tmp_path / "p.csv")["kind"].fillna("").tolist() == expected


def test_a_bundle_loads_with_the_same_states_and_predictions(from_lists: Any, bundle: Path,
                                                             split: tuple) -> None:
    import plait

    loaded = plait.load(bundle)
    assert loaded.states_ == from_lists.states_
    pd.testing.assert_frame_equal(loaded.predict(split[1]), from_lists.predict(split[1]))
    saved = json.loads((bundle / "metrics.json").read_text())
    thresholds = dict(zip(sorted(LABELS), loaded.states_["kind"].thresholds, strict=True))
    assert saved["validation"]["kind"]["thresholds"] == thresholds


def test_lists_and_delimited_text_predict_alike(from_lists: Any, split: tuple) -> None:
    test = split[1].head(12)
    as_text = from_lists.predict(test.drop(columns=["tag_list"]))
    as_lists = from_lists.predict(test.drop(columns=["tags"]).rename(columns={"tag_list": "tags"}))
    pd.testing.assert_frame_equal(as_text, as_lists)


def test_the_server_reads_lists_and_delimited_text_as_a_file_gives_them(bundle: Path, split: tuple) -> None:
    from fastapi.testclient import TestClient

    import plait
    from plait.serve import Settings, create_app

    loaded = plait.load(bundle)
    test = split[1].head(6)
    expected = loaded.predict(test)
    rows = [{"tags": tags, "body_mass_g": mass}
            for tags, mass in zip(test.tag_list, test.body_mass_g, strict=True)]
    texts = [{**row, "tags": " | ".join(row["tags"])} for row in rows]
    with TestClient(create_app(Settings(bundle=str(bundle)), model=loaded)) as client:
        answers = [client.post("/v1/predict", json=records).json()["predictions"]
                   for records in (rows, texts)]
        schema = client.get("/v1/schema").json()
        refused = client.post("/v1/predict", json=[rows[0], {"tags": [["nested"]], "body_mass_g": 4000}])
        assert client.get("/openapi.json").status_code == 200
    for answered in answers:
        assert [row["kind"] for row in answered] == expected["kind"].tolist()
        np.testing.assert_allclose([row["kind_proba_male"] for row in answered], expected["kind_proba_male"],
                                   rtol=1e-5, atol=1e-6)
    tags = next(item for item in schema["inputs"] if item["name"] == "tags")
    assert tags["widget"] == "text" and tags["separator"] == "|" and tags["encoding"] == "multi_hot"
    assert set(tags["values"]) == {"long_bill", "deep_bill", "long_flipper", "heavy", "x1", "x2", "x3", "x4"}
    kind = next(item for item in schema["outputs"] if item["name"] == "kind")
    assert kind["labels"] == sorted(LABELS) and len(kind["thresholds"]) == 3
    assert kind["bars"][0] == ["Biscoe", "kind_proba_Biscoe"]
    assert refused.status_code == 422
    assert refused.json()["record"] == 1 and refused.json()["field"] == "tags"


# -- the target's rows --------------------------------------------------------------------


def test_rows_without_a_target_are_left_out_of_the_loss(from_lists: Any, from_tags: Any,
                                                       split: tuple) -> None:
    table = Table(pa.Table.from_pandas(split[0].drop(columns=["tag_list"])))
    sexed = split[0].sex.notna().to_numpy()
    assert not sexed.all()
    # a null list has no target; beside given columns, a null is 0
    target = from_lists.spec.outputs[0].encode(table, from_lists.states_["kind"])
    np.testing.assert_array_equal(target.present, sexed)
    assert target.values[~sexed].sum() == 0
    assert from_tags.spec.outputs[0].encode(table, from_tags.states_["kind"]).present.all()
    # the data report counts the training rows (the validation split's are not among them)
    assert 0 < from_lists.data_report_["inputs"]["targets"]["kind"]["missing"] <= (~sexed).sum()
    assert from_tags.data_report_["inputs"]["targets"]["kind"]["missing"] == 0


def test_evaluation_data_with_a_label_unseen_in_training_is_refused(from_lists: Any, split: tuple) -> None:
    test = split[1].head(5).copy()
    test.loc[3, "labels"] = "Gentoo|Dream"
    with pytest.raises(DataError, match=r"row 4, column 'labels': found 'Dream'; expected labels seen"):
        from_lists.evaluate(test)


def test_a_label_column_that_is_not_a_flag_is_refused(split: tuple) -> None:
    frame = split[0].drop(columns=["tag_list"]).assign(male=split[0].sex)
    with pytest.raises(DataError, match=r"column 'male': found '(fe)?male'; expected 0 or 1, true or false"):
        fit({**COLUMNS_SPEC, "train": train_block(epochs=1)}, frame)


def test_one_label_in_the_data_is_refused(split: tuple) -> None:
    frame = split[0].drop(columns=["tag_list"]).assign(labels="Gentoo")
    with pytest.raises(DataError, match=r"found 1 distinct label\(s\) \['Gentoo'\]; expected at least two"):
        fit({**COLUMN_SPEC, "train": train_block(epochs=1)}, frame)


# -- report and explanation ---------------------------------------------------------------


def test_the_report_shows_the_metrics_thresholds_and_per_label_table(from_tags: Any) -> None:
    page = from_tags.report_files()["report.html"].decode()
    for shown in ("micro F1", "Jaccard", "Hamming loss", "each label at its training rate",
                  "Decision thresholds (chosen per label on the validation split for the best f1): Gentoo",
                  "<th>rows with it</th>", "Gentoo, Biscoe, male"):
        assert shown in page, shown


def test_explain_measures_drops_in_micro_f1(from_tags: Any, split: tuple) -> None:
    result = from_tags.explain(split[1], repeats=2)
    assert result["metrics"] == {"kind": "micro_f1"}
    assert result["inputs"]["tags"]["kind"]["permutation"]["mean"] > 0.1


# -- the input's encoding -----------------------------------------------------------------


def test_tags_are_deduplicated_and_cut_to_the_most_frequent() -> None:
    from plait.features.set import SetInput

    tags = SetInput(name="tags", length=2)
    table = Table(pa.table({"tags": ["a|b|c", "c|b|a|a", "b", "c|zz", "", None]}))
    state = tags.fit(table.take(np.arange(3)))
    assert state.vocabulary == ["b", "a", "c"] and state.length == 2  # by rows holding each, then sorted
    encoded = tags.encode(table, state)
    assert encoded.values.tolist() == [[2, 3], [2, 3], [2, 0], [4, 1], [1, 0], [1, 0]]
    assert encoded.missing.tolist() == [False] * 5 + [True] and encoded.unseen == 1
    default = SetInput(name="tags").fit(table)
    assert default.length == 3  # the 95th percentile of distinct tags per present row


def test_plait_code_builds_the_same_model(from_tags: Any, from_lists: Any, tmp_path: Path) -> None:
    from plait.codegen import generate
    from plait.graph import build, compile_model
    from plait.model import placeholder_states
    from test_codegen import run_scripts, summary

    unfitted = load_spec(COLUMNS_SPEC)
    scripts = {"from_tags.py": (generate(from_tags.spec, from_tags.states_, model=from_tags.keras_model),
                                from_tags.keras_model),
               "from_lists.py": (generate(from_lists.spec, from_lists.states_, model=from_lists.keras_model),
                                 from_lists.keras_model),
               "unfitted.py": (generate(unfitted),
                               compile_model(build(unfitted, placeholder_states(unfitted)), unfitted))}
    for name, (text, _) in scripts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    built = run_scripts([{"script": name} for name in scripts], tmp_path)
    for name, (_, model) in scripts.items():
        assert built[name] == summary(model), name
    # 10 embedding rows (padding, unseen, 8 tags) of 8; 9 multi-hot slots + body mass into 16 units
    assert built["from_tags.py"]["trainable"] == 10 * 8 + (8 * 16 + 16) + (16 * 3 + 3)
    assert built["from_lists.py"]["trainable"] == (10 * 16 + 16) + (16 * 3 + 3)
    assert "probabilities of 'Gentoo', 'Biscoe', 'male', each on its own" in scripts["from_tags.py"][0]
    assert "masked mean" in scripts["from_tags.py"][0]


# -- config mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"outputs": [{"name": "kind", "type": "set", "columns": LABELS, "column": "labels"}]},
     "outputs[0]: found both columns ['Gentoo', 'Biscoe', 'male'] and column 'labels'; give either"),
    ({"inputs": [{"name": "tags", "type": "set", "encoding": "onehot"}]},
     "inputs[0].encoding: found 'onehot'; expected one of 'embedding' or 'multi_hot'"),
    ({"inputs": [{"name": "tags", "type": "set", "encoding": "multi_hot", "embedding_dim": 4}]},
     "inputs[0]: found embedding_dim 4, which encoding 'multi_hot' does not use"),
    ({"outputs": [{"name": "kind", "type": "set", "columns": ["a", "b", "a"]}]},
     "outputs[0]: columns: found ['a'] more than once"),
    ({"outputs": [{"name": "kind", "type": "set", "columns": ["a"]}]},
     "outputs[0].columns: found ['a']; expected"),
    ({"outputs": [{"name": "kind", "type": "set", "column": "labels", "threshold": 0.4,
                   "threshold_by": "recall"}]},
     "outputs[0]: threshold 0.4 is fixed, so threshold_by 'recall' would not be used"),
    ({"outputs": [{"name": "kind", "type": "set", "columns": ["Gentoo", "tags"]}]},
     "outputs[0].columns: found 'tags', which inputs[0] also reads"),
])
def test_config_mistakes_give_one_clear_message(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_spec({**COLUMNS_SPEC, **change})
    text = str(caught.value)
    assert message in text, text
    assert len(text.splitlines()) == 2, text


def test_plait_init_reads_lists_of_text_as_tags(split: tuple) -> None:
    from plait.init import infer_config
    from test_init import comment_above, entries

    train = split[0]
    table = pa.table({"tags": pa.array(train.tag_list.tolist(), pa.list_(pa.string())),
                      "same": [["a", "b"]] * len(train), "kind": train.Gentoo})
    text = infer_config(table, ["kind"])
    assert entries(text)["tags"] == {"name": "tags", "type": "set"}
    assert "lists of text: 8 distinct tags, 0 to 6 per row; the most frequent" in comment_above(text, "tags")
    assert "same" not in entries(text)  # every row holds every tag: nothing to tell rows apart
    assert load_spec(yaml.safe_load(text)).inputs[0].type == "set"
