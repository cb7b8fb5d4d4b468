"""``vector`` output: several numbers per row (multi-target regression), one linear unit each."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait import plots
from plait.data import Table
from plait.errors import DataError
from plait.features.lists import counts, flatten, is_numeric_leaf, list_depth
from plait.metrics import (
    conformal_half_width,
    interval_metrics,
    number_metrics,
    residual_sample,
    with_baseline,
)
from plait.schema import FittedState, StateClass
from plait.targets.base import OutputType, Target
from plait.targets.number import interval_note

LISTED = 4
"""``plait code`` writes each dimension's scaling when a vector has at most this many."""
PLOTTED = 6
"""The report draws the residuals of at most this many dimensions (the first ones)."""
METRICS = ("mae", "rmse", "r2")
INTERVAL_METRICS = ("coverage", "interval_width")


class VectorOutputState(FittedState):
    """Each dimension's name, the scaling the model learns it in (``(value - shift) /
    divide``), and its training mean (the baseline); with ``interval``, each dimension's
    interval half-width and the validation rows it was set on (None before intervals)."""

    names: list[str] = Field(min_length=1)
    shift: list[float]
    divide: list[float]
    mean: list[float]
    interval_half_width: list[float] | None = None
    interval_rows: list[int] | None = None

    @model_validator(mode="after")
    def _one_value_each(self) -> VectorOutputState:
        size = len(self.names)
        if not len(self.shift) == len(self.divide) == len(self.mean) == size:
            raise ValueError(f"names, shift, divide and mean: found {len(self.names)}, {len(self.shift)}, "
                             f"{len(self.divide)} and {len(self.mean)} values; expected as many of each")
        if any(value <= 0 for value in self.divide):
            raise ValueError(f"divide: found {self.divide}; expected positive numbers")
        for key in ("interval_half_width", "interval_rows"):
            listed = getattr(self, key)
            if listed is not None and len(listed) != size:
                raise ValueError(f"{key}: found {len(listed)} values for {size} dimensions; expected "
                                 "one each")
        return self


