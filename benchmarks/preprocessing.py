"""Preprocessing: rows per second of fitting and encoding each input type, beside a plain
baseline doing the same transformation directly with numpy, pyarrow compute or Pillow.

The baselines skip what plait adds on top (missing-value policies and their counts, the
checks that name a bad row), so the ratio is what those cost.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from common import png_column, rate, sentences, sequence_column, tabular


def number_baseline() -> tuple[Callable, Callable]:
    def fit(column: pa.ChunkedArray) -> tuple[float, ...]:
        """Mean and standard deviation (used below), and the minimum, maximum and median that
        plait's state also holds."""
        values = column.to_numpy()
        finite = values[np.isfinite(values)]
        return (float(finite.mean()), float(finite.std()), float(finite.min()), float(finite.max()),
                float(np.median(finite)))

    def encode(column: pa.ChunkedArray, state: tuple[float, ...]) -> np.ndarray:
        values = column.to_numpy()
        values = np.where(np.isfinite(values), values, state[0])
        return ((values - state[0]) / state[1]).astype(np.float32).reshape(-1, 1)

    return fit, encode


def category_baseline() -> tuple[Callable, Callable]:
    def fit(column: pa.ChunkedArray) -> pa.Array:
        counts = pc.value_counts(column)
        order = pc.sort_indices(counts.field("counts"), sort_keys=[("", "descending")])
        return counts.field("values").take(order)

    def encode(column: pa.ChunkedArray, vocabulary: pa.Array) -> np.ndarray:
        index = pc.fill_null(pc.add(pc.index_in(column, value_set=vocabulary), 1), 0)
        return index.to_numpy().astype(np.int32).reshape(-1, 1)

    return fit, encode


def tokens(column: pa.ChunkedArray) -> pa.Array:
    lowered = pc.utf8_lower(column.combine_chunks())
    return pc.split_pattern_regex(lowered, r"[^\w']+")


def text_baseline(length: int) -> tuple[Callable, Callable]:
    def fit(column: pa.ChunkedArray) -> pa.Array:
        counts = pc.value_counts(pc.list_flatten(tokens(column)))
        order = pc.sort_indices(counts.field("counts"), sort_keys=[("", "descending")])
        return counts.field("values").take(order)[:20000]

    def encode(column: pa.ChunkedArray, vocabulary: pa.Array) -> np.ndarray:
        lists = tokens(column)
        ids = pc.fill_null(pc.add(pc.index_in(pc.list_flatten(lists), value_set=vocabulary), 2), 1)
        ids = ids.to_numpy().astype(np.int32)
        offsets = lists.offsets.to_numpy()
        lengths = np.diff(offsets)
        keep = np.arange(length) < np.minimum(lengths, length)[:, None]
        starts = np.repeat(offsets[:-1], keep.sum(axis=1))
        within = np.nonzero(keep)[1]
        out = np.zeros((len(lengths), length), np.int32)
        out[keep] = ids[starts + within]
        return out

    return fit, encode


def image_baseline(size: int) -> tuple[Callable, Callable]:
    from PIL import Image

    def encode(column: pa.Array, state: Any) -> np.ndarray:
        images = []
        for blob in column.to_pylist():
            with Image.open(io.BytesIO(blob)) as image:
                images.append(np.asarray(image.convert("RGB").resize((size, size)), np.float32) / 255.0)
        return np.stack(images)

    return (lambda column: None), encode


def sequence_baseline(steps: int, features: int) -> tuple[Callable, Callable]:
    def values(column: pa.Array) -> np.ndarray:
        return pc.list_flatten(pc.list_flatten(column)).to_numpy().reshape(-1, features)

    def fit(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        flat = values(column)
        return flat.mean(axis=0), flat.std(axis=0)

    def encode(column: pa.Array, state: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        scaled = (values(column) - state[0]) / state[1]
        return scaled.reshape(len(column), steps, features).astype(np.float32)

    return fit, encode


def measure(spec: dict, column: Any, baseline: tuple[Callable, Callable], repeats: int) -> dict[str, Any]:
    """plait's fit and encode of one input, and the baseline's, on the same column."""
    from plait.data import Table
    from plait.registry import INPUT_TYPES

    table = Table(pa.table({spec["name"]: column}))
    rows = table.num_rows
    kind = INPUT_TYPES[spec["type"]].model_validate(spec)
    state = kind.fit(table)
    fit, encode = baseline
    column = table.arrow.column(spec["name"])
    if isinstance(column, pa.ChunkedArray) and spec["type"] in ("image", "sequence"):
        column = column.combine_chunks()
    base_state = fit(column)
    plait_out, base_out = kind.encode(table, state).values, encode(column, base_state)
    if plait_out.shape != base_out.shape:
        raise RuntimeError(f"{spec['type']}: plait encodes to {plait_out.shape}, the baseline to "
                           f"{base_out.shape}; they must do the same transformation")
    result = {
        "rows": rows,
        "fit_rows_per_s": rate(rows, lambda: kind.fit(table), repeats),
        "encode_rows_per_s": rate(rows, lambda: kind.encode(table, state), repeats),
        "baseline_fit_rows_per_s": rate(rows, lambda: fit(column), repeats),
        "baseline_encode_rows_per_s": rate(rows, lambda: encode(column, base_state), repeats),
    }
    result["encode_ratio"] = result["encode_rows_per_s"] / result["baseline_encode_rows_per_s"]
    return result


def run(quick: bool) -> dict[str, Any]:
    repeats = 3 if quick else 5
    scalar_rows, text_rows, image_rows, sequence_rows = (
        (100_000, 10_000, 100, 10_000) if quick else (2_000_000, 200_000, 2_000, 200_000))
    rng = np.random.default_rng(0)
    columns, _ = tabular(rng, scalar_rows)
    text, _ = sentences(rng, text_rows, 40)
    steps, features = 20, 3
    return {
        "number": measure({"name": "c", "type": "number"}, pa.array(columns["c"]),
                          number_baseline(), repeats),
        "category": measure({"name": "group", "type": "category"}, columns["group"],
                            category_baseline(), repeats),
        "text_40_words": measure({"name": "review", "type": "text", "length": 40}, text,
                                 text_baseline(40), repeats),
        "image_64_to_32": measure({"name": "photo", "type": "image", "size": [32, 32]},
                                  png_column(image_rows, size=64), image_baseline(32), repeats),
        "sequence_20x3": measure({"name": "motion", "type": "sequence"},
                                 sequence_column(sequence_rows, steps, features),
                                 sequence_baseline(steps, features), repeats),
    }
