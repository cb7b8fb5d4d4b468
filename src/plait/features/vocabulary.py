"""Vocabularies of strings fitted with Arrow kernels, shared by categories, labels and text."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def fit_vocabulary(values: pa.Array | pa.ChunkedArray, min_frequency: int = 1,
                   max_size: int | None = None) -> list[str]:
    """Distinct non-null values, most frequent first (ties in sorted order)."""
    counts = pc.value_counts(values.drop_null())
    if isinstance(counts, pa.ChunkedArray):
        counts = counts.combine_chunks()
    tokens = counts.field("values").to_pylist()
    frequency = counts.field("counts").to_numpy()
    order = sorted(range(len(tokens)), key=lambda i: (-frequency[i], tokens[i]))
    kept = [tokens[i] for i in order if frequency[i] >= min_frequency]
    return kept[:max_size] if max_size else kept


SMALL_LOOKUP = 4096
"""Up to this many values (a request's) are looked up in a dictionary kept for the
vocabulary; more (a file's batch) by Arrow, whose hash table of the vocabulary is built on
every call."""


def lookup(values: pa.Array | pa.ChunkedArray, vocabulary: list[str], offset: int) -> np.ndarray:
    """Index of each value in the vocabulary plus ``offset``; 0 for unseen and null values.

    >>> lookup(pa.array(["b", "x", None]), ["a", "b"], offset=1).tolist()
    [2, 0, 0]
    """
    if len(values) <= SMALL_LOOKUP:
        found = positions(vocabulary)
        return np.fromiter((found[value] + offset if value in found else 0 for value in values.to_pylist()),
                           np.int32, len(values))
    index = pc.index_in(values, value_set=pa.array(vocabulary, pa.string()))
    index = pc.fill_null(pc.add(index, offset), 0)
    return index.to_numpy(zero_copy_only=False).astype(np.int32)


_POSITIONS: dict[int, tuple[list[str], dict[str, int]]] = {}
_LOCK = threading.Lock()


def positions(vocabulary: list[str]) -> dict[str, int]:
    """Each value's position, kept for the last few vocabularies (the list itself is kept
    with it, so its id cannot name another list meanwhile)."""
    with _LOCK:
        cached = _POSITIONS.get(id(vocabulary))
        if cached is None or cached[0] is not vocabulary:
            if len(_POSITIONS) >= 16:
                _POSITIONS.pop(next(iter(_POSITIONS)))
            cached = (vocabulary, {value: position for position, value in enumerate(vocabulary)})
            _POSITIONS[id(vocabulary)] = cached
    return cached[1]
