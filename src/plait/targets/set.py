"""``set`` output: several labels per row (multi-label), a sigmoid unit per label."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.data import Table
from plait.errors import DataError
from plait.features.set import read_tags
from plait.metrics import (
    THRESHOLD_METRICS,
    choose_threshold,
    set_metrics,
    with_baseline,
)
from plait.schema import StateClass
from plait.targets.base import CalibratedState, SigmoidOutput, Target

LISTED = 10
"""``plait code`` and the report's notes name each label of an output with at most this many."""
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
"""The values a label's own column may hold (read as labels, case ignored)."""


class SetOutputState(CalibratedState):
    """The labels (unit ``i`` is label ``i``), each one's training rate, each one's
    decision threshold with how the thresholds were chosen, and the temperature (one for
    every label)."""

    labels: list[str] = Field(min_length=2)
    rates: list[float]
    thresholds: list[float]
    threshold_by: str


class SetOutput(SigmoidOutput):
    """Any number of labels per row, each learned on its own: a sigmoid unit per label,
    binary cross-entropy.

    The labels are either ``columns``, one column per label holding 0/1, true/false or
    yes/no (the label is the column's name), or the tags of one ``column`` (a list column, or
    a text of labels separated by ``separator``, read as the ``set`` input reads tags; the
    labels are those seen in training, sorted). A row whose list is null, or whose columns
    are all null, has no target; a null beside given columns is 0.

    Each label's decision threshold is chosen on the validation split for the best
    ``threshold_by`` (``f1``, ``accuracy``, ``precision`` or ``recall``), or fixed for all by
    ``threshold``; 0.5 without a validation split. Predictions give ``<name>``, the predicted
    labels joined by ``separator`` (an empty text for none: one text column, in CSV and
    Parquet files alike), and ``<name>_proba_<label>`` per label. ``calibrate: temperature``
    rescales every label's probability by one temperature, before the thresholds are chosen
    (see ``ProbabilityOutput``); the calibration plot pools every (row, label) pair.

    >>> SetOutput(name="species", columns=["a", "b", "c"]).source_columns()
    ['a', 'b', 'c']
    >>> SetOutput(name="genres").source_columns()
    ['genres']
    """

    type: Literal["set"] = "set"
    columns: list[str] | None = Field(default=None, min_length=2)
    separator: str = Field(default="|", min_length=1)
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    threshold_by: Literal[THRESHOLD_METRICS] = "f1"  # type: ignore[valid-type]

    State: ClassVar[StateClass] = SetOutputState
    importance_metric: ClassVar[str] = "micro_f1"
    metric_names: ClassVar[tuple[str, ...]] = ("micro_f1", "macro_f1", "jaccard", "hamming_loss", "roc_auc",
                                               "log_loss", "ece")
    reliability_axes: ClassVar[tuple[str, str]] = ("mean predicted probability (every label)",
                                                   "observed rate of the label")

    @model_validator(mode="after")
    def _one_source(self) -> SetOutput:
        if self.columns is not None and self.column is not None:
            raise ValueError(f"found both columns {self.columns} and column {self.column!r}; give either "
                             "'columns' (one 0/1 column per label) or 'column' (one column of label lists)")
        if self.columns is not None and len(set(self.columns)) < len(self.columns):
            twice = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"columns: found {twice} more than once; expected each label's column once")
        if self.threshold is not None and self.threshold_by != "f1":
            raise ValueError(f"threshold {self.threshold} is fixed, so threshold_by "
                             f"{self.threshold_by!r} would not be used; give one of them")
        return self

    def source_columns(self) -> list[str]:
        return list(self.columns) if self.columns else [self.source]

    # -- fitting and encoding ---------------------------------------------------------------

    def fit(self, table: Table) -> SetOutputState:
        labels = list(self.columns) if self.columns else self.seen_labels(table)
        if len(labels) < 2:
            raise DataError(f"{table.source}, column {self.source!r}: found {len(labels)} distinct "
                            f"label(s) {labels}; expected at least two")
        target = self.flags(table, labels)
        rows = int(target.present.sum())
        # counted by a product rather than a mean of the present rows: no copy of a wide target
        counts = (target.present.astype(np.float32) @ target.values).astype(np.float64)
        rates = counts / rows if rows else np.full(len(labels), 0.5)
        threshold = self.threshold or 0.5
        return SetOutputState(labels=labels, rates=[float(rate) for rate in rates],
                              thresholds=[threshold] * len(labels),
                              threshold_by="fixed" if self.threshold else "default")

    def seen_labels(self, table: Table) -> list[str]:
        distinct, _ = read_tags(table, self.source, self.describe_use(), self.separator).distinct()
        return sorted(set(distinct.to_pylist()))

    def flags(self, table: Table, labels: list[str]) -> Target:
        """Rows × labels of 0/1, and which rows have a target."""
        if self.columns:
            columns = [self.column_flags(table, column) for column in self.columns]
            values = np.stack([flags for flags, _ in columns], axis=1)
            present = np.logical_or.reduce([known for _, known in columns])
            return Target(values.astype(np.float32), present)
        tags = read_tags(table, self.source, self.describe_use(), self.separator)
        index = pc.index_in(tags.values, value_set=pa.array(labels, pa.string()))
        unknown = pc.is_null(index).to_numpy(zero_copy_only=False)
        if unknown.any():
            item = int(np.flatnonzero(unknown)[0])
            raise table.bad_value(self.source, int(tags.owner[item]), tags.values[item].as_py(),
                                  f"labels seen in training: {labels[:20]}")
        values = np.zeros((tags.rows, len(labels)), np.float32)
        values[tags.owner, index.to_numpy(zero_copy_only=False)] = 1.0
        return Target(values, ~tags.missing)

    def column_flags(self, table: Table, column: str) -> tuple[np.ndarray, np.ndarray]:
        """One label's column as 0/1 (null: 0), and where it is given."""
        strings = pc.utf8_lower(table.strings(column, self.describe_use()))
        known = pc.is_in(strings, value_set=pa.array(list(FLAGS))).to_numpy(zero_copy_only=False)
        present = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
        if (present & ~known).any():
            row = int(np.flatnonzero(present & ~known)[0])
            raise table.bad_value(column, row, table.column(column, "")[row].as_py(),
                                  "0 or 1, true or false, yes or no (whether the row has this label), "
                                  "or null")
        positive = pc.is_in(strings, value_set=pa.array([k for k, v in FLAGS.items() if v]))
        return pc.fill_null(positive, False).to_numpy(zero_copy_only=False), present

    def encode(self, table: Table, state: SetOutputState) -> Target:
        return self.flags(table, state.labels)

    def placeholder_state(self) -> SetOutputState:
        labels = list(self.columns) if self.columns else ["0", "1"]
        threshold = self.threshold or 0.5
        return SetOutputState(labels=labels, rates=[0.5] * len(labels), thresholds=[threshold] * len(labels),
                              threshold_by="fixed" if self.threshold else "default")

    # -- the model --------------------------------------------------------------------------

    def units(self, state: SetOutputState) -> int:
        return len(state.labels)

    def describe_units(self, state: SetOutputState) -> str:
        if len(state.labels) > LISTED:
            return f"the probability of each of its {len(state.labels)} labels, each on its own"
        return f"the probabilities of {', '.join(map(repr, state.labels))}, each on its own, in this order"

    # -- validation choices, predictions and scores -----------------------------------------

    def choose(self, target: Target, predicted: np.ndarray, state: SetOutputState) -> SetOutputState:
        """The state with each label's threshold that maximises ``threshold_by`` on these
        (validation) rows, calibrated first when asked; a label whose rows are all of one
        class keeps its threshold."""
        state = self.with_temperature(target, predicted, state)
        if self.threshold is not None:
            return state
        truth, probability = target.values[target.present], self.calibrated(predicted[target.present], state)
        thresholds = list(state.thresholds)
        for index in range(len(state.labels)):
            chosen = choose_threshold(truth[:, index], probability[:, index], self.threshold_by)
            thresholds[index] = thresholds[index] if chosen is None else chosen
        return state.model_copy(update={"thresholds": thresholds, "threshold_by": self.threshold_by})

    def explained_units(self, raw: np.ndarray, state: SetOutputState) -> list[tuple[int, str]]:
        """The probability of each label predicted present (of the likeliest when none is)."""
        called = np.flatnonzero(self.calibrated(raw[None], state)[0] >= np.asarray(state.thresholds))
        chosen = called if called.size else [int(np.argmax(raw))]
        return [(int(index), state.labels[index]) for index in chosen]

    def decode(self, predicted: np.ndarray, state: SetOutputState) -> dict[str, np.ndarray]:
        predicted = self.calibrated(predicted, state)
        called = predicted >= np.asarray(state.thresholds)
        joined = np.empty(len(predicted), dtype=object)
        joined[:] = [self.separator.join(label for label, on in zip(state.labels, row, strict=True) if on)
                     for row in called]
        columns = {self.name: joined}
        for index, (_, column) in enumerate(self.probability_columns(state)):
            columns[column] = predicted[:, index].astype(np.float64)
        return columns

    def prediction_columns(self, state: SetOutputState) -> list[str]:
        return [self.name] + [column for _, column in self.probability_columns(state)]

    def probability_columns(self, state: SetOutputState) -> list[tuple[str, str]]:
        return [(label, f"{self.name}_proba_{label}") for label in state.labels]

    def schema(self, state: SetOutputState) -> dict[str, Any]:
        return {**super().schema(state), "labels": state.labels, "thresholds": state.thresholds,
                "separator": self.separator}

    def score(self, target: Target, predicted: np.ndarray, state: SetOutputState) -> dict:
        truth, raw = target.values[target.present], predicted[target.present]
        scores = set_metrics(truth, self.calibrated(raw, state), np.asarray(state.thresholds), state.labels)
        scores["thresholds"] = dict(zip(state.labels, state.thresholds, strict=True))
        scores["threshold_by"] = state.threshold_by
        prior = np.tile(np.asarray(state.rates), (len(truth), 1))
        baseline = set_metrics(truth, prior, np.full(len(state.labels), 0.5), state.labels)
        scores = with_baseline(scores, baseline, "each label at its training rate")
        return self.with_calibration(scores, truth, raw, state)

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        return self.calibration_plot(scores)

    def notes(self, scores: dict) -> list[str]:
        chosen_by = scores.get("threshold_by", "fixed")
        known = {"fixed": "fixed in the config",
                 "default": "the default; no validation split to choose them on"}
        origin = known.get(chosen_by, f"chosen per label on the validation split for the best {chosen_by}")
        thresholds = scores.get("thresholds", {})
        listed = ", ".join(f"{label} {value:.4f}" for label, value in list(thresholds.items())[:LISTED])
        more = f", and {len(thresholds) - LISTED} more in the table" if len(thresholds) > LISTED else ""
        return [f"Decision thresholds ({origin}): {listed}{more}.", *self.calibration_notes(scores)]

    def tables(self, scores: dict) -> list[tuple[list[str], list[list[Any]]]]:
        thresholds = scores.get("thresholds", {})
        rows = [[label, thresholds.get(label, float("nan")), v["precision"], v["recall"], v["f1"],
                 v["support"]] for label, v in scores["per_label"].items()]
        return [(["label", "threshold", "precision", "recall", "F1", "rows with it"], rows)]
