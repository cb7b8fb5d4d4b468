"""Where rows come from: a table in memory, or files read in record batches.

Every consumer (fitting, encoding, training, evaluation, prediction, explanation) walks a
``Source`` batch by batch. A table in memory is a source of one batch; a Parquet or CSV
file (or a folder of them) too large for memory is read in batches of ``part_rows`` rows,
each a ``Table`` whose row numbers are those of its file, so a bad value is reported with
its file and row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from plait.data import Table, file_ending, ragged_row, read_table
from plait.errors import DataError
from plait.memory import READ_ROWS, release_memory
from plait.spec import Train

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
    """Rows read batch by batch: ``batches`` yields (file index, batch index, table)."""

    name: str
    on_disk: bool = False
    """Whether the rows come from files, so their encoded parts may be cached on disk."""

    def batches(self, columns: list[str]) -> Iterator[tuple[int, int, Table]]:
        raise NotImplementedError

    def row_counts(self, columns: list[str]) -> list[int]:
        raise NotImplementedError

    def identity(self) -> Any:
        raise NotImplementedError

    def gathered(self, pieces: list[pa.Table], rows: list[tuple[int, np.ndarray]],
                 counts: list[int]) -> Table:
        """Rows taken from several batches as one table that still names their source rows:
        ``pieces`` of the batches, with each piece's (file index, rows of that file);
        ``counts`` are the rows per file."""
        raise NotImplementedError


class TableSource(Source):
    """A table in memory: one batch.

    >>> source = TableSource(read_table(pa.table({"x": [1, 2, 3]})))
    >>> [table.num_rows for _, _, table in source.batches(["x"])]
    [3]
    """

    def __init__(self, table: Table) -> None:
        self.table, self.name = table, table.source

    def batches(self, columns: list[str]) -> Iterator[tuple[int, int, Table]]:
        yield 0, 0, self.table

    def row_counts(self, columns: list[str]) -> list[int]:
        return [self.table.num_rows]

    def identity(self) -> Any:
        return [self.table.num_rows, str(self.table.arrow.schema)]

    def gathered(self, pieces: list[pa.Table], rows: list[tuple[int, np.ndarray]],
                 counts: list[int]) -> Table:
        return self.table.take(np.concatenate([chosen for _, chosen in rows]))


class FileSource(Source):
    """A Parquet or CSV file, or a folder of them, read as record batches of ``rows`` rows."""

    on_disk = True

    def __init__(self, path: str | Path, rows: int) -> None:
        self.path, self.rows = Path(path), rows
        self.name = str(self.path)
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

    def with_rows(self, rows: int) -> FileSource:
        """The same files, read in batches of ``rows`` rows."""
        return FileSource(self.path, rows)

    def batches(self, columns: list[str]) -> Iterator[tuple[int, int, Table]]:
        """(file index, batch index, batch) for every batch of every file, in order."""
        for file_index, path in enumerate(self.files):
            for batch_index, (first, table) in enumerate(self._file_batches(path, columns)):
                origin = np.arange(first, first + table.num_rows, dtype=np.int64)
                yield file_index, batch_index, Table(table, str(path), path.resolve().parent, origin)
                release_memory()  # what reading and encoding the batch freed, before the next

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
            batches = parquet.iter_batches(batch_size=min(self.rows, READ_ROWS), columns=wanted)
        else:
            batches = _csv_batches(path, columns)
        first = 0
        for table in _rechunk(batches, self.rows):
            yield first, table
            first += table.num_rows


    def gathered(self, pieces: list[pa.Table], rows: list[np.ndarray], counts: list[int]) -> Table:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        files = tuple((str(path), int(start)) for path, start in zip(self.files, starts, strict=True))
        arrow = pa.concat_tables(pieces, promote_options="permissive")
        origins = [starts[file_index] + chosen for file_index, chosen in rows]
        return Table(arrow, str(self.path), self.files[0].resolve().parent, np.concatenate(origins), files)


def open_source(data: Any, train: Train) -> Source:
    """The source of ``data``: files read in batches when ``wants_streaming``, else a table."""
    if wants_streaming(data, train):
        return FileSource(data, train.part_rows)
    return TableSource(read_table(data))


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


