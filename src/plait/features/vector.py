"""``vector``: a fixed-length numeric input, from several columns or one list column."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.data import Table, json_lists, json_numbers
from plait.errors import DataError
from plait.evidence import Column
from plait.features.base import Encoded, Example, InputType, Recognised, same_values, shares_by
from plait.features.lists import counts, flatten, list_depth, numeric_lists
from plait.schema import FittedState, StateClass


class VectorState(FittedState):
    """The number of elements, and per element its fill value and scaling."""

    size: int = Field(gt=0)
    fill: list[float]
    shift: list[float]
    divide: list[float]


class VectorInput(InputType):
    """A fixed-length numeric vector, optionally shaped as a multi-dimensional array.

    Either ``columns`` (several numeric columns, in order) or one list column (``column``,
    by default the input's name; nested lists are flattened row-major). ``shape`` declares
    a multi-dimensional input, e.g. ``[10, 5]``: the model's input has that shape and the
    branch flattens it. ``size`` is checked when given and inferred otherwise. Each
    element is scaled with its own training statistics. ``reduce: mean`` (or ``max``)
    collapses the vector to one number, the mean (or maximum) of its elements, before the
    branch's ``layers`` (several readings of one quantity, averaged).

    >>> VectorInput(name="readings", shape=[10, 5]).input_shape(None)
    (10, 5)
    >>> VectorInput(name="sensors", size=3, reduce="mean").reduce
    'mean'
    """

    type: Literal["vector"] = "vector"
    columns: list[str] | None = Field(default=None, min_length=1)
    size: int | None = Field(default=None, gt=0)
    shape: list[int] | None = Field(default=None, min_length=1)
    scale: Literal["standard", "minmax", "none"] = "standard"
    reduce: Literal["none", "mean", "max"] = "none"

    State: ClassVar[StateClass] = VectorState
    recognise_order: ClassVar[int] = 40

    @model_validator(mode="after")
    def _consistent(self) -> VectorInput:
        if self.shape and any(d <= 0 for d in self.shape):
            raise ValueError(f"shape {self.shape}: every dimension must be a positive integer")
        if self.shape and self.size and math.prod(self.shape) != self.size:
            raise ValueError(f"shape {self.shape} holds {math.prod(self.shape)} values, size is {self.size}")
        if self.columns and self.column:
            raise ValueError("give either 'columns' (several numeric columns) or 'column' (one list column)")
        return self

    def source_columns(self) -> list[str]:
        return list(self.columns) if self.columns else [self.source]

    def declared_size(self) -> int | None:
        if self.shape:
            return math.prod(self.shape)
        if self.columns:
            return len(self.columns)
        return self.size

    def raw(self, table: Any, size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows × size) values with NaN where missing, and which rows were null entirely."""
        if self.columns:
            values = np.stack([table.numbers(c, self.describe_use()) for c in self.columns], axis=1)
            return values, np.zeros(len(values), bool)
        column = table.lists(self.source, self.describe_use())
        values, owners = flatten(column, list_depth(column.type))
        null_rows = pc.is_null(column).to_numpy(zero_copy_only=False)
        per_row = _row_counts(owners, table.num_rows)
        if size is None and (~null_rows).any():
            size = int(np.bincount(per_row[~null_rows]).argmax())
        wrong = ~null_rows & (per_row != size)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise table.bad_value(self.source, row, f"a list of {per_row[row]} numbers",
                                  f"{size} numbers")
        size = size or 0
        dense = np.full((table.num_rows, size), np.nan, np.float32)
        if size:
            dense[~null_rows] = values.reshape(-1, size)
        return dense, null_rows

    @property
    def accepts(self) -> str:  # type: ignore[override]
        if self.columns:
            return "a number in each field (read as numbers), or null"
        return "a list of numbers (nested lists are read row-major), or null"

    @property
    def widget(self) -> str:  # type: ignore[override]
        return "number" if self.columns else "json"

    def fit(self, table: Table) -> VectorState:
        values, _ = self.raw(table, self.declared_size())
        if values.shape[1] == 0:
            raise DataError(f"{table.source}, column {self.source!r}: every row is empty; expected numbers")
        values[np.isinf(values)] = np.nan
        mean = np.nan_to_num(np.nanmean(values, axis=0, dtype=np.float64))
        finite = np.where(np.isnan(values), mean.astype(values.dtype), values)
        if self.scale == "standard":
            shift, divide = mean, finite.std(axis=0, dtype=np.float64)
        elif self.scale == "minmax":
            shift, divide = finite.min(axis=0), np.ptp(finite, axis=0)
        else:
            shift, divide = np.zeros_like(mean), np.ones_like(mean)
        divide = np.where(divide > 0, divide, 1.0)
        return VectorState(size=int(values.shape[1]), fill=mean.tolist(), shift=shift.tolist(),
                           divide=divide.tolist())

    def encode(self, table: Table, state: VectorState) -> Encoded:
        values, _ = self.raw(table, state.size)
        values = values.astype(np.float32, copy=False)
        bad = ~np.isfinite(values)
        np.copyto(values, np.broadcast_to(np.asarray(state.fill, np.float32), values.shape), where=bad)
        values -= np.asarray(state.shift, np.float32)
        values /= np.asarray(state.divide, np.float32)
        return Encoded(values.reshape((-1, *self.input_shape(state))), bad.any(axis=1))

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_numbers(values, field) if self.columns else json_lists(values, field)

    def field_schema(self) -> dict[str, Any]:
        if self.columns:
            return super().field_schema()
        return {"anyOf": [{"type": "array", "items": {}}, {"type": "null"}]}

    def schema_details(self, state: VectorState) -> dict[str, Any]:
        return {"size": state.size, "shape": list(self.input_shape(state))}

    def input_shape(self, state: VectorState | None) -> tuple[int, ...]:
        return tuple(self.shape) if self.shape else (state.size,)

    def placeholder_state(self) -> VectorState:
        size = self.declared_size()
        if size is None:
            raise DataError(f"input {self.name!r}: give 'size' or 'shape' to describe it without data")
        return VectorState(size=size, fill=[0.0] * size, shift=[0.0] * size, divide=[1.0] * size)

    def neutral(self, state: VectorState) -> np.ndarray:
        """Each element's fill value (the training mean), scaled."""
        fill, shift, divide = (np.asarray(v, np.float64) for v in (state.fill, state.shift, state.divide))
        return ((fill - shift) / divide).reshape(self.input_shape(state))

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table,
                   state: VectorState) -> dict | None:
        """Per element: its share, named by its column (or by its place in the list).

        >>> VectorInput(name="v", columns=["a", "b"]).attributed(np.array([0.5, -0.25]), None, None, None)
        {'kind': 'values', 'units': [['a', 0.5], ['b', -0.25]]}
        """
        flat = shares.reshape(-1)
        names = self.columns or ["[" + ", ".join(map(str, place)) + "]"
                                 for place in np.ndindex(*shares.shape)]
        return shares_by("values", names, flat)

    def describe_array(self, state: VectorState, fitted: bool) -> str:
        scaled = {"standard": "standardised", "minmax": "scaled to [0, 1]", "none": "as given"}[self.scale]
        reduced = f"; the model takes their {self.reduce}" if self.reduce != "none" else ""
        return f"{state.size} numbers, each {scaled}{reduced}"

    @classmethod
    def examples(cls) -> list[Example]:
        """A list column (integers and floats alike), nested lists with ``shape``, and
        several numeric columns (text holding numbers included)."""
        columns = {"v0": pa.array([1.0, None, 2.0, None, 4.0]), "v1": pa.array(["3", "1.5", None, None, "2"])}
        records = [{"v0": 1, "v1": "3"}, {"v0": None, "v1": 1.5}, {"v0": 2.0}, {}, {"v0": 4, "v1": "2"}]
        return [
            same_values({"type": "vector"}, "a", pa.array([[1, 2], [3, 4], None, [5, 6]]),
                        [[1, 2], [3.0, 4], None, [5, 6]]),
            same_values({"type": "vector", "shape": [2, 2], "scale": "minmax"}, "a",
                        pa.array([[[1.0, 2.0], [0.0, 1.0]], None, [[3.0, 4.0], [5.0, 6.0]]]),
                        [[[1, 2], [0, 1]], None, [[3, 4], [5, 6]]]),
            Example({"type": "vector", "columns": ["v0", "v1"]}, columns, records),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Lists of numbers, as many in every row, that are no series (lists whose neighbours
        correlate are ``sequence`` inputs, whichever type ``plait init`` asks first)."""
        from plait.features.sequence import series_autocorrelation

        lengths = numeric_lists(column.values, depth=1)
        if lengths is None or lengths.min() != lengths.max():
            return None
        if series_autocorrelation(column.values, 1) is not None:
            return None
        return Recognised({"type": "vector", "size": int(lengths[0])},
                          f"lists of {lengths[0]} numbers in every row{column.gaps}")

    def encoding_layers(self, x: Any, state: VectorState) -> Any:
        from keras import layers

        size = math.prod(self.input_shape(state))
        if self.reduce != "none":
            x = layers.Reshape((size, 1), name=f"{self.name}_elements")(x)
            pool = layers.GlobalAveragePooling1D if self.reduce == "mean" else layers.GlobalMaxPooling1D
            return pool(name=f"{self.name}_{self.reduce}")(x)
        if not self.shape or len(self.shape) == 1:
            return x
        return layers.Reshape((size,), name=f"{self.name}_reshape")(x)


def _row_counts(owners: list[np.ndarray], rows: int) -> np.ndarray:
    """Number of leaf values in each row, following the owner chain down the levels."""
    owner = owners[-1]
    for upper in reversed(owners[:-1]):
        owner = upper[owner]
    return counts(owner, rows)
