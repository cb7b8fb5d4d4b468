"""Fit every input's and output's state on training rows, and encode tables with them.

Missing values follow each input's policy: ``fill`` (the encoder's fill value), ``skip``
(the row is left out of training; its prediction is empty) or ``error``. What each policy
touched is counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plait.data import Table
from plait.errors import DataError
from plait.spec import Spec
from plait.targets.base import Target


@dataclass
class Encoded:
    """Model-ready inputs, the rows kept, and counts of what the missing-value policies did."""

    inputs: dict[str, np.ndarray]
    kept: np.ndarray
    report: dict[str, dict] = field(default_factory=dict)


def fit_states(spec: Spec, table: Table) -> dict[str, dict]:
    states = {s.name: s.fit(table) for s in spec.inputs}
    states.update({out.name: out.fit(table) for out in spec.outputs})
    return states


def encode_inputs(spec: Spec, states: dict[str, dict], table: Table) -> Encoded:
    arrays, report = {}, {}
    kept = np.ones(table.num_rows, bool)
    for index, input_spec in enumerate(spec.inputs):
        encoded = input_spec.encode(table, states[input_spec.name])
        missing = np.asarray(encoded.missing, bool)
        count = int(missing.sum())
        if count and input_spec.missing == "error":
            row = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{table.at(row)}, column {input_spec.source!r}: found a "
                f"missing or non-finite value; expected a value (inputs[{index}].missing is 'error'; "
                f"{count} row(s) affected; set it to 'fill' or 'skip' to accept them)"
            )
        if input_spec.missing == "skip":
            kept &= ~missing
        arrays[input_spec.name] = encoded.values
        if input_spec.optional:
            arrays[input_spec.mask_name] = (~missing).astype(np.float32).reshape(-1, 1)
        report[input_spec.name] = {"missing": count, "policy": input_spec.missing,
                                   "unseen": encoded.unseen}
    return Encoded(arrays, kept, report)


def encode_targets(spec: Spec, states: dict[str, dict], table: Table) -> dict[str, Target]:
    return {out.name: out.encode(table, states[out.name]) for out in spec.outputs}


def select(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[rows] for name, array in arrays.items()}


def stratified_split(labels: np.ndarray | None, rows: int, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices; each label keeps its share in both parts."""
    rng = np.random.default_rng(seed)
    if fraction <= 0 or rows < 2:
        return np.arange(rows), np.zeros(0, np.int64)
    groups = [np.arange(rows)] if labels is None else [
        np.flatnonzero(labels == label) for label in np.unique(labels)
    ]
    validation = []
    for group in groups:
        shuffled = rng.permutation(group)
        validation.append(shuffled[: int(round(len(group) * fraction))])
    chosen = np.sort(np.concatenate(validation)) if validation else np.zeros(0, np.int64)
    if chosen.size == 0 or chosen.size == rows:
        chosen = np.sort(rng.permutation(rows)[: max(1, min(rows - 1, int(rows * fraction)))])
    training = np.setdiff1d(np.arange(rows), chosen)
    return training, chosen


@dataclass
class TrainingArrays:
    """Encoded rows ready for Keras: inputs, targets, per-output sample weights (0 where the
    target is missing), which targets are present, and what the missing-value policies did."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    report: dict[str, dict]

    @property
    def rows(self) -> int:
        return len(next(iter(self.x.values())))

    @property
    def weighted(self) -> bool:
        return not all(np.all(w == 1.0) for w in self.weights.values())

    def take(self, rows: np.ndarray) -> TrainingArrays:
        return TrainingArrays(select(self.x, rows), select(self.y, rows), select(self.weights, rows),
                              select(self.present, rows), self.report)


def training_arrays(spec: Spec, states: dict[str, dict], table: Table) -> TrainingArrays:
    """The rows of ``table`` that the input policies keep, encoded for training."""
    encoded = encode_inputs(spec, states, table)
    targets = encode_targets(spec, states, table)
    rows = np.flatnonzero(encoded.kept)
    weights, present = {}, {}
    for out in spec.outputs:
        target = targets[out.name]
        weight = out.sample_weights(target, states[out.name])
        weight = np.ones(table.num_rows, np.float32) if weight is None else weight
        weights[out.name] = (weight * target.present)[rows].astype(np.float32)
        present[out.name] = target.present[rows]
        encoded.report.setdefault("targets", {})[out.name] = {"missing": int((~target.present).sum())}
    y = {name: target.values[rows] for name, target in targets.items()}
    return TrainingArrays(select(encoded.inputs, rows), y, weights, present, encoded.report)


def add_reports(total: dict[str, dict], report: dict[str, dict]) -> dict[str, dict]:
    """Counts of two reports added up (for data encoded in several batches)."""
    for name, counts in report.items():
        into = total.setdefault(name, {})
        for key, value in counts.items():
            if isinstance(value, dict):
                add_reports(into, {key: value})
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                into[key] = into.get(key, 0) + value
            else:
                into[key] = value
    return total
