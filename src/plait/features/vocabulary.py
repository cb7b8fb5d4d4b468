"""Vocabularies of strings fitted with Arrow kernels, shared by categories, labels and text."""

from __future__ import annotations

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


def lookup(values: pa.Array | pa.ChunkedArray, vocabulary: list[str], offset: int) -> np.ndarray:
    """Index of each value in the vocabulary plus ``offset``; 0 for unseen and null values."""
    index = pc.index_in(values, value_set=pa.array(vocabulary, pa.string()))
    index = pc.fill_null(pc.add(index, offset), 0)
    return index.to_numpy(zero_copy_only=False).astype(np.int32)