class VectorOutput(OutputType):
    """Several numbers per row, each a dimension of one output (multi-target regression):
    a linear unit per dimension.

    The dimensions are either ``columns``, several numeric columns (each dimension is named
    after its column), or one ``column`` holding a list of numbers in every row, all of one
    length: ``size``, or the length the training rows have (a row of another length is an
    error). ``names`` names the list's elements (by default their positions, ``0``, ``1``,
    ...). ``loss``: ``mse``, ``mae`` or ``huber``. Each dimension is learned standardised
    with its own training statistics (``scale: standard``); predictions come back in the
    targets' units as ``<name>_<dimension>``. ``interval`` (a level such as 0.9) adds
    split-conformal intervals per dimension, ``<name>_<dimension>_low`` and ``_high``, set on
    the validation rows (see ``number``).

    A missing value (null, NaN, or a null list element) leaves out that dimension only: the
    loss (``MaskedLoss``) skips it and the scores count the rows where it is present. A row
    with every dimension missing has no target.

    >>> VectorOutput(name="flows", columns=["north", "south"]).source_columns()
    ['north', 'south']
    >>> VectorOutput(name="flows", column="readings", names=["north", "south"]).prediction_columns(
    ...     VectorOutput(name="flows", column="readings", names=["north", "south"]).placeholder_state())
    ['flows_north', 'flows_south']
    """

    type: Literal["vector"] = "vector"
    columns: list[str] | None = Field(default=None, min_length=1)
    size: int | None = Field(default=None, gt=0)
    names: list[str] | None = Field(default=None, min_length=1)
    loss: Literal["mse", "mae", "huber"] = "mse"
    scale: Literal["standard", "none"] = "standard"
    interval: float | None = Field(default=None, gt=0.0, lt=1.0)

    State: ClassVar[StateClass] = VectorOutputState
    importance_metric: ClassVar[str] = "r2"
    metric_names: ClassVar[tuple[str, ...]] = METRICS

    @model_validator(mode="after")
    def _one_source(self) -> VectorOutput:
        if self.columns is not None and self.column is not None:
            raise ValueError(f"found both columns {self.columns} and column {self.column!r}; give either "
                             "'columns' (one numeric column per dimension) or 'column' (one list column)")
        if self.columns is not None and (self.size is not None or self.names is not None):
            raise ValueError("size and names describe a list column; with 'columns' each dimension is "
                             "named after its column")
        for key, listed in (("columns", self.columns), ("names", self.names)):
            if listed is not None and len(set(listed)) < len(listed):
                twice = sorted({item for item in listed if listed.count(item) > 1})
                raise ValueError(f"{key}: found {twice} more than once; expected each once")
        if self.names is not None and self.size is not None and len(self.names) != self.size:
            raise ValueError(f"names: found {len(self.names)} names for size {self.size}; expected one a "
                             "dimension")
        return self

    def source_columns(self) -> list[str]:
        return list(self.columns) if self.columns else [self.source]

    def declared_size(self) -> int | None:
        if self.columns:
            return len(self.columns)
        return len(self.names) if self.names else self.size

    def dimension_names(self, size: int) -> list[str]:
        return list(self.columns or self.names or [str(position) for position in range(size)])

    # -- fitting and encoding ---------------------------------------------------------------

    def raw(self, table: Table, size: int | None) -> np.ndarray:
        """Rows × dimensions in the targets' units, NaN where a value is missing or not
        finite; a list column's length is ``size``, or its most common one when None."""
        if self.columns:
            values = np.stack([table.numbers(column, self.describe_use()) for column in self.columns], axis=1)
        else:
            values = self.list_values(table, size)
        return np.where(np.isfinite(values), values, np.nan)

    def list_values(self, table: Table, size: int | None) -> np.ndarray:
        column = table.lists(self.source, self.describe_use())
        if list_depth(column.type) != 1 or not is_numeric_leaf(column.type):
            raise table.wrong_type(self.source, column, "a list of numbers in each row")
        values, owners = flatten(column, 1)
        lengths = counts(owners[0], table.num_rows)
        null = pc.is_null(column).to_numpy(zero_copy_only=False)
        if size is None:
            if null.all():
                raise DataError(f"{table.source}, column {self.source!r}: every row is missing; expected "
                                "lists of numbers to learn from")
            size = int(np.bincount(lengths[~null]).argmax())
        wrong = ~null & (lengths != size)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise table.bad_value(self.source, row, f"a list of {lengths[row]} numbers",
                                  f"{size} numbers, as in the training rows (output {self.name!r})")
        dense = np.full((table.num_rows, size), np.nan)
        dense[~null] = values.reshape(-1, size)
        return dense

    def fit(self, table: Table) -> VectorOutputState:
        values = self.raw(table, self.declared_size())
        if values.shape[1] == 0:
            raise DataError(f"{table.source}, column {self.source!r}: every list is empty; expected numbers")
        mean = _column_means(values)
        spread = np.sqrt(_column_means((values - mean) ** 2))
        names = self.dimension_names(values.shape[1])
        if self.scale == "none":
            shift, divide = np.zeros_like(mean), np.ones_like(mean)
        else:
            shift, divide = mean, np.where(spread > 0, spread, 1.0)
        return VectorOutputState(names=names, shift=shift.tolist(), divide=divide.tolist(),
                                 mean=mean.tolist())

    def encode(self, table: Table, state: VectorOutputState) -> Target:
        """Each dimension scaled, NaN where missing (``MaskedLoss`` leaves those out); a row
        has a target when any of its dimensions is present."""
        values = self.raw(table, len(state.names))
        scaled = (values - np.asarray(state.shift)) / np.asarray(state.divide)
        return Target(scaled.astype(np.float32), np.isfinite(values).any(axis=1))

    def placeholder_state(self) -> VectorOutputState:
        size = self.declared_size()
        if size is None:
            raise DataError(f"output {self.name!r}: give 'size' or 'names' to describe it without data")
        return VectorOutputState(names=self.dimension_names(size), shift=[0.0] * size, divide=[1.0] * size,
                                 mean=[0.0] * size)

    # -- the model --------------------------------------------------------------------------

    def units(self, state: VectorOutputState) -> int:
        return len(state.names)

    def output_activation(self) -> str:
        return "linear"

    def keras_loss(self) -> Any:
        from plait.layers.masked import MaskedLoss

        return MaskedLoss(self.loss)

    def describe_units(self, state: VectorOutputState) -> str:
        size = len(state.names)
        listed = ", ".join(state.names[:LISTED]) + (", ..." if size > LISTED else "")
        if self.scale == "none":
            return f"{size} targets ({listed}) in their own units"
        if size > LISTED:
            return f"{size} standardised targets ({listed}), each with its own training mean and spread"
        return (f"{size} standardised targets ({listed}); in their units: prediction * "
                f"{_numbers(state.divide)} + {_numbers(state.shift)}")

    # -- predictions and scores -------------------------------------------------------------

    def restore(self, predicted: np.ndarray, state: VectorOutputState) -> np.ndarray:
        """Rows × dimensions in the targets' units."""
        scaled = predicted.reshape(-1, len(state.names)).astype(np.float64)
        return scaled * np.asarray(state.divide) + np.asarray(state.shift)

    def explained_units(self, raw: np.ndarray, state: VectorOutputState) -> list[tuple[int, str]]:
        """Every dimension."""
        return [(index, f"{self.name}_{name}") for index, name in enumerate(state.names)]

    def explained_values(self, raw: np.ndarray, state: VectorOutputState) -> np.ndarray:
        """In the targets' units."""
        return self.restore(raw, state)

    def decode(self, predicted: np.ndarray, state: VectorOutputState) -> dict[str, np.ndarray]:
        restored = self.restore(predicted, state)
        columns = {f"{self.name}_{name}": restored[:, index] for index, name in enumerate(state.names)}
        for index, name in enumerate(state.names):
            if state.interval_half_width is not None:
                q = state.interval_half_width[index]
                columns[f"{self.name}_{name}_low"] = restored[:, index] - q
                columns[f"{self.name}_{name}_high"] = restored[:, index] + q
        return columns

    def prediction_columns(self, state: VectorOutputState) -> list[str]:
        """Each dimension's prediction, then each one's interval bounds (with ``interval``)."""
        columns = [f"{self.name}_{name}" for name in state.names]
        if state.interval_half_width is not None:
            columns += [f"{self.name}_{name}_{end}" for name in state.names for end in ("low", "high")]
        return columns

    def needs_validation(self) -> str | None:
        if self.interval is None:
            return None
        return f"interval {self.interval}: its widths are set on the validation rows"

    def choose(self, target: Target, predicted: np.ndarray, state: VectorOutputState) -> VectorOutputState:
        """The state with each dimension's interval half-width: the split-conformal quantile
        of its absolute residuals on these (validation) rows where it is present."""
        if self.interval is None:
            return state
        residuals = self.restore(target.values, state) - self.restore(predicted, state)
        known = [residuals[np.isfinite(residuals[:, index]), index] for index in range(len(state.names))]
        return state.model_copy(update={
            "interval_half_width": [conformal_half_width(each, self.interval) for each in known],
            "interval_rows": [int(each.size) for each in known]})

    def schema(self, state: VectorOutputState) -> dict[str, Any]:
        return {**super().schema(state), "dimensions": list(state.names)}

    def score(self, target: Target, predicted: np.ndarray, state: VectorOutputState) -> dict:
        """MAE, RMSE and R² averaged over the dimensions, each measured on the rows where it
        is present, beside the training means'; ``per_dimension`` holds each one's."""
        truth, estimate = self.restore(target.values, state), self.restore(predicted, state)
        intervals = self.interval is not None and state.interval_half_width is not None
        per_dimension, curves = {}, {}
        for index, name in enumerate(state.names):
            known = np.isfinite(truth[:, index])
            right, guess = truth[known, index], estimate[known, index]
            per_dimension[name] = {**_measured(right, guess), "rows": int(known.sum()),
                                   "baseline": _measured(right, np.full(right.size, state.mean[index]))}
            if intervals:
                per_dimension[name].update(interval_metrics(right, guess, state.interval_half_width[index]))
            if index < PLOTTED and right.size:
                curves[name] = residual_sample(right, guess)
        scores = with_baseline(_averaged(per_dimension.values()),
                               _averaged(v["baseline"] for v in per_dimension.values()), "training means")
        if intervals:
            # After the baseline: coverage and width have no lift.
            scores.update(_averaged(per_dimension.values(), INTERVAL_METRICS))
            scores["interval"] = {"level": self.interval, "half_width": state.interval_half_width,
                                  "rows": state.interval_rows}
        return {**scores, "per_dimension": per_dimension, "curves": curves}

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        return {f"{self.name}_{name}_residuals.png": plots.residuals(curve, f"{self.name}[{name}]: residuals "
                                                                            f"({source})")
                for name, curve in scores.get("curves", {}).items()}

    def notes(self, scores: dict) -> list[str]:
        count = len(scores.get("per_dimension", {}))
        notes = [f"MAE, RMSE and R² are the means over the {count} dimensions; each dimension is scored on "
                 "the rows where its target is present (the table below)."]
        if "interval" in scores:
            interval = scores["interval"]
            notes.append(interval_note(interval["level"], "prediction ± each dimension's half-width (the "
                                       "table; coverage and width above are the means over dimensions)",
                                       min(interval["rows"], default=None)))
        return notes

    def tables(self, scores: dict) -> list[tuple[list[str], list[list[Any]]]]:
        headings = ["dimension", "MAE", "RMSE", "R²", "baseline MAE", "rows"]
        rows = [[name, v["mae"], v["rmse"], v["r2"], v["baseline"]["mae"], v["rows"]]
                for name, v in scores.get("per_dimension", {}).items()]
        if "interval" in scores:
            headings += ["half-width", "coverage", "interval width"]
            for row, half_width in zip(rows, scores["interval"]["half_width"], strict=True):
                row += [half_width, scores["per_dimension"][row[0]]["coverage"],
                        scores["per_dimension"][row[0]]["interval_width"]]
        return [(headings, rows)]


