"""Fast in-process predictions for records (JSON-like dicts), as a server needs them.

``Model.predict`` reads a table through Arrow and calls ``keras.Model.predict``: both cost
milliseconds per call, far more than the model itself takes for one record. A
``Predictor`` encodes small batches of records directly with the fitted states (the same
arithmetic as each input's ``encode``; number, category, binary, ASCII text and image
inputs take a plain-Python path, the others go through their Arrow encoder), calls the
Keras model through one compiled function per batch-size bucket, and decodes with each
output's own ``decode``. Its predictions equal ``Model.predict``'s on the same rows.

Every value a client sends is checked first; a mistake is a ``RecordError`` naming the
record (0-based, as in the JSON list) and the field. Image fields hold base64 text (or a
``data:`` URL): a path is never opened.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from plait.data import Table
from plait.errors import DataError
from plait.features.base import Encoded

_ENCODER_ERROR = re.compile(r"^request, row (\d+), column (['\"])(.*?)\2: (.*)\Z", re.S)
_SEPARATORS = re.compile(r"[^\w']+", re.ASCII)


class RecordError(DataError):
    """A value a client sent that cannot be used: which record, which field, what is wrong.

    >>> str(RecordError(2, "age", "found 'old'; expected a number or null"))
    "record 2, field 'age': found 'old'; expected a number or null"
    """

    def __init__(self, record: int | None, field: str | None, problem: str) -> None:
        self.record, self.field, self.problem = record, field, problem
        where = [f"record {record}"] if record is not None else []
        where += [f"field {field!r}"] if field is not None else []
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


def located(error: DataError) -> RecordError:
    """An encoder's error about the table built from a request, as a RecordError."""
    if isinstance(error, RecordError):
        return error
    match = _ENCODER_ERROR.match(str(error))
    if match is None:
        return RecordError(None, None, str(error))
    return RecordError(int(match[1]) - 1, match[3], match[4])


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Field:
    """How one input reads its value(s) from a record, and encodes a batch of them."""

    def __init__(self, spec: Any, state: dict) -> None:
        self.spec, self.state = spec, state

    @property
    def fields(self) -> list[str]:
        return self.spec.source_columns()

    def encode(self, records: list[dict]) -> Encoded:
        raise NotImplementedError

    def values(self, records: list[dict], check: Callable[[Any], Any], expected: str,
               field: str | None = None) -> list[Any]:
        """Each record's value of ``field`` (None when absent), checked by ``check``, which
        returns the value to use or raises ValueError."""
        field = field or self.spec.source
        out = []
        for index, record in enumerate(records):
            value = record.get(field)
            try:
                out.append(None if value is None else check(value))
            except (ValueError, TypeError, OverflowError, RecursionError):
                raise RecordError(index, field, f"found {_show(value)}; expected {expected}") from None
        return out


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    return float(value)


def label_text(value: Any) -> str:
    """A label as Table.strings gives it: integers (and whole floats) as their digits,
    booleans as ``true``/``false``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value == round(value):
        return str(int(value))
    raise ValueError


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def image_bytes(value: Any) -> bytes:
    """Base64 text, or a ``data:image/...;base64,`` URL, decoded to bytes."""
    if not isinstance(value, str):
        raise ValueError
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError
    data = base64.b64decode(value, validate=True)
    if not data:
        raise ValueError
    return data


def numbers_list(value: Any) -> Any:
    """A list of numbers, or of lists of numbers, nested evenly."""
    if not isinstance(value, list):
        raise ValueError
    depths = {_depth(item) for item in value}
    if len(depths) > 1:
        raise ValueError
    return value


def _depth(item: Any) -> int:
    if isinstance(item, list):
        depths = {_depth(inner) for inner in item}
        if len(depths) > 1:
            raise ValueError
        return 1 + (depths.pop() if depths else 0)
    number(item)
    return 0


class NumberField(Field):
    def encode(self, records: list[dict]) -> Encoded:
        raw = self.values(records, number, "a number or null")
        values = np.array([np.nan if v is None else v for v in raw], np.float64)
        missing = ~np.isfinite(values)
        values = np.where(missing, self.state["fill"], values)
        scaled = ((values - self.state["shift"]) / self.state["divide"]).astype(np.float32)
        return Encoded(scaled.reshape(-1, 1), missing)


class CategoryField(Field):
    def __init__(self, spec: Any, state: dict) -> None:
        super().__init__(spec, state)
        self.index = {value: slot for slot, value in enumerate(state["vocabulary"], start=1)}

    def encode(self, records: list[dict]) -> Encoded:
        raw = self.values(records, label_text, "a string, an integer, a boolean or null")
        index = np.array([0 if v is None else self.index.get(v, 0) for v in raw], np.int32)
        missing = np.array([v is None for v in raw], bool)
        unseen = int(np.count_nonzero((index == 0) & ~missing))
        return Encoded(index.reshape(-1, 1), missing, unseen)


class BinaryField(Field):
    def encode(self, records: list[dict]) -> Encoded:
        levels = self.state["levels"]
        raw = self.values(records, label_text, f"one of {levels} or null")
        for index, value in enumerate(raw):
            if value is not None and value not in levels:
                raise RecordError(index, self.spec.source, f"found {_show(value)}; expected one of {levels}")
        missing = np.array([v is None for v in raw], bool)
        flags = np.array([v == levels[1] for v in raw], bool)
        values = np.where(missing, self.state["fill"], flags.astype(np.float32))
        return Encoded(values.astype(np.float32).reshape(-1, 1), missing)


class TextField(Field):
    """Words as the Arrow tokenizer finds them; its ``\\w`` is ASCII-only, as here. Texts
    with other characters go through the input's own encoder."""

    def __init__(self, spec: Any, state: dict) -> None:
        super().__init__(spec, state)
        self.index = {word: slot for slot, word in enumerate(state["vocabulary"], start=2)}

    def encode(self, records: list[dict]) -> Encoded:
        raw = self.values(records, text, "a string or null")
        if not all(v is None or v.isascii() for v in raw):
            return arrow_encode(self.spec, self.state, {self.spec.source: pa.array(raw, pa.string())})
        length = self.state["length"]
        out = np.zeros((len(raw), length), np.int32)
        unseen = 0
        for row, value in enumerate(raw):
            if value is None:
                continue
            value = value.lower() if self.spec.lowercase else value
            ids = [self.index.get(word, 1) for word in _SEPARATORS.sub(" ", value).split()]
            unseen += ids.count(1)
            out[row, :len(ids[:length])] = ids[:length]
        out[out[:, 0] == 0, 0] = 1
        return Encoded(out, np.array([v is None for v in raw], bool), unseen)


