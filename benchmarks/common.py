"""What the benchmarks share: timing, synthetic tables with a learnable signal, the machine.

Every figure is a rate measured several times; the median is kept, and comparisons are
taken in the same process, alternating the two sides, so that a machine shared with other
work slows both alike.
"""

from __future__ import annotations

import io
import json
import os
import platform
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs" / "bench"
"""Scratch space (ignored by git): split files, the peers' virtual environments."""


def seconds(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def rate(items: int, action: Callable[[], Any], repeats: int) -> float:
    """Items per second of ``action``: the median of ``repeats`` timed runs."""
    return items / statistics.median(seconds(action) for _ in range(repeats))


def alternate(actions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """The seconds of each action in every round, run in turn A, B, A, B, ... for ``rounds``
    rounds, so that both sides see the same load."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            times[name].append(seconds(action))
    return times


def paired_ratio(times: dict[str, list[float]], measured: str, reference: str) -> float:
    """How many times faster ``measured`` ran than ``reference``: the median over rounds of
    their two times in the same round, more robust to a load that changes during the run
    than a ratio of medians."""
    return statistics.median(ref / own for own, ref in zip(times[measured], times[reference], strict=True))


def machine() -> dict[str, Any]:
    import keras

    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "system": platform.platform(), "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "date": time.strftime("%Y-%m-%d")}


def sentences(rng: np.random.Generator, rows: int, words: int,
              vocabulary: int = 5000) -> tuple[pa.Array, np.ndarray]:
    """``rows`` texts of ``words`` words drawn with Zipf-like frequencies (capitalised first
    word, a comma now and then, a full stop), and each row's count of "good" minus "bad" words."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, vocabulary)
    lexicon = np.array(["".join(rng.choice(letters, n)) for n in lengths], dtype=object)
    weights = 1.0 / np.arange(1, vocabulary + 1)
    ids = rng.choice(vocabulary, size=(rows, words), p=weights / weights.sum())
    tokens = lexicon[ids]
    tokens[:, 0] = [word.capitalize() for word in tokens[:, 0]]
    tokens[:, words // 2] = [word + "," for word in tokens[:, words // 2]]
    offsets = pa.array(np.arange(0, rows * words + 1, words, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(tokens.ravel(), pa.string()))
    text = pc.binary_join_element_wise(pc.binary_join(lists, " "), ".", "")
    good, bad = (ids >= 20) & (ids < 40), (ids >= 40) & (ids < 60)
    return text, good.sum(axis=1) - bad.sum(axis=1)


def tabular(rng: np.random.Generator, rows: int) -> tuple[dict[str, Any], np.ndarray]:
    """Three numeric columns (one with missing values), a 50-level category, and their signal."""
    a, b, c = rng.normal(size=(3, rows))
    c[rng.random(rows) < 0.05] = np.nan
    levels = np.array([f"level_{i:02d}" for i in range(50)], dtype=object)
    level = rng.integers(0, 50, rows)
    columns = {"a": a, "b": b, "c": c, "group": pa.array(levels[level], pa.string())}
    return columns, a - 0.5 * b + (level % 5 - 2) * 0.4


def text_table(rows: int, seed: int = 0, words: int = 40) -> pa.Table:
    """Numbers, a category and a 40-word text; a binary and a numeric target."""
    rng = np.random.default_rng(seed)
    columns, signal = tabular(rng, rows)
    columns["review"], score = sentences(rng, rows, words)
    signal = signal + 0.5 * score + rng.normal(scale=0.5, size=rows)
    columns["liked"] = signal > 0
    columns["score"] = signal
    return pa.table(columns)


def image_table(rows: int, seed: int = 0, size: int = 32) -> pa.Table:
    """Numbers, a category and a size × size RGB image as a list of pixel values."""
    rng = np.random.default_rng(seed)
    columns, signal = tabular(rng, rows)
    pixels = rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)
    bright = rng.random(rows) < 0.5
    pixels[bright, : size // 2] //= 2
    per_row = size * size * 3
    offsets = pa.array(np.arange(0, rows * per_row + 1, per_row, dtype=np.int32))
    columns["photo"] = pa.ListArray.from_arrays(offsets, pa.array(pixels.ravel()))
    columns["liked"] = signal + np.where(bright, 1.0, -1.0) > 0
    columns["score"] = signal
    return pa.table(columns)


def png_column(rows: int, seed: int = 0, size: int = 64) -> pa.Array:
    """Encoded PNG images of size × size RGB noise, as a binary column."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(rows):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    return pa.array(blobs, pa.binary())


def sequence_column(rows: int, steps: int, features: int, seed: int = 0) -> pa.Array:
    """A list<list<float64>> column: ``steps`` steps of ``features`` numbers per row."""
    rng = np.random.default_rng(seed)
    values = pa.array(rng.normal(size=rows * steps * features))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, rows * steps * features + 1, features,
                                                        dtype=np.int32)), values)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows * steps + 1, steps, dtype=np.int32)), inner)


TABULAR_INPUTS = [
    {"name": "a", "type": "number"},
    {"name": "b", "type": "number"},
    {"name": "c", "type": "number"},
    {"name": "group", "type": "category", "embedding_dim": 8},
]
OUTPUTS = [{"name": "liked", "type": "binary"}, {"name": "score", "type": "number", "weight": 0.5}]


def text_spec(batch_size: int = 256) -> dict:
    """Tabular + text: the text's word embeddings averaged, concatenated with the rest."""
    text = {"name": "review", "type": "text", "length": 40, "vocabulary_size": 5000,
            "embedding_dim": 32, "encoder": {"kind": "mean"}}
    return {"inputs": [*TABULAR_INPUTS, text], "head": {"layers": [64]}, "outputs": OUTPUTS,
            "train": {"epochs": 1, "batch_size": batch_size, "validation_split": 0.0}}


def image_spec(batch_size: int = 256, size: int = 32) -> dict:
    """Tabular + image: a two-layer convolution stack, concatenated with the rest."""
    image = {"name": "photo", "type": "image", "size": [size, size],
             "encoder": {"kind": "cnn", "filters": [16, 32]}}
    return {"inputs": [*TABULAR_INPUTS, image], "head": {"layers": [64]}, "outputs": OUTPUTS,
            "train": {"epochs": 1, "batch_size": batch_size, "validation_split": 0.0}}


def child_outcome(done: subprocess.CompletedProcess) -> dict[str, Any]:
    """What a measured child process printed last as JSON; or that the memory cap killed it,
    or how else it ended."""
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    if done.returncode == -signal.SIGKILL:
        return {"outcome": "killed (cap)"}
    return {"outcome": f"exit {done.returncode}", "error": done.stderr.strip().splitlines()[-1:]}
