"""``date``: a calendar date or a moment, read as the year and the cycles of the calendar."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plait.data import Table, json_labels
from plait.evidence import Column, is_string
from plait.features.base import Encoded, Example, InputType, Recognised, same_values
from plait.schema import FittedState, StateClass

ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
"""ISO-8601 calendar dates, with an optional time and an optional offset from UTC."""
OFFSET = r"([T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?:Z|[+-]\d{2}:?\d{2})$"
CYCLES = (("month", 12.0), ("day", 31.0), ("day_of_week", 7.0), ("hour", 24.0))
"""Each cycle and its period; a value ``v`` becomes ``sin(2πv/period)``, ``cos(2πv/period)``."""


class DateState(FittedState):
    """The scaling of the fractional year, whether the training values carry a time of
    day (then the hour is a cycle too), and the encoded value of the median training date,
    which missing dates take."""

    year_shift: float
    year_divide: float
    has_time: bool
    fill: list[float]


class DateInput(InputType):
    """A date or a moment: ISO-8601 text (``2024-03-05``, ``2024-03-05T14:30``, with or
    without ``Z`` or an offset such as ``+02:00``), or Arrow date and timestamp columns, with
    or without a time zone.

    The branch sees the fractional year, standardised with training statistics, and the
    month, day of month, day of week and (when the training values have times) hour, each
    as a sine and cosine pair, so that December sits next to January. Times are read as
    the local time they were written in: ``14:30+02:00`` is 14:30, and a timestamp with a
    time zone is read in its zone. Missing dates follow ``missing``; with ``fill`` they take
    the median training date.

    >>> date = DateInput(name="sold")
    >>> table = Table(pa.table({"sold": ["2024-03-04", "2024-12-31T18:00+01:00", None]}))
    >>> state = date.fit(table)
    >>> (state.has_time, date.input_shape(state))
    (True, (9,))
    """

    type: Literal["date"] = "date"

    State: ClassVar[StateClass] = DateState
    accepts: ClassVar[str] = ("an ISO-8601 date or date and time (2024-03-05, 2024-03-05T14:30:00+02:00), "
                              "or null")
    widget: ClassVar[str] = "text"
    recognise_order: ClassVar[int] = 10

    def moments(self, table: Table) -> pa.Array:
        """The column as naive timestamps in local time; nulls kept."""
        column = table.column(self.source, self.describe_use())
        kind = column.type
        if pa.types.is_timestamp(kind):
            column = pc.local_timestamp(column) if kind.tz else column
            return column.combine_chunks().cast(pa.timestamp("us"))
        if pa.types.is_date(kind):
            return column.combine_chunks().cast(pa.timestamp("us"))
        if not is_string(kind) and not pa.types.is_null(kind):
            raise table.wrong_type(self.source, column, "ISO-8601 dates, or date or timestamp values")
        text = pc.replace_substring_regex(pc.utf8_trim_whitespace(column.cast(pa.string())), OFFSET, r"\1")
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).combine_chunks()
        try:
            return text.cast(pa.timestamp("us"))
        except pa.ArrowInvalid:
            row = next(row for row, value in enumerate(text.to_pylist()) if value is not None
                       and not _parses(value))
            expected = self.accepts.removesuffix(", or null")
            raise table.bad_value(self.source, row, column[row].as_py(), expected) from None

    def features(self, moments: pa.Array, has_time: bool) -> np.ndarray:
        """Per row: the fractional year, then (sine, cosine) of each cycle; NaN where missing."""
        parts = {"year": pc.year(moments), "month": pc.subtract(pc.month(moments), 1),
                 "day": pc.subtract(pc.day(moments), 1), "day_of_week": pc.day_of_week(moments),
                 "hour": pc.add(pc.hour(moments), pc.divide(pc.cast(pc.minute(moments), pa.float64()), 60.0))}
        values = {name: part.cast(pa.float64()).to_numpy(zero_copy_only=False)
                  for name, part in parts.items()}
        year_day = pc.day_of_year(moments).cast(pa.float64()).to_numpy(zero_copy_only=False)
        columns = [values["year"] + (year_day - 1) / 365.25]
        for name, period in CYCLES:
            if name == "hour" and not has_time:
                continue
            angle = 2 * np.pi * values[name] / period
            columns += [np.sin(angle), np.cos(angle)]
        return np.stack(columns, axis=1)

    def fit(self, table: Table) -> DateState:
        moments = self.moments(table)
        present = moments.drop_null()
        micros = present.cast(pa.int64()).to_numpy()
        has_time = bool((micros % 86_400_000_000 != 0).any())
        years = self.features(present, False)[:, 0] if len(present) else np.zeros(1)
        std = float(years.std())
        shift, divide = float(years.mean()), std if std > 0 else 1.0
        median = pa.array([int(np.median(micros)) if micros.size else 0], pa.int64()).cast(pa.timestamp("us"))
        fill = self.features(median, has_time)[0]
        fill[0] = (fill[0] - shift) / divide
        return DateState(year_shift=shift, year_divide=divide, has_time=has_time, fill=fill.tolist())

    def encode(self, table: Table, state: DateState) -> Encoded:
        values = self.features(self.moments(table), state.has_time)
        missing = np.isnan(values[:, 0])
        values[:, 0] = (values[:, 0] - state.year_shift) / state.year_divide
        values[missing] = np.asarray(state.fill)
        return Encoded(values.astype(np.float32), missing)

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_labels(values, field)

    def field_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
                          {"type": "null"}]}

    def schema_details(self, state: DateState) -> dict[str, Any]:
        return {"example": "2024-03-05T14:30" if state.has_time else "2024-03-05", "time": state.has_time}

    def input_shape(self, state: DateState) -> tuple[int, ...]:
        return (1 + 2 * (len(CYCLES) - (0 if state.has_time else 1)),)

    def placeholder_state(self) -> DateState:
        return DateState(year_shift=2000.0, year_divide=10.0, has_time=False, fill=[0.0, 0, 1, 0, 1, 0, 1])

    def encoding_layers(self, x: Any, state: DateState) -> Any:
        return x

    def neutral(self, state: DateState) -> np.ndarray:
        """The median training date."""
        return np.asarray(state.fill)

    def describe_array(self, state: DateState, fitted: bool) -> str:
        cycles = "month, day of month, day of week" + (", hour" if state.has_time else "")
        year = (f"(year - {state.year_shift:.6g}) / {state.year_divide:.6g}" if fitted
                else "the fractional year, standardised")
        return f"{year}, then the sine and cosine of the {cycles}; a missing date is the median training date"

    @classmethod
    def examples(cls) -> list[Example]:
        """ISO-8601 text with and without times and offsets; a timestamp column with a time
        zone against the same moments written with their offsets; a date column."""
        text = ["2024-03-05", "2023-12-31T23:30:00Z", None, "2024-07-01 08:15", "2022-02-28T14:30:00+02:00"]
        berlin = pa.array([1709629200_000000, None, 1719815400_000000],
                          pa.timestamp("us", tz="Europe/Berlin"))
        return [
            same_values({"type": "date"}, "a", pa.array(text), text),
            same_values({"type": "date"}, "a", berlin,
                        ["2024-03-05T10:00:00+01:00", None, "2024-07-01T08:30+02:00"]),
            same_values({"type": "date", "optional": True}, "a", pa.array([19000, None, 19500], pa.date32()),
                        ["2022-01-08", None, "2023-05-23"]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Date and timestamp columns, and text of which 90% or more is ISO-8601 dates."""
        kind = column.values.type
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            first, last = pc.min_max(column.values).values()
            return Recognised({"type": "date"}, f"{kind} values {first} to {last}, {column.of}{column.gaps}")
        if not is_string(kind):
            return None
        iso = pc.match_substring_regex(pc.utf8_trim_whitespace(column.values), ISO_DATE)
        share = pc.mean(iso.cast(pa.float64())).as_py()
        if share < 0.9:
            return None
        dates = pc.filter(column.values, iso)
        first, last = pc.min_max(dates).values()
        return Recognised({"type": "date"}, f"ISO-8601 dates ({share:.0%}) {first} to {last}, "
                          f"{column.of}{column.gaps}")


def _parses(value: str) -> bool:
    try:
        pa.array([value]).cast(pa.timestamp("us"))
    except pa.ArrowInvalid:
        return False
    return True
