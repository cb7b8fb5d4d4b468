"""``number`` output: regression, trained on the standardised target, answered in its units."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from plait import plots
from plait.data import Table
from plait.metrics import (
    conformal_half_width,
    conformal_rank,
    interval_metrics,
    number_metrics,
    residual_sample,
    with_baseline,
)
from plait.schema import FittedState, StateClass
from plait.targets.base import OutputType, Target


class NumberOutputState(FittedState):
    """The scaling the model learns the target in (``(value - shift) / divide``), and the
    training mean (the baseline); with ``interval``, the half-width of the prediction
    intervals and the validation rows it was set on (None in bundles from before intervals)."""

    shift: float
    divide: float = Field(gt=0.0)
    mean: float
    interval_half_width: float | None = None
    interval_rows: int | None = None


class NumberOutput(OutputType):
    """A number. ``loss``: ``mse``, ``mae`` or ``huber``. The model learns the target
    standardised with training statistics (``scale: standard``); predictions come back in
    the target's own units.

    ``interval`` (a level such as 0.9) adds split-conformal prediction intervals,
    ``<name>_low`` and ``<name>_high``: prediction ± q, with q set on the validation rows so
    that about that share of new rows' values fall inside (needs validation rows).

    >>> NumberOutput(name="rating", loss="mae", weight=0.5).keras_loss()
    'mean_absolute_error'
    >>> NumberOutput(name="rating", interval=0.9).prediction_columns(
    ...     NumberOutputState(shift=0.0, divide=1.0, mean=0.0, interval_half_width=0.5))
    ['rating', 'rating_low', 'rating_high']
    """

    type: Literal["number"] = "number"
    loss: Literal["mse", "mae", "huber"] = "mse"
    scale: Literal["standard", "none"] = "standard"
    interval: float | None = Field(default=None, gt=0.0, lt=1.0)

    State: ClassVar[StateClass] = NumberOutputState
    importance_metric: ClassVar[str] = "r2"
    metric_names: ClassVar[tuple[str, ...]] = ("mae", "rmse", "r2")

    def fit(self, table: Table) -> NumberOutputState:
        values = table.numbers(self.source, self.describe_use())
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 1.0
        if self.scale == "none":
            return NumberOutputState(shift=0.0, divide=1.0, mean=mean)
        return NumberOutputState(shift=mean, divide=std if std > 0 else 1.0, mean=mean)

    def encode(self, table: Table, state: NumberOutputState) -> Target:
        values = table.numbers(self.source, self.describe_use())
        present = np.isfinite(values)
        scaled = np.where(present, (values - state.shift) / state.divide, 0.0)
        return Target(scaled.astype(np.float32).reshape(-1, 1), present)

    def units(self, state: Any) -> int:
        return 1

    def output_activation(self) -> str:
        return "linear"

    def keras_loss(self) -> Any:
        return {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}[
            self.loss
        ]

    def keras_metrics(self) -> list[Any]:
        from keras import metrics

        return [metrics.MeanAbsoluteError(name="mae")]

    def describe_units(self, state: NumberOutputState) -> str:
        if state.shift == 0.0 and state.divide == 1.0:
            return "the target in its own units"
        return (f"the standardised target; in the target's units: prediction * {state.divide:.6g} "
                f"+ {state.shift:.6g}")

    def restore(self, predicted: np.ndarray, state: NumberOutputState) -> np.ndarray:
        return predicted.reshape(-1).astype(np.float64) * state.divide + state.shift

    def explained_values(self, raw: np.ndarray, state: NumberOutputState) -> np.ndarray:
        """In the target's units."""
        return self.restore(raw, state).reshape(-1, 1)

    def decode(self, predicted: np.ndarray, state: NumberOutputState) -> dict[str, np.ndarray]:
        estimate = self.restore(predicted, state)
        if state.interval_half_width is None:
            return {self.name: estimate}
        q = state.interval_half_width
        return {self.name: estimate, f"{self.name}_low": estimate - q, f"{self.name}_high": estimate + q}

    def prediction_columns(self, state: NumberOutputState) -> list[str]:
        if state.interval_half_width is None:
            return [self.name]
        return [self.name, f"{self.name}_low", f"{self.name}_high"]

    def needs_validation(self) -> str | None:
        if self.interval is None:
            return None
        return f"interval {self.interval}: its width is set on the validation rows"

    def choose(self, target: Target, predicted: np.ndarray, state: NumberOutputState) -> NumberOutputState:
        """The state with the interval's half-width: the split-conformal quantile of these
        (validation) rows' absolute residuals."""
        if self.interval is None:
            return state
        truth = self.restore(target.values, state)[target.present]
        residuals = truth - self.restore(predicted, state)[target.present]
        return state.model_copy(update={"interval_half_width": conformal_half_width(residuals, self.interval),
                                        "interval_rows": int(residuals.size)})

    def score(self, target: Target, predicted: np.ndarray, state: NumberOutputState) -> dict:
        truth = self.restore(target.values, state)[target.present]
        estimate = self.restore(predicted, state)[target.present]
        baseline = number_metrics(truth, np.full(truth.size, state.mean))
        scores = with_baseline(number_metrics(truth, estimate), baseline, "training mean")
        if self.interval is not None and state.interval_half_width is not None:
            # After the baseline: coverage and width have no lift.
            scores.update(interval_metrics(truth, estimate, state.interval_half_width))
            scores["interval"] = {"level": self.interval, "half_width": state.interval_half_width,
                                  "rows": state.interval_rows}
        scores["curves"] = residual_sample(truth, estimate)
        return scores

    def notes(self, scores: dict) -> list[str]:
        if "interval" not in scores:
            return []
        interval = scores["interval"]
        return [interval_note(interval["level"], f"prediction ± {interval['half_width']:.4g}",
                              interval["rows"])]

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        if not scores.get("curves"):
            return {}
        return {f"{self.name}_residuals.png": plots.residuals(scores["curves"], f"{self.name}: residuals "
                                                                                f"({source})")}

    def placeholder_state(self) -> NumberOutputState:
        return NumberOutputState(shift=0.0, divide=1.0, mean=0.0)


def interval_note(level: float, width: str, rows: int | None) -> str:
    """The report's sentence on an output's prediction intervals.

    >>> interval_note(0.9, "prediction ± 3", 5).endswith("give more validation rows (at least 9).")
    True
    """
    note = (f"Intervals at level {level:g}: {width}, set on {rows} validation rows (split conformal), so "
            f"about {level:.0%} of new rows should fall inside.")
    if rows is not None and conformal_rank(rows, level) > rows:
        note += (f" Too few rows for this level: the largest residual is used and the guarantee does not "
                 f"hold; give more validation rows (at least {_rows_needed(level)}).")
    return note


def _rows_needed(level: float) -> int:
    rows = 1
    while conformal_rank(rows, level) > rows:
        rows += 1
    return rows
