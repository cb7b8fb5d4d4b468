"""Fit every input's and output's state on training rows, and encode rows with them.

One path for every source: a sample of the training rows (all of them, up to
``train.fit_rows``) fits the states; then every batch of the source is split into
training and validation rows (stratified on the first output with classes), encoded, and
kept as a part: in memory for a table, written to an on-disk cache for files, so a later
run on the same files and config finds the fitted states and the parts already there.

Missing values follow each input's policy: ``fill`` (the encoder's fill value), ``skip``
(the row is left out of training; its prediction is empty) or ``error``. What each policy
touched is counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from plait.data import Table
from plait.errors import DataError, PlaitError
from plait.features.base import state_problem
from plait.memory import (
    MEGABYTE,
    MIN_FIT_ROWS,
    MIN_PART_ROWS,
    PROBE_ROWS,
    RowCost,
    cached_row_cost,
    release_memory,
    row_cost,
    sized,
    smaller,
    traced,
)
from plait.parts import Part, StoredPart, read_json, write_json, write_part
from plait.sources import Source, default_cache_dir
from plait.spec import Spec, Train
from plait.targets.base import Target

States = dict[str, Any]
"""Each input's and output's fitted state, by name."""
SIZING_KEYS = ("part_rows", "fit_rows", "memory_mb")


@dataclass
class Encoded:
    """Model-ready inputs, the rows kept, and counts of what the missing-value policies did."""

    inputs: dict[str, np.ndarray]
    kept: np.ndarray
    report: dict[str, dict] = field(default_factory=dict)


def fit_states(spec: Spec, table: Table) -> States:
    states = {s.name: s.fit(table) for s in spec.inputs}
    states.update({out.name: out.fit(table) for out in spec.outputs})
    return states


def dump_states(states: States) -> dict[str, Any]:
    """The states as JSON-able values."""
    return {name: state.model_dump(mode="json") for name, state in states.items()}


def load_states(spec: Spec, raw: Any, where: str, error: type[PlaitError] = PlaitError) -> States:
    """States read from JSON, each validated by its type; a mistake is an ``error`` naming
    ``where`` and the field."""
    if not isinstance(raw, dict):
        raise error(f"{where}: found {type(raw).__name__}; expected the fitted states by name")
    states = {}
    for item in [*spec.inputs, *spec.outputs]:
        if item.name not in raw:
            raise error(f"{where}: no fitted state for {item.name!r}")
        try:
            states[item.name] = item.load_state(raw[item.name])
        except ValidationError as problem:
            raise error(f"{where}: states.{item.name}.{state_problem(problem)}") from None
    return states


def encode_inputs(spec: Spec, states: States, table: Table) -> Encoded:
    arrays, report = {}, {}
    kept = np.ones(table.num_rows, bool)
    for index, input_spec in enumerate(spec.inputs):
        encoded = input_spec.encode(table, states[input_spec.name])
        missing = np.asarray(encoded.missing, bool)
        count = int(missing.sum())
        if count and input_spec.missing == "error":
            row = int(np.flatnonzero(missing)[0])
            raise table.error(
                row, input_spec.source,
                f"found a missing or non-finite value; expected a value (inputs[{index}].missing is "
                f"'error'; {count} row(s) affected; set it to 'fill' or 'skip' to accept them)")
        if input_spec.missing == "skip":
            kept &= ~missing
        arrays[input_spec.name] = encoded.values
        if input_spec.optional:
            arrays[input_spec.mask_name] = (~missing).astype(np.float32).reshape(-1, 1)
        report[input_spec.name] = {"missing": count, "policy": input_spec.missing,
                                   "unseen": encoded.unseen}
    return Encoded(arrays, kept, report)


def encode_targets(spec: Spec, states: States, table: Table) -> dict[str, Target]:
    return {out.name: out.encode(table, states[out.name]) for out in spec.outputs}


def select(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[rows] for name, array in arrays.items()}


def stratified_split(labels: np.ndarray | None, rows: int, fraction: float,
                     seed: Any) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices; each label keeps its share in both parts.
    ``seed`` is anything ``numpy.random.default_rng`` takes.

    >>> training, validation = stratified_split(np.array(["a", "a", "b", "b"]), 4, 0.5, 0)
    >>> len(validation)
    2
    """
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


def held_out(spec: Spec, table: Table, place: tuple[int, int], fraction: float) -> np.ndarray:
    """Which rows of one batch are validation rows: ``fraction`` of them, stratified on the
    first output with classes, drawn from a generator seeded by the batch's place."""
    if fraction >= 1.0:
        return np.ones(table.num_rows, bool)
    stratifying = next((out for out in spec.outputs if out.stratifies), None)
    labels = stratifying.strata(table) if stratifying is not None else None
    _, validation = stratified_split(labels, table.num_rows, fraction, [spec.train.seed, *place])
    mask = np.zeros(table.num_rows, bool)
    mask[validation] = True
    return mask


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


def training_arrays(spec: Spec, states: States, table: Table) -> TrainingArrays:
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


