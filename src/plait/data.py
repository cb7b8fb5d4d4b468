"""Sources to Arrow tables, and typed column access that reports bad values precisely.

Every value error names the source, the 1-based data row, the column, what was found and
what was expected. In CSV files, empty cells and the usual markers (``NA``, ``N/A``,
``NULL``, ``NaN``, ...) are missing values in text columns as in numeric ones.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plait.errors import DataError

READERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".csv.gz": "csv",
    ".tsv.gz": "csv",
    ".txt.gz": "csv",
    ".jsonl.gz": "json",
    ".ndjson.gz": "json",
}
"""File endings to readers; ``.gz`` files are decompressed as they are read."""


@dataclass
class Table:
    """An Arrow table with where it came from, so errors can point at the file."""

    arrow: pa.Table
    source: str = "<table>"
    base_dir: Path = Path(".")
    origin: np.ndarray | None = None
    """For a table taken from another, the source row of each of its rows."""
    files: tuple[tuple[str, int], ...] = ()
    """For rows gathered from several files: each file and the origin of its first row."""

    @property
    def num_rows(self) -> int:
        return self.arrow.num_rows

    def take(self, rows: np.ndarray) -> Table:
        origin = rows if self.origin is None else self.origin[rows]
        return Table(self.arrow.take(pa.array(rows, pa.int64())), self.source, self.base_dir,
                     np.asarray(origin, np.int64), self.files)

    def row_number(self, row: int) -> int:
        """The 1-based data row in the source, for a 0-based row of this table."""
        return int(row if self.origin is None else self.origin[row]) + 1

    def at(self, row: int) -> str:
        """Where a 0-based row of this table came from: ``"FILE, row N"``."""
        number = self.row_number(row)
        if not self.files:
            return f"{self.source}, row {number}"
        starts = [start for _, start in self.files]
        name, start = self.files[bisect.bisect_right(starts, number - 1) - 1]
        return f"{name}, row {number - start}"

    def column(self, name: str, used_by: str) -> pa.ChunkedArray:
        if name not in self.arrow.column_names:
            shown = ", ".join(repr(c) for c in self.arrow.column_names[:20])
            raise DataError(
                f"{self.source}: no column {name!r} (needed by {used_by}); columns found: {shown}"
            )
        return self.arrow.column(name)

    def bad_value(self, column: str, row: int, found: Any, expected: str) -> DataError:
        return DataError(
            f"{self.at(row)}, column {column!r}: found {found!r}; "
            f"expected {expected}"
        )

    def numbers(self, name: str, used_by: str) -> np.ndarray:
        """A numeric column as float64, nulls as NaN; a non-numeric value is an error."""
        column = self.column(name, used_by)
        kind = column.type
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            trimmed = pc.utf8_trim_whitespace(column)
            blank = pc.equal(trimmed, "")
            trimmed = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
            try:
                return trimmed.cast(pa.float64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                row, value = first_unparsable(trimmed.to_pylist(), float)
                raise self.bad_value(name, row, value, "a number") from None
        if pa.types.is_null(kind):
            return np.full(self.num_rows, np.nan)
        raise DataError(f"{self.source}, column {name!r}: found values of type {kind}; expected numbers")

    def strings(self, name: str, used_by: str) -> pa.ChunkedArray:
        """Any scalar column as strings (integers and booleans become their text), nulls kept."""
        column = self.column(name, used_by)
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return column
        if pa.types.is_dictionary(kind):
            return column.cast(pa.string())
        if pa.types.is_floating(kind):
            values = column.to_numpy(zero_copy_only=False)
            whole = np.isnan(values) | (values == np.round(values))
            if whole.all():
                return pa.chunked_array([pc.cast(column.cast(pa.int64(), safe=False), pa.string())])
        if pa.types.is_nested(kind) or pa.types.is_binary(kind):
            raise DataError(
                f"{self.source}, column {name!r}: found values of type {kind}; "
                "expected text, integers or booleans"
            )
        return column.cast(pa.string())

    def lists(self, name: str, used_by: str) -> pa.ChunkedArray:
        column = self.column(name, used_by)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise DataError(
                f"{self.source}, column {name!r}: found values of type {column.type}; "
                "expected a list of numbers in each row"
            )
        return column


def first_unparsable(values: list[Any], parse: Any) -> tuple[int, Any]:
    for row, value in enumerate(values):
        if value is None:
            continue
        try:
            parse(value)
        except (TypeError, ValueError):
            return row, value
    return 0, None


def read_table(source: Any) -> Table:
    """Read a path (CSV, TSV, Parquet, JSON lines, Arrow IPC), a pandas DataFrame or an Arrow table."""
    if isinstance(source, Table):
        return source
    if isinstance(source, pa.Table):
        return Table(source, "<arrow table>")
    if type(source).__name__ == "DataFrame" and hasattr(source, "columns"):
        return Table(pa.Table.from_pandas(source, preserve_index=False), "<DataFrame>")
    if isinstance(source, (str, Path)):
        return read_file(Path(source))
    raise DataError(
        f"data: found a {type(source).__name__}; expected a file path, a pandas DataFrame "
        "or a pyarrow Table"
    )


def read_file(path: Path) -> Table:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a data file")
    ending = file_ending(path)
    reader = READERS.get(ending)
    if reader is None:
        allowed = ", ".join(sorted(READERS))
        raise DataError(f"{path}: unknown file type {ending or path.name!r}; expected one of {allowed}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a header and data rows")
    try:
        arrow = _read(path, reader)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as error:
        ragged = ragged_row(path, "\t" if ending.startswith(".tsv") else ",") if reader == "csv" else None
        raise DataError(f"{path}: cannot be read as {reader}: {ragged or _first_line(error)}") from None
    if arrow.num_rows == 0:
        raise DataError(f"{path}: has no data rows")
    return Table(arrow, str(path), path.resolve().parent)


def ragged_row(path: Path, delimiter: str) -> str | None:
    """For a CSV file that could not be parsed: the first data row whose number of fields
    differs from the header's, described for an error message; None if there is none."""
    import csv
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as file:
        rows = (fields for fields in csv.reader(file, delimiter=delimiter) if fields)
        header = next(rows, None)
        for number, fields in enumerate(rows, start=1):
            if header is not None and len(fields) != len(header):
                return (f"row {number}: found {len(fields)} fields; expected {len(header)}, one per "
                        f"header column")
    return None


