"""``number``: one numeric column, scaled with statistics from the training data."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from plait.data import Table
from plait.evidence import Column, is_numeric, number_text
from plait.features.base import Encoded, Example, InputType, Recognised, same_values
from plait.schema import FittedState, StateClass


class NumberState(FittedState):
    """The fill value and the scaling (``(value - shift) / divide``), in the column's units;
    the training mean, standard deviation and range, for the schema."""

    fill: float
    shift: float
    divide: float
    mean: float = 0.0
    std: float = 1.0
    min: float = 0.0
    max: float = 0.0


class NumberInput(InputType):
    """One numeric column.

    ``scale``: ``standard`` (zero mean, unit variance), ``minmax`` (to [0, 1]) or ``none``.
    Missing, NaN and infinite values follow ``missing``; with ``fill`` they take ``fill``
    (``mean``, ``median``, ``zero`` or a number), in the column's own units.

    >>> NumberInput(name="age", scale="minmax").input_shape(None)
    (1,)
    """

    type: Literal["number"] = "number"
    scale: Literal["standard", "minmax", "none"] = "standard"
    fill: Literal["mean", "median", "zero"] | float = "mean"

    State: ClassVar[StateClass] = NumberState
    recognise_order: ClassVar[int] = 80

    def fit(self, table: Table) -> NumberState:
        values = table.numbers(self.source, self.describe_use())
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            finite = np.zeros(1)
        mean, std = float(finite.mean()), float(finite.std())
        low, high = float(finite.min()), float(finite.max())
        fills = {"mean": mean, "median": float(np.median(finite)), "zero": 0.0}
        fill = fills[self.fill] if isinstance(self.fill, str) else float(self.fill)
        if self.scale == "standard":
            shift, divide = mean, std if std > 0 else 1.0
        elif self.scale == "minmax":
            shift, divide = low, (high - low) if high > low else 1.0
        else:
            shift, divide = 0.0, 1.0
        return NumberState(fill=fill, shift=shift, divide=divide, mean=mean, std=std, min=low, max=high)

    def encode(self, table: Table, state: NumberState) -> Encoded:
        values = table.numbers(self.source, self.describe_use())
        missing = ~np.isfinite(values)
        values = np.where(missing, state.fill, values)
        scaled = ((values - state.shift) / state.divide).astype(np.float32)
        return Encoded(scaled.reshape(-1, 1), missing)

    def input_shape(self, state: Any) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> NumberState:
        return NumberState(fill=0.0, shift=0.0, divide=1.0)

    def encoding_layers(self, x: Any, state: NumberState) -> Any:
        return x

    def schema_details(self, state: NumberState) -> dict[str, Any]:
        return {"mean": state.mean, "min": state.min, "max": state.max}

    def neutral(self, state: NumberState) -> np.ndarray:
        """The fill value (the training mean by default), scaled.

        >>> NumberInput(name="age", scale="minmax").neutral(NumberState(fill=30.0, shift=20.0, divide=40.0))
        array([0.25])
        """
        return np.array([(state.fill - state.shift) / state.divide])

    def describe_array(self, state: NumberState, fitted: bool) -> str:
        if fitted and self.scale != "none":
            return (f"one number, (value - {state.shift:.6g}) / {state.divide:.6g}; a missing "
                    f"value counts as {state.fill:.6g}")
        scaled = {"standard": "standardised", "minmax": "scaled to [0, 1]", "none": "as given"}[self.scale]
        return f"one number, {scaled} (missing values filled)"

    @classmethod
    def examples(cls) -> list[Example]:
        """Numbers; text holding numbers (as a CSV column with a blank cell gives them);
        booleans read as 1 and 0."""
        return [
            same_values({"type": "number"}, "a", pa.array([1.5, 2.0, None, -3.0]), [1.5, 2, None, -3]),
            same_values({"type": "number", "scale": "minmax"}, "a", pa.array(["1.5", " 2", "", None, "7"]),
                        ["1.5", 2, "", None, " 7 "]),
            same_values({"type": "number", "fill": "zero"}, "a", pa.array([True, False, None, True]),
                        [True, False, None, 1]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Numbers; integers with an id-like name are codes, recognised as categories first."""
        if not is_numeric(column.values.type):
            return None
        values = column.values.to_numpy()
        kind = "integers" if pa.types.is_integer(column.values.type) else "numbers"
        return Recognised({"type": "number"}, f"{kind} {number_text(values.min())} to "
                          f"{number_text(values.max())}, {column.of}{column.gaps}")
