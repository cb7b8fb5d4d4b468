"""``sequence``: a numeric time series per row, of shape [steps, features]."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plait.data import Table, json_lists
from plait.encoders import encoder_field
from plait.encoders.recurrent import LSTMEncoder
from plait.errors import DataError
from plait.evidence import Column
from plait.features.base import Encoded, Example, InputType, Recognised, same_values
from plait.features.lists import counts, flatten, list_depth, numeric_lists, positions
from plait.schema import FittedState, StateClass


class SequenceState(FittedState):
    """Steps per row, numbers per step, and each feature's scaling."""

    steps: int = Field(gt=0)
    features: int = Field(gt=0)
    shift: list[float]
    divide: list[float]


class SequenceInput(InputType):
    """A list column: each row a list of steps, each step a list of ``features`` numbers
    (or a plain number when there is one feature).

    Rows longer than ``steps`` are cut, shorter ones padded with zeros at the end
    (``steps`` is the longest training row when not given). Each feature is standardised
    with training statistics when ``scale`` is ``standard``.

    >>> SequenceInput(name="motion", steps=100, features=6).placeholder_state().steps
    100
    """

    type: Literal["sequence"] = "sequence"
    steps: int | None = Field(default=None, gt=0)
    features: int | None = Field(default=None, gt=0)
    scale: Literal["standard", "none"] = "standard"
    encoder: encoder_field("lstm") = Field(default_factory=LSTMEncoder)  # type: ignore[valid-type]

    State: ClassVar[StateClass] = SequenceState
    accepts: ClassVar[str] = ("a list of steps, each a list of numbers (or a number when there is one "
                              "feature), or null")
    widget: ClassVar[str] = "json"
    recognise_order: ClassVar[int] = 41

    def steps_of(self, table: Any, features: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Values (items × features), the row of each step, the step's position, features."""
        column = table.lists(self.source, self.describe_use())
        depth = list_depth(column.type)
        if depth not in (1, 2):
            raise DataError(f"{table.source}, column {self.source!r}: found lists nested {depth} deep; "
                            "expected a list of steps, each a number or a list of numbers")
        values, owners = flatten(column, depth)
        rows = table.num_rows
        if depth == 1:
            features = features or 1
            if features != 1:
                raise DataError(f"{table.source}, column {self.source!r}: found one number per step; "
                                f"expected {features}")
            row_of_step = owners[0]
            return values.reshape(-1, 1), row_of_step, positions(row_of_step, rows), 1
        row_of_step, step_of_value = owners
        per_step = counts(step_of_value, len(row_of_step))
        if features is None:
            features = int(np.bincount(per_step).argmax()) if per_step.size else 1
        wrong = per_step != features
        if wrong.any():
            row = int(row_of_step[np.flatnonzero(wrong)[0]])
            raise table.bad_value(self.source, row, f"a step of {per_step[wrong][0]} numbers",
                                  f"{features} numbers in every step")
        return values.reshape(-1, features), row_of_step, positions(row_of_step, rows), features

    def fit(self, table: Table) -> SequenceState:
        values, row_of_step, _, features = self.steps_of(table, self.features)
        steps = self.steps or int(counts(row_of_step, table.num_rows).max(initial=1))
        finite = np.where(np.isfinite(values), values, np.nan)
        mean = np.nan_to_num(np.nanmean(finite, axis=0)) if len(values) else np.zeros(features)
        std = np.nan_to_num(np.nanstd(finite, axis=0)) if len(values) else np.ones(features)
        if self.scale == "none":
            mean, std = np.zeros(features), np.ones(features)
        return SequenceState(steps=steps, features=features, shift=mean.tolist(),
                             divide=np.where(std > 0, std, 1.0).tolist())

    def encode(self, table: Table, state: SequenceState) -> Encoded:
        values, row_of_step, position, features = self.steps_of(table, state.features)
        rows, steps = table.num_rows, state.steps
        finite = np.isfinite(values)
        clean = bool(finite.all())
        scaled = (values - np.asarray(state.shift)) / np.asarray(state.divide)
        if not clean:
            scaled[~finite] = 0.0
        if len(scaled) == rows * steps and (position < steps).all():
            # every row has exactly ``steps`` steps, already laid out row after row
            out = scaled.reshape(rows, steps, features).astype(np.float32)
        else:
            kept = position < steps
            out = np.zeros((rows, steps, features), np.float32)
            out[row_of_step[kept], position[kept]] = scaled[kept]
        column = table.lists(self.source, self.describe_use())
        missing = pc.is_null(column).to_numpy(zero_copy_only=False)
        if not clean:
            missing[row_of_step[~finite.all(axis=1)]] = True
        return Encoded(out, missing)

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_lists(values, field)

    def field_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "array", "items": {}}, {"type": "null"}]}

    def schema_details(self, state: SequenceState) -> dict[str, Any]:
        return {"steps": state.steps, "features": state.features}

    def input_shape(self, state: SequenceState) -> tuple[int, ...]:
        return (state.steps, state.features)

    def placeholder_state(self) -> SequenceState:
        if self.steps is None or self.features is None:
            raise DataError(f"input {self.name!r}: give 'steps' and 'features' to describe it without data")
        return SequenceState(steps=self.steps, features=self.features,
                             shift=[0.0] * self.features, divide=[1.0] * self.features)

    def encoding_layers(self, x: Any, state: SequenceState) -> Any:
        return self.encoder.apply(x, self.name)

    def neutral(self, state: SequenceState) -> np.ndarray:
        """Every step at the training mean: zero once standardised."""
        return np.zeros(self.input_shape(state))

    def describe_array(self, state: SequenceState, fitted: bool) -> str:
        scaled = "standardised" if self.scale == "standard" else "as given"
        return f"{state.steps} steps of {state.features} numbers each, {scaled}, zero-padded at the end"

    @classmethod
    def examples(cls) -> list[Example]:
        """Steps of several numbers, rows of different lengths (cut to ``steps`` or padded),
        and steps of one number given as plain numbers."""
        return [
            same_values({"type": "sequence", "steps": 3}, "a",
                        pa.array([[[1.0, 0.0], [2.0, 1.0]], [[3.0, 2.0]], None, [[0.0, 1.0]] * 4]),
                        [[[1, 0], [2, 1]], [[3, 2]], None, [[0, 1]] * 4]),
            same_values({"type": "sequence", "encoder": {"kind": "gru", "units": 4}}, "a",
                        pa.array([[1.0, 2.0, 3.0], [4.0], None, [5.0, 6.0]]),
                        [[1, 2, 3], [4], None, [5.0, 6]]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Lists of numbers of varying length, or lists of steps with as many numbers each."""
        flat = numeric_lists(column.values, depth=1)
        if flat is not None:
            shortest, longest = int(flat.min()), int(flat.max())
            return Recognised({"type": "sequence", "features": 1}, f"lists of {shortest} to {longest} "
                              f"numbers: a sequence of steps{column.gaps}")
        lengths = numeric_lists(column.values, depth=2)
        if lengths is None:
            return None
        inner = pc.list_value_length(pc.list_flatten(column.values.combine_chunks())).to_numpy(
            zero_copy_only=False)
        if not inner.size or inner.min() != inner.max():
            return None
        return Recognised({"type": "sequence", "features": int(inner[0])},
                          f"lists of {lengths.min()} to {lengths.max()} steps of {inner[0]} "
                          f"numbers{column.gaps}")