def file_ending(path: Path) -> str:
    """The ending that names the format: ``.csv`` for ``a.csv``, ``.csv.gz`` for ``a.csv.gz``."""
    known = [ending for ending in READERS if path.name.lower().endswith(ending)]
    return max(known, key=len) if known else path.suffix.lower()


def _read(path: Path, reader: str) -> pa.Table:
    if reader == "csv":
        from pyarrow import csv

        delimiter = "\t" if file_ending(path).startswith(".tsv") else ","
        parse = csv.ParseOptions(delimiter=delimiter)
        convert = csv.ConvertOptions(strings_can_be_null=True)
        table = csv.read_csv(path, parse_options=parse, convert_options=convert)
        if _headerless(table.column_names):
            generated = csv.ReadOptions(autogenerate_column_names=True)
            table = csv.read_csv(path, read_options=generated, parse_options=parse, convert_options=convert)
        return table
    if reader == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if reader == "json":
        from pyarrow import json

        return json.read_json(path)
    from pyarrow import ipc

    with ipc.open_file(path) as file:
        return file.read_all()


def _headerless(names: list[str]) -> bool:
    """A first row of numbers only is data, not a header: its columns are named f0, f1, ..."""
    try:
        [float(name) for name in names]
    except ValueError:
        return False
    return True


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
