"""``number`` output: regression, trained on the standardised target, answered in its units."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from plait import plots
from plait.data import Table
from plait.metrics import number_metrics, residual_sample, with_baseline
from plait.schema import FittedState, StateClass
from plait.targets.base import OutputType, Target


class NumberOutputState(FittedState):
    """The scaling the model learns the target in (``(value - shift) / divide``), and the
    training mean (the baseline)."""

    shift: float
    divide: float = Field(gt=0.0)
    mean: float


class NumberOutput(OutputType):
    """A number. ``loss``: ``mse``, ``mae`` or ``huber``. The model learns the target
    standardised with training statistics (``scale: standard``); predictions come back in
    the target's own units.

    >>> NumberOutput(name="rating", loss="mae", weight=0.5).keras_loss()
    'mean_absolute_error'
    """

    type: Literal["number"] = "number"
    loss: Literal["mse", "mae", "huber"] = "mse"
    scale: Literal["standard", "none"] = "standard"

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

    def decode(self, predicted: np.ndarray, state: NumberOutputState) -> dict[str, np.ndarray]:
        return {self.name: self.restore(predicted, state)}

    def score(self, target: Target, predicted: np.ndarray, state: NumberOutputState) -> dict:
        truth = self.restore(target.values, state)[target.present]
        estimate = self.restore(predicted, state)[target.present]
        baseline = number_metrics(truth, np.full(truth.size, state.mean))
        scores = with_baseline(number_metrics(truth, estimate), baseline, "training mean")
        scores["curves"] = residual_sample(truth, estimate)
        return scores

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        if not scores.get("curves"):
            return {}
        return {f"{self.name}_residuals.png": plots.residuals(scores["curves"], f"{self.name}: residuals "
                                                                                f"({source})")}

    def placeholder_state(self) -> NumberOutputState:
        return NumberOutputState(shift=0.0, divide=1.0, mean=0.0)