def _measured(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """``number_metrics``, or NaN for each when there is no row to measure."""
    if not truth.size:
        return dict.fromkeys(METRICS, float("nan"))
    return number_metrics(truth, predicted)


def _averaged(scores: Any, metrics: tuple[str, ...] = METRICS) -> dict:
    """Each metric's mean over the dimensions that have it (NaN when none does).

    >>> _averaged([{"mae": 1.0, "rmse": 2.0, "r2": 0.5}, {"mae": 3.0, "rmse": 4.0, "r2": float("nan")}])
    {'mae': 2.0, 'rmse': 3.0, 'r2': 0.5}
    """
    table = np.asarray([[each[name] for name in metrics] for each in scores], np.float64)
    table = table.reshape(-1, len(metrics))
    means = np.where(np.isfinite(table).any(axis=0), _column_means(table), np.nan)
    return {name: float(mean) for name, mean in zip(metrics, means, strict=True)}


def _column_means(values: np.ndarray) -> np.ndarray:
    """Each column's mean over its finite values; 0 for a column without any (no warning,
    unlike ``nanmean``)."""
    known = np.isfinite(values)
    rows = known.sum(axis=0)
    totals = np.where(known, values, 0.0).sum(axis=0)
    return np.divide(totals, rows, out=np.zeros(values.shape[1]), where=rows > 0)


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.6g}" for value in values) + "]"
