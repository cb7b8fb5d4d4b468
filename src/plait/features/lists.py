"""List columns to dense numpy arrays, with the row of every bad value known."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def list_depth(kind: pa.DataType) -> int:
    depth = 0
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
        depth += 1
    return depth


def flatten(column: pa.ChunkedArray, levels: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Values of ``levels`` nested lists as float64, and for each level the owner of each item.

    ``owners[0]`` maps level-1 items to rows, ``owners[1]`` level-2 items to level-1 items.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    owners = []
    for _ in range(levels):
        owners.append(pc.list_parent_indices(array).to_numpy())
        array = pc.list_flatten(array)
    values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values, owners


def counts(owner: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(owner, minlength=size) if size else np.zeros(0, np.int64)


def positions(owner: np.ndarray, size: int) -> np.ndarray:
    """Position of each item inside its owner (owners are sorted, as Arrow lays lists out)."""
    starts = np.concatenate([[0], np.cumsum(counts(owner, size))[:-1]])
    return np.arange(owner.size) - starts[owner]


def is_numeric_leaf(kind: pa.DataType) -> bool:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def numeric_lists(values: pa.ChunkedArray, depth: int) -> np.ndarray | None:
    """For a column of lists of numbers nested ``depth`` deep, each row's length; else None."""
    if list_depth(values.type) != depth or not is_numeric_leaf(values.type) or not len(values):
        return None
    return pc.list_value_length(values.combine_chunks()).to_numpy(zero_copy_only=False)
