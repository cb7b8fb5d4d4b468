"""Data larger than memory: read in record batches and encoded once into an on-disk cache.

A first pass draws a uniform sample of training rows and fits the preprocessing on it; a
second pass encodes every batch and writes it as a part (one ``.npy`` file per array) into
a folder named by a hash of the data's identity, the config's inputs and outputs and the
fitted state. Training reads one part at a time, so its memory is bounded by the part size
whatever the data's size, and a later run on the same data and config finds the fitted
state and the parts already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from plait.data import Table, file_ending, ragged_row
from plait.errors import DataError, PlaitError
from plait.preprocess import add_reports, fit_states, training_arrays
from plait.spec import Spec, Train
from plait.training import StoredPart, read_json, write_json, write_part

STREAMABLE = (".parquet", ".csv", ".tsv", ".csv.gz", ".tsv.gz")
MEGABYTE = 1 << 20


def default_cache_dir() -> Path:
    """``$PLAIT_CACHE_DIR``, or ``~/.cache/plait``."""
    return Path(os.environ.get("PLAIT_CACHE_DIR") or Path.home() / ".cache" / "plait")


def wants_streaming(data: Any, train: Train) -> bool:
    """Whether ``data`` is read in batches: always/never as configured; with ``auto``, for a
    folder, or for a Parquet or CSV file larger than ``stream_above_mb``.

    >>> wants_streaming("no-such-file.parquet", Train(stream="always"))
    True
    """
    if train.stream != "auto" or not isinstance(data, (str, Path)):
        return train.stream == "always" and isinstance(data, (str, Path))
    path = Path(data)
    if path.is_dir():
        return True
    return (path.is_file() and file_ending(path) in STREAMABLE
            and path.stat().st_size > train.stream_above_mb * MEGABYTE)


class Source:
    """A Parquet or CSV file, or a folder of them, read as record batches of ``rows`` rows.

    Every batch is a ``Table`` whose row numbers are those of its file, so a bad value is
    reported with its file and row.
    """

    def __init__(self, path: str | Path, rows: int) -> None:
        self.path, self.rows = Path(path), rows
        self.files = self._files()

    def _files(self) -> list[Path]:
        allowed = ", ".join(STREAMABLE)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or folder")
        if self.path.is_file():
            if file_ending(self.path) not in STREAMABLE:
                raise DataError(f"{self.path}: found a {file_ending(self.path) or 'file'} file; "
                                f"expected a file that can be read in batches: {allowed}")
            return [self.path]
        files = sorted(p for p in self.path.iterdir() if p.is_file() and file_ending(p) in STREAMABLE)
        if not files:
            raise DataError(f"{self.path}: found no data files in this folder; expected files "
                            f"ending in {allowed}")
        return files

    def identity(self) -> list[list]:
        """Each file's path, size and change time: what decides whether a cache still holds."""
        return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in self.files]

    def batches(self, columns: list[str]) -> Iterator[tuple[int, int, Table]]:
        """(file index, batch index, batch) for every batch of every file, in order."""
        for file_index, path in enumerate(self.files):
            for batch_index, (first, table) in enumerate(self._file_batches(path, columns)):
                origin = np.arange(first, first + table.num_rows, dtype=np.int64)
                yield file_index, batch_index, Table(table, str(path), path.resolve().parent, origin)

    def row_counts(self, columns: list[str]) -> list[int]:
        """Rows per file: from Parquet's metadata; for CSV by a pass that converts only the
        first of ``columns``."""
        counts = []
        for path in self.files:
            if file_ending(path) == ".parquet":
                counts.append(_parquet(path).metadata.num_rows)
            else:
                counts.append(sum(batch.num_rows for batch in _csv_batches(path, columns[:1])))
        return counts

    def _file_batches(self, path: Path, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
        if file_ending(path) == ".parquet":
            parquet = _parquet(path)
            wanted = [c for c in columns if c in parquet.schema_arrow.names]
            batches = parquet.iter_batches(batch_size=self.rows, columns=wanted)
        else:
            batches = _csv_batches(path, columns)
        first = 0
        for table in _rechunk(batches, self.rows):
            yield first, table
            first += table.num_rows


def _parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        # Pre-buffering keeps every column chunk read so far: memory would grow with the file.
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: cannot be read as parquet: {error}") from None


def _csv_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """CSV record batches; integer columns are read as floats, so a later block holding a
    fraction does not contradict the types guessed from the first block."""
    from pyarrow import csv

    delimiter = "\t" if file_ending(path).startswith(".tsv") else ","
    parse = csv.ParseOptions(delimiter=delimiter)
    try:
        with csv.open_csv(path, parse_options=parse) as probe:
            schema = probe.schema
        include = [c for c in schema.names if columns is None or c in columns]
        floats = {f.name: pa.float64() for f in schema if pa.types.is_integer(f.type) and f.name in include}
        convert = csv.ConvertOptions(include_columns=include, column_types=floats, strings_can_be_null=True)
        with csv.open_csv(path, parse_options=parse, convert_options=convert) as reader:
            yield from reader
    except pa.ArrowInvalid as error:
        where = ragged_row(path, delimiter)
        raise DataError(f"{path}: cannot be read as csv: {where or str(error).splitlines()[0]}") from None


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


@dataclass
class Prepared:
    """What training needs from streamed data: fitted states, parts, and the data report."""

    states: dict[str, dict]
    train: list[StoredPart]
    valid: list[StoredPart]
    report: dict


def prepare(spec: Spec, data: str | Path, validation_data: str | Path | None,
            cache_dir: str | Path | None = None, states: dict | None = None) -> Prepared:
    """Fit (or find) the states and encode (or find) the parts for a streamed run."""
    train = spec.train
    if validation_data is not None and not isinstance(validation_data, (str, Path)):
        raise DataError(f"validation data: found a {type(validation_data).__name__}; expected a file "
                        f"path, since the training data {data} is streamed from disk")
    source = Source(data, train.part_rows)
    valid_source = Source(validation_data, train.part_rows) if validation_data is not None else None
    split = 0.0 if valid_source else train.validation_split
    cache = Path(cache_dir or train.cache_dir or default_cache_dir())
    key = {"data": source.identity(), "valid": valid_source.identity() if valid_source else None,
           "encoding": {k: v for k, v in spec.to_dict().items() if k in ("inputs", "outputs")},
           "seed": train.seed, "split": split, "part_rows": train.part_rows,
           "fit_rows": train.fit_rows}
    if states is None:
        states = _cached(cache / f"states-{digest(key)}.json",
                         lambda: fit_states(spec, sample(spec, source, split, train.fit_rows, train.seed)))
    folder = cache / f"encoded-{digest({**key, 'states': states})}"
    if not (folder / "meta.json").is_file():
        _encode(spec, states, source, valid_source, split, folder)
    meta = read_json(folder / "meta.json")
    parts = {kind: [StoredPart(folder / kind / name, rows, meta["weighted"])
                    for name, rows in meta[kind]] for kind in ("train", "valid")}
    return Prepared(states, parts["train"], parts["valid"], meta["report"])


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]


