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
    """An Arrow table with where it came from, so errors can point at the file.

    A table made from the records of a request (``records=True``) names a bad value by its
    record (0-based, as in the JSON list) and field instead of a file, row and column.
    """

    arrow: pa.Table
    source: str = "<table>"
    base_dir: Path = Path(".")
    origin: np.ndarray | None = None
    """For a table taken from another, the source row of each of its rows."""
    files: tuple[tuple[str, int], ...] = ()
    """For rows gathered from several files: each file and the origin of its first row."""
    records: bool = False

    @property
    def num_rows(self) -> int:
        return self.arrow.num_rows

    def take(self, rows: np.ndarray) -> Table:
        origin = rows if self.origin is None else self.origin[rows]
        return Table(self.arrow.take(pa.array(rows, pa.int64())), self.source, self.base_dir,
                     np.asarray(origin, np.int64), self.files, self.records)

    def row_number(self, row: int) -> int:
        """The 1-based data row in the source, for a 0-based row of this table."""
        return int(row if self.origin is None else self.origin[row]) + 1

    def at(self, row: int) -> str:
        """Where a 0-based row of this table came from: ``"FILE, row N"`` or ``"record N"``."""
        number = self.row_number(row)
        if self.records:
            return f"record {number - 1}"
        if not self.files:
            return f"{self.source}, row {number}"
        starts = [start for _, start in self.files]
        name, start = self.files[bisect.bisect_right(starts, number - 1) - 1]
        return f"{name}, row {number - start}"

    def place(self, row: int, column: str) -> str:
        """``"FILE, row N, column 'c'"``, or ``"record N, field 'c'"`` for a request."""
        return f"{self.at(row)}, {'field' if self.records else 'column'} {column!r}"

    def error(self, row: int, column: str, problem: str) -> DataError:
        """A problem with one value: where it is, then what is wrong."""
        return DataError(f"{self.place(row, column)}: {problem}", row=self.row_number(row) - 1, column=column,
                         problem=problem)

    def column(self, name: str, used_by: str) -> pa.ChunkedArray:
        if name not in self.arrow.column_names:
            shown = ", ".join(repr(c) for c in self.arrow.column_names[:20])
            raise DataError(
                f"{self.source}: no column {name!r} (needed by {used_by}); columns found: {shown}",
                column=name,
            )
        return self.arrow.column(name)

    def bad_value(self, column: str, row: int, found: Any, expected: str) -> DataError:
        return self.error(row, column, f"found {found!r}; expected {expected}")

    def wrong_type(self, name: str, column: pa.ChunkedArray, expected: str) -> DataError:
        """A column whose values are of a kind the input cannot read; for a request, the
        first record that sent one is named."""
        if self.records:
            row = int(np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))[0])
            return self.bad_value(name, row, column[row].as_py(), expected)
        return DataError(f"{self.source}, column {name!r}: found values of type {column.type}; "
                         f"expected {expected}", column=name)

    def numbers(self, name: str, used_by: str) -> np.ndarray:
        """A numeric column as float64, nulls as NaN (see ``numbers``); a value that is not a
        number is an error naming its row."""
        column = self.column(name, used_by)
        if not readable_as_numbers(column.type):
            raise self.wrong_type(name, column, "numbers")
        values, bad = numbers(column)
        if bad is not None:
            raise self.bad_value(name, bad, column[bad].as_py(), "a number")
        return values

    def strings(self, name: str, used_by: str) -> pa.ChunkedArray:
        """Any scalar column as labels (see ``labels``), nulls kept."""
        column = self.column(name, used_by)
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type) or pa.types.is_large_binary(
                column.type):
            raise self.wrong_type(name, column, "text, numbers or booleans")
        return labels(column)

    def lists(self, name: str, used_by: str) -> pa.ChunkedArray:
        """A list column; a column with no value at all (every row missing) reads as lists."""
        column = self.column(name, used_by)
        if pa.types.is_null(column.type):
            return pa.chunked_array([pa.nulls(len(column), pa.list_(pa.float64()))])
        if not is_list(column.type):
            raise self.wrong_type(name, column, "a list of numbers in each row")
        return column


def is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def readable_as_numbers(kind: pa.DataType) -> bool:
    return (pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
            or pa.types.is_decimal(kind))


def numbers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int | None]:
    """Values as float64 by the one rule for numbers, and the first row that is not a number.

    Numbers as they are; booleans as 1 and 0; text holding a number (spaces around it are
    ignored, empty text is missing); nulls as NaN. Files and requests are read alike.

    >>> numbers(pa.array([" 2.5", "", None]))[0].tolist()
    [2.5, nan, nan]
    >>> numbers(pa.array(["1", "one"]))[1]
    1
    """
    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan), None
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64), None
    trimmed = pc.utf8_trim_whitespace(column)
    trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, trimmed.type), trimmed)
    try:
        return trimmed.cast(pa.float64()).to_numpy(zero_copy_only=False), None
    except pa.ArrowInvalid:
        row, _ = first_unparsable(trimmed.to_pylist(), float)
        return np.zeros(0), row


