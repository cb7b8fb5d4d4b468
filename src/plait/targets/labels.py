"""Labels read as strings for fitting, and given back in their original type."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa

LabelKind = Literal["bool", "int", "string"]
"""The type labels are given back in."""


def label_kind(column: pa.ChunkedArray) -> str:
    kind = column.type
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        values = column.drop_null().to_numpy()
        return "int" if np.all(values == np.round(values)) else "string"
    return "string"


def restore(labels: list[str], kind: str) -> list[Any]:
    if kind == "int":
        return [int(label) for label in labels]
    if kind == "bool":
        return [label == "true" for label in labels]
    return list(labels)
