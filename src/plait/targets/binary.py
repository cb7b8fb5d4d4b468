"""``binary`` output: a sigmoid unit trained with binary cross-entropy."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait import plots
from plait.data import Table
from plait.features.binary import two_levels
from plait.metrics import (
    THRESHOLD_METRICS,
    binary_curves,
    binary_metrics,
    choose_threshold,
    with_baseline,
)
from plait.schema import StateClass
from plait.targets.base import CalibratedState, SigmoidOutput, Target
from plait.targets.labels import LabelKind, label_kind, restore


class BinaryOutputState(CalibratedState):
    """The two labels (negative first) and their type, the training rate of the positive
    one, the decision threshold with how it was chosen, and the temperature."""

    labels: list[str] = Field(min_length=2, max_length=2)
    kind: LabelKind
    positive_rate: float
    threshold: float = Field(gt=0.0, lt=1.0)
    threshold_by: str


class BinaryOutput(SigmoidOutput):
    """Two classes. ``positive`` names the class predicted as 1 (by default true/yes/1 or
    the later label in sorted order). ``class_weight``: ``balanced`` or a weight per label,
    for imbalanced data. Predictions give the label (probability ≥ the decision threshold)
    and ``<name>_proba``.

    The decision threshold is chosen on the validation split to maximise ``threshold_by``
    (``f1``, ``accuracy``, ``precision`` or ``recall``; ties go to the higher F1), or fixed
    by ``threshold``; 0.5 when there is no validation split. ``calibrate: temperature``
    rescales the probabilities first (see ``ProbabilityOutput``).

    >>> BinaryOutput(name="recommended", class_weight="balanced").output_activation()
    'sigmoid'
    """

    type: Literal["binary"] = "binary"
    positive: str | None = None
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    threshold_by: Literal[THRESHOLD_METRICS] = "f1"  # type: ignore[valid-type]
    class_weight: Literal["balanced"] | dict[str, float] | None = None

    State: ClassVar[StateClass] = BinaryOutputState
    importance_metric: ClassVar[str] = "roc_auc"
    metric_names: ClassVar[tuple[str, ...]] = ("f1", "accuracy", "precision", "recall", "roc_auc", "pr_auc",
                                               "log_loss", "ece")
    stratifies: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_threshold_rule(self) -> BinaryOutput:
        if self.threshold is not None and self.threshold_by != "f1":
            raise ValueError(f"threshold {self.threshold} is fixed, so threshold_by "
                             f"{self.threshold_by!r} would not be used; give one of them")
        return self

    def fit(self, table: Table) -> BinaryOutputState:
        column = table.column(self.source, self.describe_use())
        strings = table.strings(self.source, self.describe_use())
        levels = two_levels(strings, self.positive, f"{table.source}, column {self.source!r}")
        flags = pc.equal(strings, levels[1]).to_numpy(zero_copy_only=False)
        known = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        rate = float(flags[known].astype(float).mean()) if known.any() else 0.5
        return BinaryOutputState(labels=levels, kind=label_kind(column), positive_rate=rate,
                                 **self.initial_threshold())

    def initial_threshold(self) -> dict:
        """The threshold before any validation rows are seen: the fixed one, or 0.5."""
        if self.threshold is not None:
            return {"threshold": self.threshold, "threshold_by": "fixed"}
        return {"threshold": 0.5, "threshold_by": "default"}

    def choose(self, target: Target, predicted: np.ndarray, state: BinaryOutputState) -> BinaryOutputState:
        """The state with the temperature, when calibrated, then the threshold that maximises
        ``threshold_by`` on the calibrated probabilities of these (validation) rows; a fixed
        threshold, or rows of one class only, keep the threshold as it is."""
        state = self.with_temperature(target, predicted, state)
        if self.threshold is not None:
            return state
        truth = target.values.ravel()[target.present]
        probability = self.calibrated(predicted.reshape(-1)[target.present], state)
        chosen = choose_threshold(truth, probability, self.threshold_by)
        if chosen is None:
            return state
        return state.model_copy(update={"threshold": chosen, "threshold_by": self.threshold_by})

    def encode(self, table: Table, state: BinaryOutputState) -> Target:
        strings = table.strings(self.source, self.describe_use())
        present = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        known = pc.is_in(strings, value_set=pa.array(state.labels)).to_numpy(zero_copy_only=False)
        unknown = present & ~known
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise table.bad_value(self.source, row, strings[row].as_py(), f"one of {state.labels}")
        flags = pc.fill_null(pc.equal(strings, state.labels[1]), False).to_numpy(zero_copy_only=False)
        return Target(flags.astype(np.float32).reshape(-1, 1), present)

    def units(self, state: Any) -> int:
        return 1

    def sample_weights(self, target: Target, state: BinaryOutputState) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        positive = target.values.ravel() == 1
        if self.class_weight == "balanced":
            rate = float(np.clip(positive[target.present].mean(), 1e-6, 1 - 1e-6))
            weights = (0.5 / (1 - rate), 0.5 / rate)
        else:
            weights = tuple(self.class_weight.get(label, 1.0) for label in state.labels)
        return np.where(positive, weights[1], weights[0]).astype(np.float32)

    def describe_units(self, state: BinaryOutputState) -> str:
        return f"the probability of {state.labels[1]!r} (the other label: {state.labels[0]!r})"

    def explained_units(self, raw: np.ndarray, state: BinaryOutputState) -> list[tuple[int, str]]:
        """The probability of the positive label."""
        return [(0, state.labels[1])]

    def decode(self, predicted: np.ndarray, state: BinaryOutputState) -> dict[str, np.ndarray]:
        probability = self.calibrated(predicted.reshape(-1), state)
        labels = np.asarray(restore(state.labels, state.kind), dtype=object)
        return {self.name: labels[(probability >= state.threshold).astype(int)],
                f"{self.name}_proba": probability.astype(np.float64)}

    def prediction_columns(self, state: BinaryOutputState) -> list[str]:
        return [self.name, f"{self.name}_proba"]

    def probability_columns(self, state: BinaryOutputState) -> list[tuple[str, str]]:
        return [(state.labels[1], f"{self.name}_proba")]

    def schema(self, state: BinaryOutputState) -> dict[str, Any]:
        return {**super().schema(state), "labels": state.labels, "threshold": state.threshold}

    def score(self, target: Target, predicted: np.ndarray, state: BinaryOutputState) -> dict:
        truth = target.values.ravel()[target.present]
        raw = predicted.reshape(-1)[target.present]
        probability = self.calibrated(raw, state)
        scores = binary_metrics(truth, probability, state.threshold)
        scores["threshold_by"] = state.threshold_by
        scores["labels"] = list(state.labels)
        baseline = binary_metrics(truth, np.full(truth.size, state.positive_rate), 0.5)
        scores = with_baseline(scores, baseline, "majority class")
        scores["curves"] = binary_curves(truth, probability)
        return self.with_calibration(scores, truth, raw, state)

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        images = {f"{self.name}_confusion.png": plots.confusion(
            scores["confusion_matrix"], scores["labels"], f"{self.name}: confusion matrix ({source})")}
        curves = scores.get("curves")
        if curves:
            images[f"{self.name}_roc.png"] = plots.roc(curves, scores["roc_auc"], f"{self.name}: ROC curve")
            images[f"{self.name}_pr.png"] = plots.precision_recall(
                curves, scores["pr_auc"], f"{self.name}: precision-recall curve")
            images.update(self.calibration_plot(scores))
        return images

    def notes(self, scores: dict) -> list[str]:
        chosen_by = scores.get("threshold_by", "fixed")
        known = {"fixed": "fixed in the config",
                 "default": "the default; no validation split to choose it on"}
        origin = known.get(chosen_by, f"chosen on the validation split for the best {chosen_by}")
        return [f"Decision threshold {scores['threshold']:.4f} ({origin}).", *self.calibration_notes(scores)]

    def placeholder_state(self) -> BinaryOutputState:
        return BinaryOutputState(labels=["0", "1"], kind="int", positive_rate=0.5, **self.initial_threshold())
