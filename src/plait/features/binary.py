"""``binary``: a yes/no column (booleans, 0/1, or any two distinct values)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plait.errors import DataError
from plait.features.base import Encoded, InputType


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


class BinaryInput(InputType):
    """A flag: booleans, 0/1, yes/no or any two values; missing values take the training rate.

    ``positive`` names the value that encodes as 1 (otherwise true/yes/1, or the later of
    the two values in sorted order).

    >>> BinaryInput(name="member").input_shape({})
    (1,)
    """

    type: Literal["binary"] = "binary"
    positive: str | None = None

    def fit(self, table: Any) -> dict:
        strings = table.strings(self.source, self.describe_use())
        where = f"{table.source}, column {self.source!r}"
        levels = two_levels(strings, self.positive, where)
        flags = pc.equal(strings, levels[1]).to_numpy(zero_copy_only=False)
        known = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        rate = float(flags[known].astype(float).mean()) if known.any() else 0.0
        return {"levels": levels, "fill": rate}

    def encode(self, table: Any, state: dict) -> Encoded:
        strings = table.strings(self.source, self.describe_use())
        missing = pc.is_null(strings).to_numpy(zero_copy_only=False)
        known = pc.is_in(strings, value_set=pa.array(state["levels"])).to_numpy(
            zero_copy_only=False
        )
        unknown = ~missing & ~known
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise table.bad_value(self.source, row, strings[row].as_py(),
                                  f"one of {state['levels']}")
        flags = pc.fill_null(pc.equal(strings, state["levels"][1]), False).to_numpy(
            zero_copy_only=False
        )
        values = np.where(missing, state["fill"], flags.astype(np.float32))
        return Encoded(values.astype(np.float32).reshape(-1, 1), missing)

    def input_shape(self, state: dict) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> dict:
        return {"levels": ["false", "true"], "fill": 0.0}

    def encoding_layers(self, x: Any, state: dict) -> Any:
        return x
