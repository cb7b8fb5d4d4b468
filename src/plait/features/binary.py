"""``binary``: a yes/no column (booleans, 0/1, or any two distinct values)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plait.data import Table, json_labels
from plait.errors import DataError
from plait.evidence import Column, is_numeric, is_string, shares
from plait.features.base import LABEL_SCHEMA, Encoded, Example, InputType, Recognised, same_values
from plait.schema import FittedState, StateClass


def two_levels(values: pa.ChunkedArray, positive: str | None, where: str) -> list[str]:
    """The two labels of a binary column, negative first.

    Sorted order already puts 0/1, false/true, no/yes and N/Y the right way round.
    """
    levels = sorted(pc.unique(values.drop_null()).to_pylist())
    if len(levels) > 2:
        raise DataError(f"{where}: found {len(levels)} distinct values {levels[:10]}; expected two")
    if positive is None:
        if len(levels) == 2:
            return levels
        return [f"not {levels[0]}", levels[0]] if levels else ["false", "true"]
    if len(levels) == 2 and positive not in levels:
        raise DataError(f"{where}: found values {levels}; expected one of them to be {positive!r}")
    negative = next((level for level in levels if level != positive), f"not {positive}")
    return [negative, positive]


class BinaryState(FittedState):
    """The two labels, negative first; the training rate of the positive one (the fill)."""

    levels: list[str] = Field(min_length=2, max_length=2)
    fill: float


class BinaryInput(InputType):
    """A flag: booleans, 0/1, yes/no or any two values; missing values take the training rate.

    ``positive`` names the value that encodes as 1 (otherwise true/yes/1, or the later of
    the two values in sorted order). Values are read by the rule for labels.

    >>> BinaryInput(name="member").input_shape(None)
    (1,)
    """

    type: Literal["binary"] = "binary"
    positive: str | None = None

    State: ClassVar[StateClass] = BinaryState
    accepts: ClassVar[str] = "one of the two values (text, a number or true/false), or null"
    widget: ClassVar[str] = "select"
    recognise_order: ClassVar[int] = 20

    def fit(self, table: Table) -> BinaryState:
        strings = table.strings(self.source, self.describe_use())
        where = f"{table.source}, column {self.source!r}"
        levels = two_levels(strings, self.positive, where)
        flags = pc.equal(strings, levels[1]).to_numpy(zero_copy_only=False)
        known = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        rate = float(flags[known].astype(float).mean()) if known.any() else 0.0
        return BinaryState(levels=levels, fill=rate)

    def encode(self, table: Table, state: BinaryState) -> Encoded:
        strings = table.strings(self.source, self.describe_use())
        missing = pc.is_null(strings).to_numpy(zero_copy_only=False)
        known = pc.is_in(strings, value_set=pa.array(state.levels)).to_numpy(zero_copy_only=False)
        unknown = ~missing & ~known
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise table.bad_value(self.source, row, strings[row].as_py(), f"one of {state.levels}")
        flags = pc.fill_null(pc.equal(strings, state.levels[1]), False).to_numpy(zero_copy_only=False)
        values = np.where(missing, state.fill, flags.astype(np.float32))
        return Encoded(values.astype(np.float32).reshape(-1, 1), missing)

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_labels(values, field)

    def field_schema(self) -> dict[str, Any]:
        return LABEL_SCHEMA

    def schema_details(self, state: BinaryState) -> dict[str, Any]:
        return {"values": state.levels, "positive": state.levels[1]}

    def input_shape(self, state: Any) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> BinaryState:
        return BinaryState(levels=["false", "true"], fill=0.0)

    def encoding_layers(self, x: Any, state: BinaryState) -> Any:
        return x

    def neutral(self, state: BinaryState) -> np.ndarray:
        """The training rate of the positive value."""
        return np.array([state.fill])

    def describe_array(self, state: BinaryState, fitted: bool) -> str:
        if fitted:
            return f"1.0 for {state.levels[1]!r}, 0.0 for {state.levels[0]!r}"
        return "1.0 or 0.0"

    @classmethod
    def examples(cls) -> list[Example]:
        """Two values as text, as integers, as booleans; a third value is an error (the last)."""
        return [
            same_values({"type": "binary"}, "a", pa.array(["yes", "no", None, "yes"]),
                        ["yes", "no", None, "yes"]),
            same_values({"type": "binary"}, "a", pa.array([0, 1, None, 1, 2], pa.int64()),
                        [0, 1.0, None, 1, 2]),
            same_values({"type": "binary", "positive": "false"}, "a", pa.array([True, False, None, False]),
                        [True, False, None, False]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Exactly two distinct values in the whole column (a rare third makes no flag)."""
        kind = column.values.type
        if column.levels != 2 or not (is_numeric(kind) or is_string(kind) or pa.types.is_boolean(kind)):
            return None
        return Recognised({"type": "binary"}, f"2 distinct: {shares(column.values)}{column.gaps}")
