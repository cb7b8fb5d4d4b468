"""``category`` output: a softmax over labels that may be any strings or integers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from plait import plots
from plait.data import Table
from plait.errors import DataError
from plait.features.vocabulary import fit_vocabulary, lookup
from plait.metrics import category_log_loss, category_metrics, reliability, softmax_at, with_baseline
from plait.schema import StateClass
from plait.targets.base import CalibratedState, ProbabilityOutput, Target
from plait.targets.labels import LabelKind, label_kind, restore

LISTED = 10
"""``plait code`` names the labels of an output with at most this many."""


class CategoryOutputState(CalibratedState):
    """The labels in sorted order (unit ``i`` is label ``i``), their type, their training
    frequencies, and the temperature."""

    labels: list[str] = Field(min_length=2)
    kind: LabelKind
    frequency: list[float]


class CategoryOutput(ProbabilityOutput):
    """One class out of several, learned with sparse categorical cross-entropy.

    Labels are those seen in training. ``classes``, when given, is their number: checked
    against the training data, and used to size the model before any data is seen
    (``plait describe``, ``plait code``). ``class_weight: balanced`` weights each class by
    its inverse frequency. Predictions give the label and ``<name>_proba_<label>`` per class.
    ``calibrate: temperature`` rescales the probabilities, never the predicted label (see
    ``ProbabilityOutput``); the calibration plot is the top label's reliability.

    >>> CategoryOutput(name="species").output_activation()
    'softmax'
    >>> digit = CategoryOutput(name="digit", classes=10)
    >>> digit.units(digit.placeholder_state())
    10
    """

    type: Literal["category"] = "category"
    classes: int | None = Field(default=None, ge=2, le=1_000_000)
    class_weight: Literal["balanced"] | dict[str, float] | None = None

    State: ClassVar[StateClass] = CategoryOutputState
    importance_metric: ClassVar[str] = "accuracy"
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "weighted_f1", "log_loss", "ece")
    reliability_axes: ClassVar[tuple[str, str]] = ("mean probability of the predicted label",
                                                   "observed accuracy")
    stratifies: ClassVar[bool] = True

    def fit(self, table: Table) -> CategoryOutputState:
        column = table.column(self.source, self.describe_use())
        strings = table.strings(self.source, self.describe_use())
        labels = fit_vocabulary(strings)
        if len(labels) < 2:
            raise DataError(f"{table.source}, column {self.source!r}: found {len(labels)} distinct "
                            "label(s); expected at least two classes")
        if self.classes is not None and len(labels) != self.classes:
            raise DataError(f"{table.source}, column {self.source!r}: found {len(labels)} distinct "
                            f"labels {labels[:20]}; expected {self.classes} (output "
                            f"{self.name!r}, classes)")
        kind = label_kind(column)
        labels = sorted(labels, key=int) if kind == "int" else sorted(labels)
        index = lookup(strings, labels, offset=0)
        present = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        frequency = np.bincount(index[present], minlength=len(labels)) / max(present.sum(), 1)
        return CategoryOutputState(labels=labels, kind=kind, frequency=frequency.tolist())

    def encode(self, table: Table, state: CategoryOutputState) -> Target:
        strings = table.strings(self.source, self.describe_use())
        present = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        index = lookup(strings, state.labels, offset=1)
        unknown = present & (index == 0)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            shown = state.labels[:20]
            raise table.bad_value(self.source, row, strings[row].as_py(),
                                  f"a label seen in training: {shown}")
        return Target(np.maximum(index - 1, 0).astype(np.int32).reshape(-1, 1), present)

    def units(self, state: CategoryOutputState) -> int:
        return len(state.labels)

    def output_activation(self) -> str:
        return "softmax"

    def keras_loss(self) -> Any:
        return "sparse_categorical_crossentropy"

    def keras_metrics(self) -> list[Any]:
        from keras import metrics

        return [metrics.SparseCategoricalAccuracy(name="accuracy")]

    def sample_weights(self, target: Target, state: CategoryOutputState) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        index = target.values.ravel()
        if self.class_weight == "balanced":
            frequency = np.bincount(index[target.present], minlength=len(state.labels))
            weights = frequency.sum() / (len(frequency) * np.maximum(frequency, 1))
        else:
            weights = np.asarray([self.class_weight.get(label, 1.0) for label in state.labels])
        return weights[index].astype(np.float32)

    def describe_units(self, state: CategoryOutputState) -> str:
        if len(state.labels) > LISTED:
            return f"the probabilities of its {len(state.labels)} labels, in sorted order"
        return f"the probabilities of {', '.join(map(repr, state.labels))}, in this order"

    def at_temperature(self, predicted: np.ndarray, temperature: float) -> np.ndarray:
        return softmax_at(predicted, temperature)

    def log_loss(self, truth: np.ndarray, probability: np.ndarray) -> float:
        return category_log_loss(truth.ravel(), probability)

    def reliability_of(self, truth: np.ndarray, probability: np.ndarray) -> dict:
        return reliability(probability.argmax(axis=1) == truth.ravel(), probability.max(axis=1))

    def explained_units(self, raw: np.ndarray, state: CategoryOutputState) -> list[tuple[int, str]]:
        """The probability of the predicted label."""
        best = int(np.argmax(raw))
        return [(best, state.labels[best])]

    def decode(self, predicted: np.ndarray, state: CategoryOutputState) -> dict[str, np.ndarray]:
        predicted = self.calibrated(predicted, state)
        labels = np.asarray(restore(state.labels, state.kind), dtype=object)
        columns = {self.name: labels[predicted.argmax(axis=1)]}
        for position, label in enumerate(state.labels):
            columns[f"{self.name}_proba_{label}"] = predicted[:, position].astype(np.float64)
        return columns

    def prediction_columns(self, state: CategoryOutputState) -> list[str]:
        return [self.name] + [column for _, column in self.probability_columns(state)]

    def probability_columns(self, state: CategoryOutputState) -> list[tuple[str, str]]:
        return [(label, f"{self.name}_proba_{label}") for label in state.labels]

    def schema(self, state: CategoryOutputState) -> dict[str, Any]:
        return {**super().schema(state), "labels": state.labels}

    def score(self, target: Target, predicted: np.ndarray, state: CategoryOutputState) -> dict:
        truth, raw = target.values.ravel()[target.present], predicted[target.present]
        scores = category_metrics(truth, self.calibrated(raw, state), state.labels)
        prior = np.tile(np.asarray(state.frequency), (truth.size, 1))
        baseline = category_metrics(truth, prior, state.labels)
        return self.with_calibration(with_baseline(scores, baseline, "majority class"), truth, raw, state)

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        return {f"{self.name}_confusion.png": plots.confusion(
            scores["confusion_matrix"], scores["labels"], f"{self.name}: confusion matrix ({source})"),
            **self.calibration_plot(scores)}

    def notes(self, scores: dict) -> list[str]:
        return self.calibration_notes(scores)

    def tables(self, scores: dict) -> list[tuple[list[str], list[list[Any]]]]:
        rows = [[label, v["precision"], v["recall"], v["f1"], v["support"]]
                for label, v in scores["per_class"].items()]
        return [(["class", "precision", "recall", "F1", "rows"], rows)]

    def placeholder_state(self) -> CategoryOutputState:
        count = self.classes or 2
        return CategoryOutputState(labels=[str(i) for i in range(count)], kind="int",
                                   frequency=[1.0 / count] * count)
