"""``sequence``: a numeric time series per row, of shape [steps, features]."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plait.data import Table, json_lists
from plait.encoders import encoder_field
from plait.encoders.recurrent import LSTMEncoder
from plait.errors import DataError
from plait.evidence import Column
from plait.features.base import Encoded, Example, InputType, Recognised, same_values, shares_by
from plait.features.lists import counts, flatten, list_depth, numeric_lists, positions
from plait.schema import FittedState, StateClass


class SequenceState(FittedState):
    """Steps per row, numbers per step, and each feature's scaling."""

    steps: int = Field(gt=0)
    features: int = Field(gt=0)
    shift: list[float]
    divide: list[float]


class SequenceInput(InputType):
    """A list column: each row a list of steps, each step a list of ``features`` numbers
    (or a plain number when there is one feature).

    Rows longer than ``steps`` are cut, shorter ones padded with zeros at the end
    (``steps`` is the longest training row when not given). ``scale``: ``standard``
    standardises each feature with training statistics; ``series`` z-normalises each row's
    series, feature by feature, with its own mean and standard deviation over its steps (a
    constant series becomes zeros), as the UCR/UEA archives expect of time series; ``none``
    keeps the values as given.

    >>> SequenceInput(name="motion", steps=100, features=6).placeholder_state().steps
    100
    >>> SequenceInput(name="ecg", scale="series", encoder={"kind": "inception"}).encoder.depth
    6
    """

    type: Literal["sequence"] = "sequence"
    steps: int | None = Field(default=None, gt=0)
    features: int | None = Field(default=None, gt=0)
    scale: Literal["standard", "series", "none"] = "standard"
    encoder: encoder_field("lstm") = Field(default_factory=LSTMEncoder)  # type: ignore[valid-type]

    State: ClassVar[StateClass] = SequenceState
    accepts: ClassVar[str] = ("a list of steps, each a list of numbers (or a number when there is one "
                              "feature), or null")
    widget: ClassVar[str] = "json"
    recognise_order: ClassVar[int] = 39  # before vector, which takes fixed-length lists that are no series

    def steps_of(self, table: Any, features: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Values (items × features), the row of each step, the step's position, features."""
        column = table.lists(self.source, self.describe_use())
        depth = list_depth(column.type)
        if depth not in (1, 2):
            raise DataError(f"{table.source}, column {self.source!r}: found lists nested {depth} deep; "
                            "expected a list of steps, each a number or a list of numbers")
        values, owners = flatten(column, depth)
        rows = table.num_rows
        if depth == 1:
            features = features or 1
            if features != 1:
                raise DataError(f"{table.source}, column {self.source!r}: found one number per step; "
                                f"expected {features}")
            row_of_step = owners[0]
            return values.reshape(-1, 1), row_of_step, positions(row_of_step, rows), 1
        row_of_step, step_of_value = owners
        per_step = counts(step_of_value, len(row_of_step))
        if features is None:
            features = int(np.bincount(per_step).argmax()) if per_step.size else 1
        wrong = per_step != features
        if wrong.any():
            row = int(row_of_step[np.flatnonzero(wrong)[0]])
            raise table.bad_value(self.source, row, f"a step of {per_step[wrong][0]} numbers",
                                  f"{features} numbers in every step")
        return values.reshape(-1, features), row_of_step, positions(row_of_step, rows), features

    def fit(self, table: Table) -> SequenceState:
        values, row_of_step, _, features = self.steps_of(table, self.features)
        steps = self.steps or int(counts(row_of_step, table.num_rows).max(initial=1))
        finite = np.where(np.isfinite(values), values, np.nan)
        mean = np.nan_to_num(np.nanmean(finite, axis=0)) if len(values) else np.zeros(features)
        std = np.nan_to_num(np.nanstd(finite, axis=0)) if len(values) else np.ones(features)
        if self.scale != "standard":  # ``series`` scales each row by its own statistics at encoding
            mean, std = np.zeros(features), np.ones(features)
        return SequenceState(steps=steps, features=features, shift=mean.tolist(),
                             divide=np.where(std > 0, std, 1.0).tolist())

    def encode(self, table: Table, state: SequenceState) -> Encoded:
        values, row_of_step, position, features = self.steps_of(table, state.features)
        rows, steps = table.num_rows, state.steps
        finite = np.isfinite(values)
        clean = bool(finite.all())
        if self.scale == "series":
            scaled = per_series(values, finite & (position < steps)[:, None], row_of_step, rows)
        else:
            scaled = (values - np.asarray(state.shift)) / np.asarray(state.divide)
        if not clean:
            scaled[~finite] = 0.0
        if len(scaled) == rows * steps and (position < steps).all():
            # every row has exactly ``steps`` steps, already laid out row after row
            out = scaled.reshape(rows, steps, features).astype(np.float32)
        else:
            kept = position < steps
            out = np.zeros((rows, steps, features), np.float32)
            out[row_of_step[kept], position[kept]] = scaled[kept]
        column = table.lists(self.source, self.describe_use())
        missing = pc.is_null(column).to_numpy(zero_copy_only=False)
        if not clean:
            missing[row_of_step[~finite.all(axis=1)]] = True
        return Encoded(out, missing)

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_lists(values, field)

    def field_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "array", "items": {}}, {"type": "null"}]}

    def schema_details(self, state: SequenceState) -> dict[str, Any]:
        return {"steps": state.steps, "features": state.features}

    def input_shape(self, state: SequenceState) -> tuple[int, ...]:
        return (state.steps, state.features)

    def placeholder_state(self) -> SequenceState:
        if self.steps is None or self.features is None:
            raise DataError(f"input {self.name!r}: give 'steps' and 'features' to describe it without data")
        return SequenceState(steps=self.steps, features=self.features,
                             shift=[0.0] * self.features, divide=[1.0] * self.features)

    def encoding_layers(self, x: Any, state: SequenceState) -> Any:
        return self.encoder.apply(x, self.name)

    def neutral(self, state: SequenceState) -> np.ndarray:
        """Every step at the training mean: zero once standardised."""
        return np.zeros(self.input_shape(state))

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table,
                   state: SequenceState) -> dict | None:
        """Per step: the shares of its numbers, summed (steps are named by their place).

        >>> SequenceInput(name="s").attributed(np.array([[0.5, 0.25], [0.0, -0.5]]), None, None, None)
        {'kind': 'steps', 'units': [['0', 0.75], ['1', -0.5]]}
        """
        per_step = shares.sum(axis=1)
        return shares_by("steps", range(len(per_step)), per_step)

    def describe_array(self, state: SequenceState, fitted: bool) -> str:
        scaled = {"standard": "standardised", "none": "as given",
                  "series": "each row's series z-normalised per feature over its own steps"}[self.scale]
        return f"{state.steps} steps of {state.features} numbers each, {scaled}, zero-padded at the end"

    @classmethod
    def examples(cls) -> list[Example]:
        """Steps of several numbers, rows of different lengths (cut to ``steps`` or padded),
        steps of one number given as plain numbers, and series z-normalised row by row."""
        return [
            same_values({"type": "sequence", "steps": 3}, "a",
                        pa.array([[[1.0, 0.0], [2.0, 1.0]], [[3.0, 2.0]], None, [[0.0, 1.0]] * 4]),
                        [[[1, 0], [2, 1]], [[3, 2]], None, [[0, 1]] * 4]),
            same_values({"type": "sequence", "encoder": {"kind": "gru", "units": 4}}, "a",
                        pa.array([[1.0, 2.0, 3.0], [4.0], None, [5.0, 6.0]]),
                        [[1, 2, 3], [4], None, [5.0, 6]]),
            same_values({"type": "sequence", "scale": "series",
                         "encoder": {"kind": "resnet", "filters": [2]}},
                        "a", pa.array([[[1.0, 5.0], [3.0, 5.0]], None, [[2.0, 0.0], [8.0, 1.0], [5.0, 2.0]],
                                       [[4.0, 4.0], [4.0, 6.0]]]),
                        [[[1, 5], [3.0, 5]], None, [[2, 0], [8, 1], [5, 2]], [[4, 4], [4, 6.0]]]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Lists of numbers of varying length, lists of steps with as many numbers each, and
        fixed-length lists whose neighbours correlate: a series, read by the inception
        encoder. Fixed-length lists of numbers that are no series are left to ``vector``."""
        flat = numeric_lists(column.values, depth=1)
        if flat is not None:
            shortest, longest = int(flat.min()), int(flat.max())
            if shortest == longest:
                correlation = series_autocorrelation(column.values, 1)
                if correlation is None:
                    return None
                return Recognised(series_entry(1),
                                  f"lists of {shortest} numbers in every row, neighbours correlate "
                                  f"(mean lag-1 autocorrelation {correlation:.2f}): a series{column.gaps}")
            return Recognised({"type": "sequence", "features": 1}, f"lists of {shortest} to {longest} "
                              f"numbers: a sequence of steps{column.gaps}")
        lengths = numeric_lists(column.values, depth=2)
        if lengths is None:
            return None
        inner = pc.list_value_length(pc.list_flatten(column.values.combine_chunks())).to_numpy(
            zero_copy_only=False)
        if not inner.size or inner.min() != inner.max():
            return None
        features = int(inner[0])
        correlation = series_autocorrelation(column.values, 2)
        if correlation is not None:
            return Recognised(series_entry(features),
                              f"lists of {lengths[0]} steps of {features} numbers in every row, neighbouring "
                              f"steps correlate (mean lag-1 autocorrelation {correlation:.2f}): a "
                              f"series{column.gaps}")
        return Recognised({"type": "sequence", "features": features},
                          f"lists of {lengths.min()} to {lengths.max()} steps of {features} "
                          f"numbers{column.gaps}")


def series_entry(features: int) -> dict:
    """What ``plait init`` makes of a series: each row z-normalised on its own, as the
    UCR/UEA archives expect, and read by InceptionTime."""
    return {"type": "sequence", "features": features, "scale": "series", "encoder": {"kind": "inception"}}


SERIES_STEPS = 16
"""The fewest steps a series has for ``plait init``: below it, a lag-1 autocorrelation
says little (see ``SERIES_AUTOCORRELATION``) and a short fixed list is more often a vector."""

SERIES_AUTOCORRELATION = 0.5
"""The mean lag-1 autocorrelation above which fixed-length lists are a series. Values in
no order have one near 0 (about -1/steps), with a standard error of 1/sqrt(steps) per
row: 0.5 is two standard errors for a single row of 16 steps, and far more once averaged
over rows. A sine sampled six or more times per period has cos(2*pi/6) = 0.5 or more.
GunPoint has 0.99; BasicMotions 0.55, a quarter of its cases (standing) being mostly
sensor noise."""

SERIES_SAMPLE_ROWS = 256


def series_autocorrelation(values: pa.ChunkedArray, depth: int) -> float | None:
    """The mean lag-1 autocorrelation of lists nested ``depth`` deep (1: numbers, 2: steps of
    numbers; each feature of each of up to ``SERIES_SAMPLE_ROWS`` evenly spaced rows) when
    every row has the same number of steps, at least ``SERIES_STEPS``, and that mean is at
    least ``SERIES_AUTOCORRELATION``; otherwise None.

    >>> rising = pa.chunked_array([[[float(step + row) for step in range(20)] for row in range(3)]])
    >>> round(series_autocorrelation(rising, 1), 2)
    0.85
    >>> print(series_autocorrelation(pa.chunked_array([[[1.0, -1.0] * 10] * 3]), 1))
    None
    """
    lengths = numeric_lists(values, depth)
    if lengths is None or lengths.min() != lengths.max() or lengths[0] < SERIES_STEPS:
        return None
    array = values.combine_chunks()
    picked = np.unique(np.linspace(0, len(array) - 1, min(len(array), SERIES_SAMPLE_ROWS)).astype(np.int64))
    flat, _ = flatten(array.take(pa.array(picked)), depth)
    steps = int(lengths[0])
    if flat.size % (len(picked) * steps):
        return None  # steps of different widths: not one series per feature
    series = flat.reshape(len(picked), steps, -1).transpose(0, 2, 1)  # rows, features, steps
    series = series[np.isfinite(series).all(axis=2)]
    centred = series - series.mean(axis=1, keepdims=True)
    spread = (centred**2).sum(axis=1)
    varying = spread > 0
    if not varying.any():
        return None
    lagged = (centred[:, 1:] * centred[:, :-1]).sum(axis=1)
    correlation = float((lagged[varying] / spread[varying]).mean())
    return correlation if correlation >= SERIES_AUTOCORRELATION else None


def per_series(values: np.ndarray, counted: np.ndarray, row_of_step: np.ndarray, rows: int) -> np.ndarray:
    """``values`` (steps × features, the steps of all rows one after another) z-normalised
    per row and feature with the mean and standard deviation of that row's ``counted``
    values (its finite, kept steps); a feature that is constant in its row becomes 0.

    >>> per_series(np.array([[1.0], [3.0], [5.0], [5.0]]), np.ones((4, 1), bool), np.array([0, 0, 1, 1]), 2)
    array([[-1.],
           [ 1.],
           [ 0.],
           [ 0.]])
    """
    features = values.shape[1]
    # one bincount over (row, feature) cells rather than a loop over features
    cell = (row_of_step[:, None] * features + np.arange(features)).ravel()
    weight = counted.ravel().astype(np.float64)
    size = rows * features
    number = np.maximum(np.bincount(cell, weights=weight, minlength=size), 1.0)
    known = np.where(counted, values, 0.0).ravel()
    mean = np.bincount(cell, weights=known, minlength=size) / number
    centred = values - mean.reshape(rows, features)[row_of_step]
    square = np.where(counted, centred, 0.0).ravel() ** 2
    std = np.sqrt(np.bincount(cell, weights=square, minlength=size) / number).reshape(rows, features)
    return centred / np.where(std > 0, std, 1.0)[row_of_step]
