"""Every registered input type, file against request: the same values give the same arrays.

Parametrised from the registry and each type's own ``examples``, so a new type is covered
without a new test: for each example, each missing-value policy and optional or not, the
table a file gives and the records a request sends encode to equal arrays with equal
missing and unseen counts, or fail alike on the same row and column. A server started for
real answers what ``Model.predict`` answers on the same rows.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import plait
from conftest import serving
from plait.data import Table
from plait.errors import DataError
from plait.features.base import InputType
from plait.inference import request_table
from plait.preprocess import encode_inputs, fit_states
from plait.registry import INPUT_TYPES
from plait.spec import load_spec

CASES = [(kind, index, example) for kind, cls in INPUT_TYPES.items()
         for index, example in enumerate(cls.examples())]
IDS = [f"{kind}-{index}" for kind, index, _ in CASES]


def test_every_registered_type_gives_examples() -> None:
    covered = {kind for kind, _, _ in CASES}
    assert covered == set(INPUT_TYPES)
    for kind, cls in INPUT_TYPES.items():
        assert cls.examples is not InputType.examples, kind


def spec_of(config: dict, missing: str = "fill", optional: bool = False) -> plait.Spec:
    return load_spec({"inputs": [{**config, "name": "a", "missing": missing, "optional": optional}],
                      "outputs": [{"name": "y", "type": "number"}]})


def file_table(example: object) -> Table:
    rows = len(next(iter(example.columns.values())))
    return Table(pa.table({**example.columns, "y": pa.array(np.arange(rows, dtype=float))}), "data.parquet")


def fitted(spec: plait.Spec, table: Table) -> dict:
    """States fitted on all rows but the last, as the examples are written for."""
    return fit_states(spec, table.take(np.arange(table.num_rows - 1)))


def encoded_or_error(spec: plait.Spec, states: dict, table: Table) -> tuple[str, object]:
    try:
        return "encoded", encode_inputs(spec, states, table)
    except DataError as error:
        return "error", (error.row, error.column)


@pytest.mark.parametrize("optional", [False, True])
@pytest.mark.parametrize("missing", ["fill", "skip", "error"])
@pytest.mark.parametrize(("kind", "index", "example"), CASES, ids=IDS)
def test_request_and_file_encode_alike(kind: str, index: int, example: object, missing: str,
                                       optional: bool) -> None:
    spec = spec_of(example.config, missing, optional)
    table = file_table(example)
    states = fitted(spec, table)
    from_file = encoded_or_error(spec, states, table)
    from_request = encoded_or_error(spec, states, request_table(spec, example.records))
    assert from_file[0] == from_request[0], (from_file, from_request)
    if from_file[0] == "error":
        assert from_file[1] == from_request[1]
        return
    file, request = from_file[1], from_request[1]
    assert file.report == request.report
    np.testing.assert_array_equal(file.kept, request.kept)
    assert file.inputs.keys() == request.inputs.keys()
    for name, values in file.inputs.items():
        assert values.dtype == request.inputs[name].dtype
        np.testing.assert_allclose(values, request.inputs[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kind", "index", "example"), CASES, ids=IDS)
def test_neutral_value_is_what_a_missing_value_encodes_to(kind: str, index: int, example: object) -> None:
    spec = spec_of(example.config)
    table = file_table(example)
    state = fitted(spec, table)["a"]
    encoded = spec.inputs[0].encode(table.take(np.arange(table.num_rows - 1)), state)
    absent = np.logical_and.reduce([column.is_null().to_numpy(zero_copy_only=False)
                                    for column in example.columns.values()])
    missing = int(np.flatnonzero(absent)[0])
    np.testing.assert_allclose(spec.inputs[0].neutral(state), encoded.values[missing], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kind", "index", "example"), CASES, ids=IDS)
def test_a_fitted_state_survives_json(kind: str, index: int, example: object) -> None:
    spec = spec_of(example.config)
    state = fitted(spec, file_table(example))["a"]
    again = spec.inputs[0].load_state(json.loads(json.dumps(state.model_dump(mode="json"))))
    assert again == state


@pytest.fixture(scope="module")
def every_type(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    """A bundle with one input of every registered type (its first example), and the rows
    as a file table and as request records."""
    firsts = {kind: cls.examples()[0] for kind, cls in INPUT_TYPES.items()}
    rows = min(len(next(iter(e.columns.values()))) for e in firsts.values())
    columns, records = {}, [{} for _ in range(rows)]
    inputs = []
    for kind, example in firsts.items():
        renamed = {f"{kind}_{name}": values[:rows] for name, values in example.columns.items()}
        columns.update(renamed)
        for record, sent in zip(records, example.records[:rows], strict=True):
            record.update({f"{kind}_{name}": value for name, value in sent.items() if value is not None})
        config = {**example.config, "name": kind}
        if "columns" in config:
            config["columns"] = [f"{kind}_{name}" for name in config["columns"]]
        else:
            config["column"] = f"{kind}_a"
        inputs.append(config)
    columns["y"] = pa.array(np.linspace(0.0, 1.0, rows))
    table = pa.table(columns)
    model = plait.Model({"inputs": inputs, "outputs": [{"name": "y", "type": "number"}],
                         "train": {"epochs": 1, "validation_split": 0}}, verbose=0).fit(table)
    folder = tmp_path_factory.mktemp("every-type") / "bundle"
    model.save(folder)
    return folder, table, records


def test_a_server_answers_what_predict_answers_for_every_type(every_type: tuple) -> None:
    folder, table, records = every_type
    expected = plait.load(folder).predict(table)
    with serving(folder) as url:
        request = urllib.request.Request(f"{url}/v1/predict", json.dumps(records).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answered = json.loads(response.read())["predictions"]
    np.testing.assert_allclose([row["y"] for row in answered], expected["y"].to_numpy(), rtol=1e-5, atol=1e-6)