def needed_columns(spec: Spec, targets: bool = True) -> list[str]:
    columns = [c for s in spec.inputs for c in s.source_columns()]
    targeted = [c for out in spec.outputs for c in out.source_columns()] if targets else []
    return list(dict.fromkeys(columns + targeted))


def sample(spec: Spec, source: Source, split: float, rows: int) -> Table:
    """A uniform sample of about ``rows`` training rows (all of them when there are fewer),
    each remembering its file and row."""
    columns = needed_columns(spec)
    counts = source.row_counts(columns)
    if not sum(counts):
        raise DataError(f"{source.name}: has no data rows")
    chance = min(1.0, rows / max(1.0, sum(counts) * (1.0 - split)))
    pieces, chosen_rows = [], []
    for file_index, batch_index, table in source.batches(columns):
        training = ~held_out(spec, table, (file_index, batch_index), split)
        rng = np.random.default_rng([spec.train.seed, file_index, batch_index, 1])
        chosen = np.flatnonzero(training & (rng.random(table.num_rows) < chance))
        pieces.append(table.arrow.take(pa.array(chosen, pa.int64())))
        origin = table.origin[chosen] if table.origin is not None else chosen
        chosen_rows.append((file_index, origin))
    return source.gathered(pieces, chosen_rows, counts)


@dataclass
class Prepared:
    """What training needs: fitted states, encoded training and validation parts, the data
    report, and the preprocessing config they were made for (``Spec.preprocessing``)."""

    states: States
    train: list[Part]
    valid: list[Part]
    report: dict
    config: dict = field(default_factory=dict)


def prepare(spec: Spec, source: Source, valid_source: Source | None,
            cache_dir: str | Path | None = None, states: States | None = None) -> Prepared:
    """Fit (or find) the states and encode (or find) the parts of a run."""
    train = spec.train
    split = 0.0 if valid_source else train.validation_split
    if not source.on_disk:
        states = states or fit_states(spec, sample(spec, source, split, train.fit_rows))
        prepared = encode_parts(spec, states, source, valid_source, split, MemoryParts())
        prepared.report.pop("parts")
        prepared.config = spec.preprocessing()
        return prepared
    if valid_source is not None and not valid_source.on_disk:
        raise DataError(f"validation data: found an in-memory table; expected a file path, since the "
                        f"training data {source.name} is streamed from disk")
    cache = Path(cache_dir or train.cache_dir or default_cache_dir())
    key = {"data": source.identity(), "valid": valid_source.identity() if valid_source else None,
           "encoding": encoding_config(spec), "seed": train.seed, "split": split}
    train, budget = sized(spec, lambda: cached_row_cost(cache / f"cost-{digest(key)}.json",
                                                        lambda: probed_row_cost(spec, source)))
    train = cached_sizes(spec, cache, key, train, None if states is None else dump_states(states))
    key.update(part_rows=train.part_rows, fit_rows=train.fit_rows)
    source = source.with_rows(train.part_rows)
    valid_source = valid_source.with_rows(train.part_rows) if valid_source else None
    if states is None:
        path = cache / f"states-{digest(key)}.json"
        states = cached_states(spec, path,
                               lambda: fit_states(spec, sample(spec, source, split, train.fit_rows)))
        release_memory()  # the sample and what fitting it took
    folder = encoded_folder(cache, key, dump_states(states))
    if not (folder / "meta.json").is_file():
        stored = encode_parts(spec, states, source, valid_source, split, StoredParts(folder))
        write_json(folder / "meta.json", {"parts": stored.report["parts"], "report": stored.report})
    meta = read_json(folder / "meta.json")
    parts = {kind: [StoredPart(folder / kind / name, rows, weighted)
                    for name, rows, weighted in meta["parts"][kind]] for kind in ("train", "valid")}
    report = {key: value for key, value in meta["report"].items() if key != "parts"}
    report["memory"] = {"budget_mb": None if budget is None else round(budget / MEGABYTE, 1),
                        "part_rows": train.part_rows, "fit_rows": train.fit_rows}
    release_memory()  # what fitting and encoding freed, before training compiles the model
    return Prepared(states, parts["train"], parts["valid"], report, spec.preprocessing())


def cached_sizes(spec: Spec, cache: Path, key: dict, train: Train, states: dict | None) -> Train:
    """``train``; or, when its sizes come from the memory budget (which moves with the memory
    available) and the cache holds no parts of them, the largest smaller sizes it holds parts
    of for the same data and config (encoded with ``states``, as JSON, when they are given):
    smaller sizes fit the budget too."""
    derived = {"part_rows", "fit_rows"} - spec.train.model_fields_set

    def candidates(name: str, least: int) -> list[int]:
        value = getattr(train, name)
        return [value, *smaller(value, least)] if name in derived else [value]

    if not derived:
        return train
    for part_rows in candidates("part_rows", MIN_PART_ROWS):
        for fit_rows in candidates("fit_rows", MIN_FIT_ROWS):
            sized_key = {**key, "part_rows": part_rows, "fit_rows": fit_rows}
            fitted = cache / f"states-{digest(sized_key)}.json"
            if states is None and not fitted.is_file():
                continue
            known = states if states is not None else read_json(fitted)
            if (encoded_folder(cache, sized_key, known) / "meta.json").is_file():
                return train.model_copy(update={"part_rows": part_rows, "fit_rows": fit_rows})
    return train