def labels(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Values as label text by the one rule for labels, nulls kept.

    Text as it is; integers, and numbers that are whole, as their digits (``2.0`` is
    ``"2"``); other numbers as their shortest decimal text (``1.5``); booleans as ``true``
    and ``false``. Files and requests are read alike.

    >>> labels(pa.array([2.0, 1.5, None])).to_pylist()
    ['2', '1.5', None]
    """
    kind = column.type
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_dictionary(kind):
        return column.cast(pa.string())
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2**63)
        digits = pc.cast(pc.cast(column, pa.int64(), safe=False), pa.string())
        return pa.chunked_array([pc.if_else(pa.array(whole), digits.combine_chunks(),
                                            pc.cast(column, pa.string()).combine_chunks())])
    return column.cast(pa.string())


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


# -- request values: JSON lists read by the same rules as file columns ----------------------


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def refused(row: int, field: str, value: Any, expected: str) -> DataError:
    """A request value that cannot be read: its record, its field, what it was, what was expected."""
    problem = f"found {shown(value)}; expected {expected}"
    return DataError(f"record {row}, field {field!r}: {problem}", row=row, column=field, problem=problem)


def json_numbers(values: list[Any], field: str) -> pa.Array:
    """JSON values of one field read by the rule for numbers (see ``numbers``).

    >>> json_numbers([1, True, " 2.5", None], "x").to_pylist()
    [1.0, 1.0, 2.5, nan]
    """
    out = np.full(len(values), np.nan)
    texts: list[int] = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            texts.append(row)
        elif isinstance(value, (bool, int, float)):
            try:
                out[row] = float(value)
            except OverflowError:
                raise refused(row, field, value, "a number") from None
        elif value is not None:
            raise refused(row, field, value, "a number, true/false, text holding a number, or null")
    if texts:
        parsed, bad = numbers(pa.array([values[row] for row in texts], pa.string()))
        if bad is not None:
            raise refused(texts[bad], field, values[texts[bad]], "a number")
        out[texts] = parsed
    return pa.array(out)


def json_labels(values: list[Any], field: str) -> pa.Array:
    """JSON values of one field read by the rule for labels (see ``labels``).

    >>> json_labels(["a", 2, 2.0, 1.5, True, None], "x").to_pylist()
    ['a', '2', '2', '1.5', 'true', None]
    """
    out: list[str | None] = [None] * len(values)
    fractions: list[int] = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            out[row] = value
        elif isinstance(value, bool):
            out[row] = "true" if value else "false"
        elif isinstance(value, int):
            out[row] = str(value)
        elif isinstance(value, float):
            fractions.append(row)
        elif value is not None:
            raise refused(row, field, value, "text, a number, true/false, or null")
    if fractions:
        texts = labels(pa.array([values[row] for row in fractions], pa.float64())).to_pylist()
        for row, text in zip(fractions, texts, strict=True):
            out[row] = text
    return pa.array(out, pa.string())


def json_lists(values: list[Any], field: str) -> pa.Array:
    """JSON lists of numbers (or of lists of numbers, nested evenly, as deep in every record).

    >>> json_lists([[1, 2], None, [3.5]], "x").to_pylist()
    [[1.0, 2.0], None, [3.5]]
    """
    depth: int | None = None
    first = 0
    cleaned = []
    for row, value in enumerate(values):
        if value is None:
            cleaned.append(None)
            continue
        try:
            if not isinstance(value, list):
                raise ValueError
            found, numbers_only = _as_floats(value)
        except (ValueError, TypeError, RecursionError):
            raise refused(row, field, value, "a list of numbers (nested evenly) or null") from None
        if depth is None:
            depth, first = found, row
        elif found != depth:
            raise refused(row, field, value, f"lists nested {depth} deep, as in record {first}")
        cleaned.append(numbers_only)
    kind: pa.DataType = pa.float64()
    for _ in range(depth or 1):
        kind = pa.list_(kind)
    return pa.array(cleaned, kind)


def _as_floats(value: Any) -> tuple[int, Any]:
    """How deep the lists go, and the value with every number as a float."""
    if isinstance(value, list):
        inner = [_as_floats(item) for item in value]
        depths = {depth for depth, _ in inner}
        if len(depths) > 1:
            raise ValueError
        return 1 + (depths.pop() if depths else 0), [item for _, item in inner]
    if isinstance(value, (bool, int, float)):
        return 0, float(value)
    raise ValueError
