"""Config mistakes: each is one ConfigError whose text names the path, the value and what
is allowed. None of these needs a backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.encoders import SEQUENCE_ENCODERS
from plait.errors import ConfigError, PlaitError
from plait.spec import Spec, load_spec

TWO_NUMBERS = [{"name": "a", "type": "number"}, {"name": "b", "type": "number"}]
ONE_OUTPUT = [{"name": "y", "type": "binary"}]


def config(**parts: object) -> dict:
    base: dict = {"inputs": TWO_NUMBERS, "outputs": ONE_OUTPUT}
    base.update(parts)
    return base


def problems(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_spec(raw)  # type: ignore[arg-type]
    return str(caught.value)


def test_a_valid_config_loads_with_its_defaults() -> None:
    spec = load_spec(config())
    assert [s.name for s in spec.inputs] == ["a", "b"]
    assert spec.main_node.name == "merged" and spec.main_node.strategy == "concat"
    assert spec.node_sources(spec.main_node) == ["a", "b"]
    assert spec.train.epochs == 10 and spec.train.seed == 0
    assert isinstance(load_spec(spec), Spec)


def test_config_error_is_a_plait_error() -> None:
    assert issubclass(ConfigError, PlaitError)


def test_unknown_input_type_names_path_value_and_the_types_allowed() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "nmber"}]))
    assert "inputs[0].type: found 'nmber'; expected one of " in text
    for kind in ("'number'", "'vector'", "'category'", "'binary'", "'text'", "'image'", "'sequence'"):
        assert kind in text


def test_unknown_output_type_lists_output_types() -> None:
    text = problems(config(outputs=[{"name": "y", "type": "multilabel"}]))
    assert "outputs[0].type: found 'multilabel'; expected one of 'binary', 'category', 'number'" in text


def test_missing_type_lists_the_types_allowed() -> None:
    text = problems(config(inputs=[{"name": "a"}]))
    assert "inputs[0].type: missing; expected one of 'number', 'vector', 'category'" in text


def test_missing_name() -> None:
    text = problems(config(inputs=[{"type": "number"}, {"name": "b", "type": "number"}]))
    assert "inputs[0].name: missing; this key is required" in text


def test_bad_name_says_what_a_name_may_hold() -> None:
    text = problems(config(inputs=[{"name": "2nd", "type": "number"}]))
    assert "inputs[0].name: found '2nd'; expected a name of letters, digits and underscores" in text


def test_duplicate_name_points_at_both_places() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "number"}, {"name": "a", "type": "category"}]))
    assert "inputs[1].name: found 'a', already the name of inputs[0].name" in text
    assert "expected a name used once across inputs, merge nodes and outputs" in text


def test_output_named_like_an_input_is_a_duplicate() -> None:
    text = problems(config(outputs=[{"name": "a", "type": "binary", "column": "target"}]))
    assert "outputs[0].name: found 'a', already the name of inputs[0].name" in text


def test_merge_naming_a_nonexistent_input() -> None:
    text = problems(config(merge={"strategy": "add", "inputs": ["a", "c"]}))
    assert "merge.inputs[1]: found 'c'; expected an input or an earlier merge node: ['a', 'b']" in text


def test_merge_node_may_only_name_earlier_nodes() -> None:
    text = problems(config(merge=[{"name": "late", "inputs": ["a", "early"]},
                                  {"name": "early", "inputs": ["late", "b"]}]))
    assert "merge[0].inputs[1]: found 'early'; expected an input or an earlier merge node: ['a', 'b']" in text


def test_unknown_strategy_lists_strategies() -> None:
    text = problems(config(merge={"strategy": "concatenate"}))
    assert ("merge.strategy: found 'concatenate'; expected one of 'concat', 'add', 'average', "
            "'multiply', 'maximum', 'attention' or 'gated'") in text


@pytest.mark.parametrize(
    ("parts", "line"),
    [
        ({"head": {"layers": [16, -4]}},
         "head.layers[1]: found -4; expected: input should be greater than 0"),
        ({"train": {"epochs": 0}}, "train.epochs: found 0; expected: input should be greater than 0"),
        ({"train": {"learning_rate": -0.1}},
         "train.learning_rate: found -0.1; expected: input should be greater than 0"),
        ({"train": {"validation_split": 1.5}},
         "train.validation_split: found 1.5; expected: input should be less than 1"),
        ({"head": {"dropout": 1.0}}, "head.dropout: found 1.0; expected: input should be less than 1"),
        ({"merge": {"project": 0}}, "merge.project: found 0; expected: input should be greater than 0"),
    ],
)
def test_bad_numbers(parts: dict, line: str) -> None:
    assert line in problems(config(**parts))


def test_negative_units_deep_inside_an_input() -> None:
    text = problems(config(inputs=[
        {"name": "a", "type": "text", "encoder": {"kind": "lstm", "units": -3}},
        {"name": "b", "type": "number"},
    ]))
    assert "inputs[0].encoder.units: found -3; expected: input should be greater than 0" in text


def test_negative_units_in_a_branch_and_an_output_tower() -> None:
    text = problems(config(
        inputs=[{"name": "a", "type": "number", "layers": [8, -1]}, {"name": "b", "type": "number"}],
        outputs=[{"name": "y", "type": "binary", "layers": [0]}],
    ))
    assert "inputs[0].layers[1]: found -1; expected: input should be greater than 0" in text
    assert "outputs[0].layers[0]: found 0; expected: input should be greater than 0" in text


def test_every_problem_is_reported_at_once() -> None:
    text = problems(config(train={"epochs": 0, "batch_size": -1}, head={"dropout": 2}))
    assert "train.epochs: found 0" in text
    assert "train.batch_size: found -1" in text
    assert "head.dropout: found 2" in text


@pytest.mark.parametrize(
    ("parts", "line", "allowed"),
    [
        ({"train": {"epochs": 2, "batchsize": 3}}, "train.batchsize",
         ["batch_size", "early_stopping", "epochs", "learning_rate", "optimizer", "seed",
          "validation_split"]),
        ({"inputs": [{"name": "a", "type": "number", "scael": "none"}, {"name": "b", "type": "number"}]},
         "inputs[0].scael", ["column", "fill", "layers", "missing", "name", "scale", "type"]),
        ({"outputs": [{"name": "y", "type": "number", "los": "mae"}]}, "outputs[0].los",
         ["column", "from", "layers", "loss", "name", "type", "weight"]),
        ({"inputs": [{"name": "a", "type": "text", "encoder": {"kind": "gru", "unit": 3}},
                     {"name": "b", "type": "number"}]},
         "inputs[0].encoder.unit", ["bidirectional", "kind", "units"]),
        ({"heads": {}}, "heads", ["head", "inputs", "merge", "outputs", "train"]),
    ],
)
def test_unknown_keys_list_the_keys_allowed(parts: dict, line: str, allowed: list[str]) -> None:
    text = problems(config(**parts))
    prefix = f"  {line}: unknown key; allowed keys here: "
    [found] = [row for row in text.splitlines() if row.startswith(prefix)]
    listed = found[len(prefix):].split(", ")
    assert listed == sorted(listed)
    assert set(allowed) <= set(listed)
    assert line.rsplit(".", 1)[-1] not in listed


def test_unknown_encoder_kind() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "text", "encoder": {"kind": "capsule"}},
                                   {"name": "b", "type": "number"}]))
    kinds = " or ".join(", ".join(f"'{kind}'" for kind in SEQUENCE_ENCODERS).rsplit(", ", 1))
    assert f"inputs[0].encoder.kind: found 'capsule'; expected one of {kinds}" in text
    assert "'lstm'" in kinds and "'gru'" in kinds


def test_an_encoder_key_its_kind_does_not_have_is_refused() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "text", "encoder": {"units": 16}},
                                   {"name": "b", "type": "number"}]))
    assert "inputs[0].encoder.units: unknown key; allowed keys here: kind" in text


def test_vector_shape_with_a_bad_dimension() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "vector", "shape": [10, -5]}]))
    assert "inputs[0]: shape [10, -5]: every dimension must be a positive integer" in text


def test_output_from_unknown() -> None:
    text = problems(config(outputs=[{"name": "y", "type": "binary", "from": "nothere"}]))
    assert "outputs[0].from: found 'nothere'; expected an input or a merge node: ['a', 'b', 'merged']" in text


def test_target_column_also_an_input() -> None:
    text = problems(config(outputs=[{"name": "y", "type": "binary", "column": "a"}]))
    assert ("outputs[0].column: found 'a', which inputs[0] also reads; expected a target column "
            "that is not an input (it would leak the answer)") in text


def test_target_column_read_by_a_vector_of_columns() -> None:
    text = problems({"inputs": [{"name": "v", "type": "vector", "columns": ["p", "q"]}],
                     "outputs": [{"name": "q", "type": "number"}]})
    assert "outputs[0].column: found 'q', which inputs[0] also reads" in text


def test_input_feeding_no_output() -> None:
    text = problems(config(
        inputs=[*TWO_NUMBERS, {"name": "c", "type": "number"}],
        merge=[{"name": "ab", "inputs": ["a", "b"]}],
    ))
    assert ("inputs[2]: 'c' feeds no output; expected it in a merge node's inputs or an output's "
            "'from'") in text
    assert "inputs[0]" not in text and "inputs[1]" not in text


def test_merge_node_feeding_no_output() -> None:
    text = problems(config(
        inputs=[*TWO_NUMBERS, {"name": "c", "type": "number"}],
        merge=[{"name": "ab", "inputs": ["a", "b"]}, {"name": "bc", "inputs": ["b", "c"]}],
        outputs=[{"name": "y", "type": "binary", "from": "bc"},
                 {"name": "z", "type": "binary", "from": "c"}],
    ))
    assert ("merge[0]: node 'ab' feeds no output; expected an output to read it or a later node "
            "to merge it") in text
    assert "inputs[0]: 'a' feeds no output" in text


def test_merge_of_a_single_branch() -> None:
    text = problems(config(merge={"strategy": "add", "inputs": ["a"]}))
    assert "merge.inputs: found ['a']; an add merge needs at least two branches" in text
    assert "(a single branch needs no merge: let the output read it with 'from')" in text


def test_merge_of_a_single_earlier_node() -> None:
    text = problems(config(merge=[{"name": "ab", "inputs": ["a", "b"]}, {"name": "top", "inputs": ["ab"]}]))
    assert "merge[1].inputs: found ['ab']; a concat merge needs at least two branches" in text


def test_branch_named_twice_in_a_merge() -> None:
    text = problems(config(merge={"inputs": ["a", "a", "b"]}))
    assert "merge.inputs: found ['a', 'a', 'b']; each branch may be named once" in text


def test_several_merge_nodes_each_name_their_inputs() -> None:
    text = problems(config(merge=[{"name": "m1", "inputs": ["a", "b"]}, {"name": "m2"}]))
    assert ("merge[1].inputs: missing; expected the names this node merges when there are several "
            "merge nodes") in text


def test_empty_inputs() -> None:
    text = problems(config(inputs=[]))
    assert "inputs: found []; expected: list should have at least 1 item" in text


def test_config_that_is_not_a_mapping() -> None:
    assert problems([1, 2]) == "config: found a list; expected a mapping with 'inputs' and 'outputs'"


def test_invalid_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("inputs:\n  - {name: a, type: number}\n  - name: b\n    type: [number\noutputs: []\n")
    text = problems(path)
    assert text.startswith(f"{path}: not valid YAML at line 5, column 8: ")
    assert "expected ',' or ']'" in text


def test_yaml_with_a_tab(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("inputs:\n\t- a\n")
    assert problems(path) == (f"{path}: not valid YAML at line 2, column 1: found character '\\t' "
                              "that cannot start any token")


def test_empty_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("")
    assert problems(path) == f"{path}: found a NoneType; expected a mapping with 'inputs' and 'outputs'"


def test_binary_config_file(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\xff\xfe\x00inputs")
    assert problems(path) == f"{path}: not a UTF-8 text file"


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems(path) == f"{path}: no such config file"
    assert problems(str(tmp_path)) == f"{tmp_path}: no such config file"


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("inputs:\n  - {name: a, type: number}\noutputs:\n  - {name: y, type: binary}\n"
                    "train: {epochs: 0}\n")
    text = problems(path)
    assert text.splitlines()[0] == f"{path}: invalid config"
    assert "  train.epochs: found 0; expected: input should be greater than 0" in text.splitlines()


def test_a_yaml_config_round_trips(tmp_path: Path) -> None:
    spec = load_spec(config(merge={"strategy": "add", "project": 8},
                            outputs=[{"name": "y", "type": "binary", "class_weight": "balanced"}]))
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec
    assert load_spec(path).to_dict()["merge"] == {"name": "merged", "strategy": "add", "inputs": None,
                                                  "project": 8, "modality_dropout": 0.0}


def test_early_stopping_true_means_defaults() -> None:
    stopping = load_spec(config(train={"early_stopping": True})).train.early_stopping
    assert stopping is not None and (stopping.patience, stopping.monitor) == (3, "val_loss")
    assert load_spec(config(train={"early_stopping": False})).train.early_stopping is None


def test_contradictory_keys_in_one_entry_are_named_plainly() -> None:
    text = problems(config(inputs=[{"name": "a", "type": "category", "encoding": "onehot",
                                    "embedding_dim": 4}, {"name": "b", "type": "number"}]))
    assert ("inputs[0]: embedding_dim is 4 but encoding is 'onehot', which has no embedding; remove "
            "embedding_dim, or set encoding: embedding") in text