def encoded_folder(cache: Path, key: dict, states: dict) -> Path:
    """Where the parts encoded for ``key`` with these states (as JSON) are cached."""
    return cache / f"encoded-{digest({**key, 'states': states})}"


def encoding_config(spec: Spec) -> dict:
    """``spec.preprocessing()`` without the keys that only size the run (the sizes themselves
    are part of a cache's key): runs whose budgets give the same sizes share a cache."""
    config = spec.preprocessing()
    config["train"] = {key: value for key, value in config["train"].items() if key not in SIZING_KEYS}
    return config


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]


def cached_states(spec: Spec, path: Path, compute: Callable[[], States]) -> States:
    if path.is_file():
        return load_states(spec, read_json(path), str(path))
    states = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dump_states(states))
    return states


class MemoryParts:
    """Encoded parts kept in memory."""

    def __init__(self) -> None:
        self.parts: dict[str, list[Part]] = {"train": [], "valid": []}

    def add(self, kind: str, arrays: TrainingArrays) -> None:
        self.parts[kind].append(Part(arrays.x, arrays.y, arrays.weights if arrays.weighted else None,
                                     arrays.present))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def listed(self) -> dict[str, list]:
        return {kind: [[str(i), part.rows, part.weights is not None] for i, part in enumerate(parts)]
                for kind, parts in self.parts.items()}


class StoredParts(MemoryParts):
    """Encoded parts written to a cache folder (one ``.npy`` file per array); the folder
    appears whole, under its final name, or not at all."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.partial = folder.with_name(f".partial-{os.getpid()}-{folder.name}")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.written: dict[str, list] = {"train": [], "valid": []}

    def add(self, kind: str, arrays: TrainingArrays) -> None:
        name = f"{len(self.written[kind]):06d}"
        write_part(self.partial / kind / name, arrays.x, arrays.y, arrays.weights, arrays.present)
        self.written[kind].append([name, arrays.rows, arrays.weighted])

    def close(self) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.partial.rename(self.folder)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def listed(self) -> dict[str, list]:
        return self.written


def encode_parts(spec: Spec, states: States, source: Source, valid_source: Source | None, split: float,
                 store: MemoryParts) -> Prepared:
    """Every batch of the sources split, encoded and added to ``store`` as a part."""
    counts = {"train": 0, "valid": 0}
    reports: dict[str, dict] = {"train": {}, "valid": {}}
    try:
        for data, fraction in [(source, split)] + ([(valid_source, 1.0)] if valid_source else []):
            for file_index, batch_index, table in data.batches(needed_columns(spec)):
                validation = held_out(spec, table, (file_index, batch_index), fraction)
                for kind, rows in (("train", np.flatnonzero(~validation)),
                                   ("valid", np.flatnonzero(validation))):
                    if not rows.size:
                        continue
                    arrays = training_arrays(spec, states, table if rows.size == table.num_rows
                                             else table.take(rows))
                    counts[kind] += int(rows.size)
                    add_reports(reports[kind], arrays.report)
                    if arrays.rows:
                        store.add(kind, arrays)
        listed = store.listed()
        report: dict[str, Any] = {"training_rows": counts["train"],
                                  "used_rows": sum(rows for _, rows, _ in listed["train"]),
                                  "inputs": reports["train"]}
        if source.on_disk:
            report["streamed"] = True
        if counts["valid"]:
            report["validation_rows"] = counts["valid"]
        if not listed["train"]:
            raise PlaitError(f"{source.name}: no rows left to train on after the missing-value "
                             f"policies: {report['inputs']}")
        store.close()
    except BaseException:
        store.abort()
        raise
    return Prepared(states, store.parts["train"], store.parts["valid"], {**report, "parts": listed})


def probed_row_cost(spec: Spec, source: Source) -> RowCost | None:
    """What a row of ``source`` costs to hold, fit and encode (``plait.memory.row_cost``),
    measured on its first ``PROBE_ROWS`` rows."""
    first = next(iter(source.with_rows(PROBE_ROWS).batches(needed_columns(spec))), None)
    return row_cost(first[2] if first else None, lambda table: phase_costs(spec, table))


def phase_costs(spec: Spec, table: Table) -> tuple[float, float, float]:
    """Bytes of the encoded arrays of ``table``, and the peaks of fitting and of encoding it."""
    with traced() as fitting:
        states = fit_states(spec, table)
    with traced() as encoding:
        arrays = training_arrays(spec, states, table)
    groups = (arrays.x, arrays.y, arrays.weights, arrays.present)
    encoded = sum(values.nbytes for group in groups for values in group.values())
    return float(encoded), float(fitting.peak), float(encoding.peak)