def _cached(path: Path, compute: Any) -> Any:
    if path.is_file():
        return read_json(path)
    value = json.loads(json.dumps(compute()))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, value)
    return value


def needed_columns(spec: Spec) -> list[str]:
    columns = [c for s in spec.inputs for c in s.source_columns()]
    return list(dict.fromkeys(columns + [out.source for out in spec.outputs]))


def validation_rows(seed: int, file_index: int, batch_index: int, rows: int,
                    split: float) -> tuple[np.ndarray, np.random.Generator]:
    """Which rows of a batch are held out, from a generator seeded by the batch's place."""
    rng = np.random.default_rng([seed, file_index, batch_index])
    return rng.random(rows) < split, rng


def sample(spec: Spec, source: Source, split: float, rows: int, seed: int) -> Table:
    """A uniform sample of about ``rows`` training rows, each remembering its file and row."""
    columns = needed_columns(spec)
    counts = source.row_counts(columns)
    if not sum(counts):
        raise DataError(f"{source.path}: has no data rows")
    chance = min(1.0, rows / max(1.0, sum(counts) * (1.0 - split)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    pieces, origins = [], []
    for file_index, batch_index, table in source.batches(columns):
        held_out, rng = validation_rows(seed, file_index, batch_index, table.num_rows, split)
        chosen = np.flatnonzero(~held_out & (rng.random(table.num_rows) < chance))
        pieces.append(table.arrow.take(pa.array(chosen, pa.int64())))
        origins.append(starts[file_index] + table.origin[chosen])
    files = tuple((str(path), int(start)) for path, start in zip(source.files, starts, strict=True))
    arrow = pa.concat_tables(pieces, promote_options="permissive")
    return Table(arrow, str(source.path), source.files[0].resolve().parent,
                 np.concatenate(origins), files)


def _encode(spec: Spec, states: dict, source: Source, valid_source: Source | None, split: float,
            folder: Path) -> None:
    """Every batch encoded and written as a part; the folder appears whole or not at all."""
    partial = folder.with_name(f".partial-{os.getpid()}-{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    parts: dict[str, list] = {"train": [], "valid": []}
    counts = {"train": 0, "valid": 0}
    reports: dict[str, dict] = {"train": {}, "valid": {}}
    weighted = False
    try:
        for data, fraction in [(source, split)] + ([(valid_source, 1.0)] if valid_source else []):
            for file_index, batch_index, table in data.batches(needed_columns(spec)):
                held_out, _ = validation_rows(spec.train.seed, file_index, batch_index, table.num_rows,
                                              fraction)
                for kind, rows in (("train", np.flatnonzero(~held_out)), ("valid", np.flatnonzero(held_out))):
                    if not rows.size:
                        continue
                    arrays = training_arrays(spec, states, table if rows.size == table.num_rows
                                             else table.take(rows))
                    counts[kind] += int(rows.size)
                    add_reports(reports[kind], arrays.report)
                    if arrays.rows:
                        name = f"{len(parts[kind]):06d}"
                        write_part(partial / kind / name, arrays.x, arrays.y, arrays.weights, arrays.present)
                        parts[kind].append([name, arrays.rows])
                        weighted |= arrays.weighted
        report = {"training_rows": counts["train"], "used_rows": sum(rows for _, rows in parts["train"]),
                  "inputs": reports["train"], "streamed": True}
        if counts["valid"]:
            report["validation_rows"] = counts["valid"]
        if not parts["train"]:
            raise PlaitError(f"{source.path}: no rows left to train on after the missing-value "
                             f"policies: {report['inputs']}")
        write_json(partial / "meta.json", {**parts, "weighted": weighted, "report": report})
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
