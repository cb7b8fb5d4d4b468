"""What ``plait init`` knows of one sampled column, and how it words its evidence.

Each input type's ``recognise`` reads a ``Column`` and, when the column is of its type,
returns the config entry with the evidence that ``plait init`` writes as its comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MISSING_MARKERS = ["NA", "N/A", "n/a", "na", "?", "null", "NULL", "None", "none", "nan", "NaN", "-", ""]


@dataclass
class Column:
    """A sampled column: its name, its present values (nulls dropped), how many distinct
    values it has in the sample and in the whole table (``levels``), the missing count
    in words (``gaps``), and the folder relative paths resolve against."""

    name: str
    values: pa.ChunkedArray
    distinct: int
    levels: int
    gaps: str
    base_dir: Path

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def of(self) -> str:
        """``"12 distinct of 40"``."""
        return f"{self.distinct:,} distinct of {self.count:,}"


def is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def shares(values: pa.ChunkedArray) -> str:
    """The three most frequent values with their share: ``'Tops' (45%), 'Dresses' (27%), …``."""
    counts = pc.value_counts(values.drop_null())
    pairs = sorted(zip(counts.field("counts").to_pylist(), counts.field("values").to_pylist(),
                       strict=True), key=lambda pair: (-pair[0], str(pair[1])))
    total = sum(count for count, _ in pairs)
    shown = ", ".join(f"{show(value)} ({count / total:.0%})" for count, value in pairs[:3])
    return shown + (", …" if len(pairs) > 3 else "")


def markers(values: pa.ChunkedArray) -> str:
    """Values such as 'NA' or '?' that read as a value here but may mean missing."""
    if not is_string(values.type):
        return ""
    found = pc.filter(values, pc.is_in(values, value_set=pa.array(MISSING_MARKERS)))
    if not len(found):
        return ""
    marker = found[0].as_py()
    return f"; {marker!r} in {len(found) / len(values):.0%} of rows reads as a value, not as missing"


def number_text(value: float) -> str:
    value = float(value)
    return str(int(value)) if value == round(value) and abs(value) < 1e15 else f"{value:.4g}"


def show(value: Any) -> str:
    """A value for a comment: strings quoted, cut to 30 characters."""
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= 30 else value[:29] + "…")
