"""Encoded rows kept together as parts: in memory, or on disk as one ``.npy`` file per array."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


class Part:
    """Rows of encoded inputs, targets, sample weights and which targets are present, held
    together in memory."""

    def __init__(self, x: Arrays, y: Arrays, weights: Arrays | None, present: Arrays | None = None,
                 read: int | None = None) -> None:
        self.x, self.y, self.weights = x, y, weights
        self.present = present if present is not None else {
            name: np.ones(len(values), bool) for name, values in y.items()}
        self.rows = len(next(iter(x.values())))
        self.read = self.rows if read is None else read
        """Rows read, before the input policies left any out."""

    def load(self) -> tuple[Arrays, Arrays, Arrays | None]:
        return self.x, self.y, self.weights

    def inputs(self) -> Arrays:
        return self.x

    def targets(self) -> tuple[Arrays, Arrays]:
        """Per output, the encoded targets and which rows have one (for scoring)."""
        return self.y, self.present


class StoredPart(Part):
    """A part on disk, written by ``write_part``: one ``.npy`` file per array, read whole
    when a batch needs it (``Batches`` holds at most two parts in memory at a time)."""

    def __init__(self, folder: Path, rows: int, weighted: bool) -> None:
        self.folder, self.rows, self.weighted = folder, rows, weighted
        self.read = rows

    def arrays(self, kind: str) -> Arrays:
        """The arrays of one kind (``x``, ``y``, ``w`` or ``present``), by name."""
        return {path.stem.split(".", 1)[1]: np.load(path)
                for path in sorted(self.folder.glob(f"{kind}.*.npy"))}

    def load(self) -> tuple[Arrays, Arrays, Arrays | None]:
        return self.arrays("x"), self.arrays("y"), self.arrays("w") if self.weighted else None

    def inputs(self) -> Arrays:
        return self.arrays("x")

    def targets(self) -> tuple[Arrays, Arrays]:
        """Per output, the encoded targets and which rows have one (for scoring): the inputs,
        the bulk of a part, are not read."""
        return self.arrays("y"), self.arrays("present")


def write_part(folder: Path, x: Arrays, y: Arrays, weights: Arrays, present: Arrays) -> None:
    """Each array to its own ``.npy`` file, flushed to disk and dropped from the page cache, so
    encoding a file larger than memory does not pile up dirty pages."""
    folder.mkdir(parents=True)
    for kind, arrays in (("x", x), ("y", y), ("w", weights), ("present", present)):
        for name, values in arrays.items():
            with open(folder / f"{kind}.{name}.npy", "wb") as file:
                np.save(file, np.ascontiguousarray(values))
                file.flush()
                os.fsync(file.fileno())
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def write_json(path: Path, value: Any) -> None:
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    partial.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


