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
                f"{table.source}, row {table.row_number(row)}, column {input_spec.source!r}: found a "
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
