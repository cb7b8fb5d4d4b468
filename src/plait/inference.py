"""Fast in-process predictions for records (JSON-like dicts), as a server needs them.

``Model.predict`` calls ``keras.Model.predict``, which costs milliseconds per call, far more
than the model itself takes for one record. A ``Predictor`` turns a batch of records into
the columns a file would hold (each input's ``request_column``, by the same rules files are
read with), encodes them with the same ``encode`` training uses, calls the Keras model
through one compiled function per batch-size bucket, and decodes with each output's own
``decode``. Its predictions equal ``Model.predict``'s on the same rows.

Every value a client sends is checked; a mistake is a ``RecordError`` naming the record
(0-based, as in the JSON list) and the field. Image fields hold base64 text (or a ``data:``
URL): a path is never opened.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from plait.data import Table, shown
from plait.errors import DataError
from plait.preprocess import encode_inputs


class RecordError(DataError):
    """A value a client sent that cannot be used: which record, which field, what is wrong.

    >>> str(RecordError(2, "age", "found 'old'; expected a number or null"))
    "record 2, field 'age': found 'old'; expected a number or null"
    """

    def __init__(self, record: int | None, field: str | None, problem: str) -> None:
        self.record, self.field = record, field
        where = [f"record {record}"] if record is not None else []
        where += [f"field {field!r}"] if field is not None else []
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem, row=record, column=field,
                         problem=problem)


def located(error: DataError) -> RecordError:
    """An error about the table made from a request, as a RecordError naming the record and
    field the error names."""
    if isinstance(error, RecordError):
        return error
    return RecordError(error.row, error.column, error.problem)


def request_table(spec: Any, records: list[dict]) -> Table:
    """The records as the table a file would give: one column per field of every input."""
    columns: dict[str, pa.Array] = {}
    for item in spec.inputs:
        columns.update(item.request_columns(records))
    return Table(pa.table(columns) if columns else pa.table({}), "request", records=True)


@dataclass
class Batch:
    """Model-ready arrays for some records, which records the input policies kept, and the
    table the records became (for explanations, which read the words as sent)."""

    arrays: dict[str, np.ndarray]
    kept: np.ndarray
    table: Table | None = None

    @property
    def rows(self) -> int:
        return len(self.kept)


def buckets(max_batch: int) -> list[int]:
    """The batch sizes the model is compiled for: powers of two, then ``max_batch``.

    >>> buckets(24)
    [1, 2, 4, 8, 16, 24]
    """
    sizes = [1 << power for power in range(max_batch.bit_length()) if 1 << power < max_batch]
    return sizes + [max_batch]


class Predictor:
    """Encode records, run the model, decode its outputs: ``Model.predict`` for a server.

    >>> import pandas as pd
    >>> from plait import Model
    >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 8, "y": [0, 0, 1, 1] * 8})
    >>> model = Model({"inputs": [{"name": "x", "type": "number"}],
    ...                "outputs": [{"name": "y", "type": "binary"}],
    ...                "train": {"epochs": 2, "validation_split": 0}}, verbose=0).fit(frame)
    >>> sorted(Predictor(model, max_batch=4).predict([{"x": 2.5}]))
    ['y', 'y_proba']
    """

    def __init__(self, model: Any, max_batch: int = 32) -> None:
        self.model = model
        self.spec, self.states = model.spec, model.states_
        self.max_batch = max_batch
        self.buckets = buckets(max_batch)
        self.fields = list(dict.fromkeys(field for item in self.spec.inputs
                                         for field in item.source_columns()))
        self._known = set(self.fields)
        self._forward = forward_function(model.keras_model)
        self._dtypes = {tensor.name: tensor.dtype for tensor in model.keras_model.inputs}
        self.calls = 0
        self._attributor: Any = None
        self._explaining = threading.Lock()

    def encode(self, records: list[Any]) -> Batch:
        """Check every record and encode it; a RecordError names the first bad value."""
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RecordError(index, None, f"found {type(record).__name__} {shown(record)}; "
                                  f"expected an object with the fields {self.fields}")
            unknown = [key for key in record if key not in self._known]
            if unknown:
                raise RecordError(index, unknown[0], f"unknown field; expected fields: {self.fields}")
        if not records:
            return Batch({}, np.ones(0, bool))
        try:
            table = request_table(self.spec, records)
            encoded = encode_inputs(self.spec, self.states, table)
        except DataError as error:
            raise located(error) from None
        return Batch(encoded.inputs, encoded.kept, table)

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's raw outputs, in chunks of at most ``max_batch`` rows, each padded to
        the next compiled size by repeating its last row."""
        arrays = {name: np.asarray(array, self._dtypes[name]) for name, array in arrays.items()}
        rows = len(next(iter(arrays.values())))
        parts = []
        for start in range(0, rows, self.max_batch):
            chunk = {name: array[start:start + self.max_batch] for name, array in arrays.items()}
            size = len(next(iter(chunk.values())))
            bucket = next(b for b in self.buckets if b >= size)
            if bucket > size:
                chunk = {name: np.concatenate([a, np.repeat(a[-1:], bucket - size, axis=0)])
                         for name, a in chunk.items()}
            raw = self._forward(chunk)
            self.calls += 1
            if not isinstance(raw, dict):
                raw = {self.spec.outputs[0].name: raw}
            parts.append({name: np.asarray(values)[:size] for name, values in raw.items()})
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def decode(self, raw: dict[str, np.ndarray], kept: np.ndarray) -> dict[str, list[Any]]:
        """The columns ``Model.predict`` gives, as lists; skipped records and non-finite
        numbers are None."""
        columns: dict[str, list[Any]] = {}
        for out in self.spec.outputs:
            for name, values in out.decode(raw[out.name], self.states[out.name]).items():
                listed = values.tolist()
                if values.dtype.kind == "f":
                    listed = [v if math.isfinite(v) else None for v in listed]
                if not kept.all():
                    listed = [v if keep else None for v, keep in zip(listed, kept, strict=True)]
                columns[name] = listed
        return columns

    def predict(self, records: list[Any]) -> dict[str, list[Any]]:
        """The columns ``Model.predict`` gives for these records, as lists."""
        batch = self.encode(records)
        if not batch.rows:
            return self.decode(self.empty_outputs(), batch.kept)
        return self.decode(self.run(batch.arrays), batch.kept)

    def explain(self, records: list[Any]) -> tuple[dict[str, list[Any]], list[dict | None]]:
        """The columns ``predict`` gives for these records, and per record what drove each
        output's prediction (``plait.attribution``: the ``outputs`` of one explained row; None
        for a record the input policies skip), the records encoded once. The gradient program
        is built on the first call."""
        batch = self.encode(records)
        if not batch.rows:
            return self.decode(self.empty_outputs(), batch.kept), []
        predictions = self.decode(self.run(batch.arrays), batch.kept)
        with self._explaining:
            if self._attributor is None:
                from plait.attribution import Attributor

                self._attributor = Attributor(self.model)
            found = self._attributor.explain(batch.arrays, batch.table, list(range(batch.rows)))
        return predictions, [entry["outputs"] if keep else None
                             for entry, keep in zip(found, batch.kept, strict=True)]

    def empty_outputs(self) -> dict[str, np.ndarray]:
        """Raw outputs for no records, without calling the model."""
        return {out.name: np.zeros((0, out.units(self.states[out.name])), np.float32)
                for out in self.spec.outputs}

    def warm_up(self) -> None:
        """Compile the model for every bucket size now rather than on a client's request."""
        example = {tensor.name: np.zeros((1, *tensor.shape[1:]), tensor.dtype)
                   for tensor in self.model.keras_model.inputs}
        for size in self.buckets:
            self._forward({name: np.repeat(a, size, axis=0) for name, a in example.items()})


def forward_function(keras_model: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    """The model's inference call. On JAX: one jitted stateless call (compiled once per
    input shape) with the weights passed in, far cheaper per call than ``predict``."""
    import keras

    if keras.backend.backend() != "jax":
        return keras_model.predict_on_batch
    import jax

    trainable, frozen = keras_model.trainable_variables, keras_model.non_trainable_variables

    @jax.jit
    def forward(trainable_values: list, frozen_values: list, inputs: dict) -> Any:
        outputs, _ = keras_model.stateless_call(trainable_values, frozen_values, inputs, training=False)
        return outputs

    def call(inputs: dict[str, np.ndarray]) -> Any:
        # The values are read on every call: Keras's own fit and predict replace them.
        outputs = forward([v.value for v in trainable], [v.value for v in frozen], inputs)
        if isinstance(outputs, dict):
            return {name: np.asarray(value) for name, value in outputs.items()}
        return np.asarray(outputs)

    return call
