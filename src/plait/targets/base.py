"""What every output type shares: its config keys and the tower that ends in its layer.

An output type is one class. It owns its config keys, its fitted state (a ``State``
model), how a target column is encoded and a prediction decoded into columns, its loss and
metrics, its entry in the server's schema, its plots and notes in the report, and any
choice made on the validation rows (``choose``, which returns a new state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from plait import plots
from plait.data import Table
from plait.metrics import binary_log_loss, fit_temperature, reliability, sigmoid_at
from plait.schema import Activation, FittedState, Name, Rate, StateClass, Strict, Units


@dataclass
class Target:
    """One output's training array and which rows have a usable target value."""

    values: np.ndarray
    present: np.ndarray


class OutputType(Strict):
    """Base of every output type.

    An output reads the shared head by default, or the merge node or input branch named by
    ``from``; its own ``layers`` form a private tower before the final layer. ``weight``
    scales its loss in the total.
    """

    name: Name
    column: str | None = None
    weight: float = Field(default=1.0, ge=0.0)
    reads: Name | None = Field(default=None, alias="from")
    layers: list[Units] = []
    activation: Activation = "relu"
    dropout: Rate = 0.0

    State: ClassVar[StateClass] = FittedState
    importance_metric: ClassVar[str]
    """The metric ``explain`` measures drops of."""
    metric_names: ClassVar[tuple[str, ...]]
    """The single-number metrics ``score`` reports (``plait tune`` may optimise any)."""
    stratifies: ClassVar[bool] = False
    """Whether a validation split keeps each of this output's labels in proportion."""

    @property
    def source(self) -> str:
        return self.column or self.name

    def source_columns(self) -> list[str]:
        """The columns the target is read from (one, unless the type reads several)."""
        return [self.source]

    def describe_use(self) -> str:
        return f"output {self.name!r}"

    def fit(self, table: Table) -> FittedState:
        raise NotImplementedError

    def encode(self, table: Table, state: Any) -> Target:
        raise NotImplementedError

    def load_state(self, raw: Any) -> FittedState:
        """The fitted state from its JSON form; a ValidationError names the bad field."""
        return self.State.model_validate(raw)

    def placeholder_state(self) -> FittedState:
        raise NotImplementedError

    def strata(self, table: Table) -> np.ndarray | None:
        """Each row's label, for a stratified split; None when this output has no classes."""
        if not self.stratifies:
            return None
        labels = table.strings(self.source, self.describe_use())
        return np.asarray(labels.fill_null("\x00missing").to_numpy(zero_copy_only=False))

    # -- the model --------------------------------------------------------------------------

    def units(self, state: Any) -> int:
        raise NotImplementedError

    def keras_loss(self) -> Any:
        raise NotImplementedError

    def keras_metrics(self) -> list[Any]:
        return []

    def sample_weights(self, target: Target, state: Any) -> np.ndarray | None:
        return None

    def head(self, x: Any, state: Any) -> Any:
        from keras import layers

        for index, units in enumerate(self.layers, start=1):
            x = layers.Dense(units, activation=self.activation, name=f"{self.name}_dense_{index}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"{self.name}_dropout_{index}")(x)
        # float32 under a mixed precision policy too: probabilities near 0 and 1, and losses, need it
        return layers.Dense(self.units(state), activation=self.output_activation(), name=self.name,
                            dtype="float32")(x)

    def output_activation(self) -> str:
        raise NotImplementedError

    def describe_units(self, state: Any) -> str:
        """What the final layer's units hold, in words, for ``plait code``."""
        raise NotImplementedError

    # -- predictions and scores -------------------------------------------------------------

    def decode(self, predicted: np.ndarray, state: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def prediction_columns(self, state: Any) -> list[str]:
        """The columns ``decode`` gives, in order."""
        return [self.name]

    def probability_columns(self, state: Any) -> list[tuple[str, str]]:
        """(label, column) for each column that holds a label's probability."""
        return []

    def explained_units(self, raw: np.ndarray, state: Any) -> list[tuple[int, str]]:
        """Which units of one row's raw output ``plait explain --rows`` attributes, each
        with its name: the one unit, named after the output."""
        return [(0, self.name)]

    def explained_values(self, raw: np.ndarray, state: Any) -> np.ndarray:
        """Raw outputs (rows × units) in the units the attributions are given in: as they
        are (probabilities), unless a subclass restores a target's own units."""
        return np.asarray(raw, np.float64)

    def schema(self, state: Any) -> dict[str, Any]:
        """This output as a client sees it in ``/v1/schema``; ``bars`` are the probabilities
        the serving page draws."""
        described = {"name": self.name, "type": self.type, "columns": self.prediction_columns(state),
                     "bars": [list(pair) for pair in self.probability_columns(state)]}
        if isinstance(state, CalibratedState):
            described["temperature"] = state.temperature
        return described

    def needs_validation(self) -> str | None:
        """What in this output's config is set on the validation rows and cannot do without
        them (in words), or None."""
        return None

    def choose(self, target: Target, predicted: np.ndarray, state: Any) -> FittedState:
        """The state after the choices made on validation rows (a decision threshold); the
        same state when there is nothing to choose."""
        return state

    def score(self, target: Target, predicted: np.ndarray, state: Any) -> dict:
        raise NotImplementedError

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        """The report's plots of these scores, PNG bytes by file name."""
        return {}

    def notes(self, scores: dict) -> list[str]:
        """Sentences the report shows under this output's metrics."""
        return []

    def tables(self, scores: dict) -> list[tuple[list[str], list[list[Any]]]]:
        """Tables the report shows under this output's metrics: headings and rows."""
        return []


class CalibratedState(FittedState):
    """The state of an output of probabilities: the temperature its logits are divided by
    (1: the model's own probabilities; a bundle from before calibration reads as 1)."""

    temperature: float = Field(default=1.0, gt=0.0)


class ProbabilityOutput(OutputType):
    """An output whose units are probabilities (``binary``, ``category``, ``set``).

    ``calibrate: temperature`` fits one temperature T on the validation split, the one whose
    probabilities (the model's logits divided by T) have the least log loss, and uses it
    wherever probabilities are decoded or scored; T above 1 softens an over-confident model.
    The labels a category output predicts do not change; decision thresholds are chosen on
    the calibrated probabilities.
    """

    calibrate: Literal["none", "temperature"] = "none"

    reliability_axes: ClassVar[tuple[str, str]] = ("mean predicted probability", "observed positive rate")
    """The calibration plot's axes: what its confidence and its outcome are."""

    def at_temperature(self, predicted: np.ndarray, temperature: float) -> np.ndarray:
        """The probabilities with the model's logits divided by ``temperature``."""
        raise NotImplementedError

    def log_loss(self, truth: np.ndarray, probability: np.ndarray) -> float:
        """The log loss the temperature is fitted to: targets and probabilities of present rows."""
        raise NotImplementedError

    def reliability_of(self, truth: np.ndarray, probability: np.ndarray) -> dict:
        """The reliability curve (``metrics.reliability``) of present rows' probabilities."""
        raise NotImplementedError

    def calibrated(self, predicted: np.ndarray, state: CalibratedState) -> np.ndarray:
        """The probabilities as decoded and scored."""
        # T = 1 leaves the model's own values, not a round trip through clipped logits.
        return predicted if state.temperature == 1.0 else self.at_temperature(predicted, state.temperature)

    def needs_validation(self) -> str | None:
        if self.calibrate == "temperature":
            return "calibrate: temperature is fitted on the validation rows"
        return super().needs_validation()

    def with_temperature(self, target: Target, predicted: np.ndarray, state: Any) -> Any:
        """The state with the temperature fitted on these (validation) rows, when asked for."""
        if self.calibrate != "temperature" or not target.present.any():
            return state
        truth, raw = target.values[target.present], predicted[target.present]
        temperature = fit_temperature(lambda t: self.log_loss(truth, self.at_temperature(raw, t)))
        return state.model_copy(update={"temperature": temperature})

    def choose(self, target: Target, predicted: np.ndarray, state: Any) -> Any:
        return self.with_temperature(target, predicted, state)

    def with_calibration(self, scores: dict, truth: np.ndarray, raw: np.ndarray, state: Any) -> dict:
        """``scores`` with the reliability curve of the scored probabilities and, when
        calibrated, the temperature and the curve of the model's own probabilities."""
        after = self.reliability_of(truth, self.calibrated(raw, state))
        curves = {**scores.get("curves", {}), "calibration": after}
        if self.calibrate == "temperature":
            curves["calibration_before"] = self.reliability_of(truth, raw)
            scores = {**scores, "temperature": state.temperature}
        return {**scores, "curves": curves}

    def calibration_plot(self, scores: dict) -> dict[str, bytes]:
        curves = scores.get("curves") or {}
        if "calibration" not in curves:
            return {}
        return {f"{self.name}_calibration.png": plots.calibration(curves, f"{self.name}: calibration",
                                                                 self.reliability_axes)}

    def calibration_notes(self, scores: dict) -> list[str]:
        if "temperature" not in scores:
            return []
        return [f"Probabilities calibrated: logits divided by the temperature {scores['temperature']:.4f}, "
                "fitted on the validation split (above 1: the model was over-confident)."]


class SigmoidOutput(ProbabilityOutput):
    """An output of independent sigmoid units trained with binary cross-entropy (``binary``:
    one unit; ``set``: one per label), calibrated by a temperature on their logits."""

    def output_activation(self) -> str:
        return "sigmoid"

    def keras_loss(self) -> Any:
        return "binary_crossentropy"

    def keras_metrics(self) -> list[Any]:
        from keras import metrics

        return [metrics.BinaryAccuracy(name="accuracy"), metrics.AUC(name="auc")]

    def at_temperature(self, predicted: np.ndarray, temperature: float) -> np.ndarray:
        return sigmoid_at(predicted, temperature)

    def log_loss(self, truth: np.ndarray, probability: np.ndarray) -> float:
        return binary_log_loss(truth, probability)

    def reliability_of(self, truth: np.ndarray, probability: np.ndarray) -> dict:
        return reliability(truth.ravel() == 1, probability.ravel())