class ImageField(Field):
    def encode(self, records: list[dict]) -> Encoded:
        raw = self.values(records, image_bytes, "base64 image data (PNG, JPEG, ...) or null")
        where = Table(pa.table({}), "request")
        shape = self.spec.input_shape(self.state)
        images = [np.zeros(shape, np.float32) if data is None else
                  self.spec.decode(data, "bytes", where, row) for row, data in enumerate(raw)]
        stacked = np.stack(images) if images else np.zeros((0, *shape), np.float32)
        return Encoded(stacked, np.array([v is None for v in raw], bool))


class ArrowField(Field):
    """Vectors, sequences and any other type: the input's own encoder on a small table."""

    def encode(self, records: list[dict]) -> Encoded:
        columns = {}
        for field in self.fields:
            if getattr(self.spec, "columns", None):
                raw = self.values(records, number, "a number or null", field)
                columns[field] = pa.array(raw, pa.float64())
            else:
                raw = self.values(records, numbers_list, "a list of numbers (nested evenly) or null", field)
                columns[field] = self.list_column(raw, field)
        return arrow_encode(self.spec, self.state, columns)

    def list_column(self, raw: list[Any], field: str) -> pa.Array:
        try:
            return pa.array(raw)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            depths = [None if v is None else _depth(v) for v in raw]
            first = next(d for d in depths if d is not None)
            record = next(i for i, d in enumerate(depths) if d not in (None, first))
            raise RecordError(record, field, f"found lists nested {depths[record]} deep; the "
                              f"first record with this field has them nested {first} deep") from None


FIELDS: dict[str, type[Field]] = {
    "number": NumberField, "category": CategoryField, "binary": BinaryField, "text": TextField,
    "image": ImageField,
}


def arrow_encode(spec: Any, state: dict, columns: dict[str, pa.Array]) -> Encoded:
    return spec.encode(Table(pa.table(columns), "request"), state)


@dataclass
class Batch:
    """Model-ready arrays for some records, and which records the input policies kept."""

    arrays: dict[str, np.ndarray]
    kept: np.ndarray

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
        self.readers = [FIELDS.get(s.type, ArrowField)(s, self.states[s.name]) for s in self.spec.inputs]
        self.fields = [field for reader in self.readers for field in reader.fields]
        self._known = set(self.fields)
        self._forward = forward_function(model.keras_model)
        self._dtypes = {tensor.name: tensor.dtype for tensor in model.keras_model.inputs}
        self.calls = 0

    def encode(self, records: list[Any]) -> Batch:
        """Check every record and encode it; a RecordError names the first bad value."""
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RecordError(index, None, f"found {type(record).__name__} {_show(record)}; "
                                  f"expected an object with the fields {self.fields}")
            unknown = [key for key in record if key not in self._known]
            if unknown:
                raise RecordError(index, unknown[0], f"unknown field; expected fields: {self.fields}")
        arrays: dict[str, np.ndarray] = {}
        kept = np.ones(len(records), bool)
        if not records:
            return Batch(arrays, kept)
        for position, (spec, reader) in enumerate(zip(self.spec.inputs, self.readers, strict=True)):
            try:
                encoded = reader.encode(records)
            except DataError as error:
                raise located(error) from None
            missing = np.asarray(encoded.missing, bool)
            if spec.missing == "error" and missing.any():
                raise RecordError(int(np.flatnonzero(missing)[0]), spec.source,
                                  f"found a missing value; expected a value (inputs[{position}].missing "
                                  "is 'error')")
            if spec.missing == "skip":
                kept &= ~missing
            arrays[spec.name] = encoded.values
            if spec.optional:
                arrays[spec.mask_name] = (~missing).astype(np.float32).reshape(-1, 1)
        return Batch(arrays, kept)

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
