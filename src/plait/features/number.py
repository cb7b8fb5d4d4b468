"""``number``: one numeric column, scaled with statistics from the training data."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from plait.features.base import Encoded, InputType


class NumberInput(InputType):
    """One numeric column.

    ``scale``: ``standard`` (zero mean, unit variance), ``minmax`` (to [0, 1]) or ``none``.
    Missing, NaN and infinite values follow ``missing``; with ``fill`` they take ``fill``
    (``mean``, ``median``, ``zero`` or a number), in the column's own units.

    >>> NumberInput(name="age", scale="minmax").input_shape({})
    (1,)
    """

    type: Literal["number"] = "number"
    scale: Literal["standard", "minmax", "none"] = "standard"
    fill: Literal["mean", "median", "zero"] | float = "mean"

    def fit(self, table: Any) -> dict:
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
        return {"fill": fill, "shift": shift, "divide": divide, "mean": mean, "std": std,
                "min": low, "max": high}

    def encode(self, table: Any, state: dict) -> Encoded:
        values = table.numbers(self.source, self.describe_use())
        missing = ~np.isfinite(values)
        values = np.where(missing, state["fill"], values)
        scaled = ((values - state["shift"]) / state["divide"]).astype(np.float32)
        return Encoded(scaled.reshape(-1, 1), missing)

    def input_shape(self, state: dict) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> dict:
        return {"fill": 0.0, "shift": 0.0, "divide": 1.0}

    def encoding_layers(self, x: Any, state: dict) -> Any:
        return x
