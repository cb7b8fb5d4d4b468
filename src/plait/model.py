"""The public Model: fit, evaluate, predict, describe, save; and ``load``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plait.data import Table, read_table
from plait.errors import PlaitError
from plait.preprocess import (
    encode_inputs,
    encode_targets,
    fit_states,
    stratified_split,
    training_arrays,
)
from plait.spec import Spec, load_spec
from plait.targets.base import Target

CLASSIFIERS = ("binary", "category")


class Model:
    """A multi-input model described by a spec.

    Parameters go in the constructor; ``fit`` learns ``states_`` (each input's and
    output's preprocessing), ``keras_model_`` and ``history_``, and returns ``self``.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 8, "y": [0, 0, 1, 1] * 8})
    >>> model = Model({"inputs": [{"name": "x", "type": "number"}],
    ...                "outputs": [{"name": "y", "type": "binary"}],
    ...                "train": {"epochs": 2, "validation_split": 0}}, verbose=0)
    >>> model.fit(frame).predict(frame).columns.tolist()
    ['y', 'y_proba']
    """

    def __init__(self, spec: Spec | dict | str | Path, *, verbose: int | str = "auto") -> None:
        self.spec = load_spec(spec)
        self.verbose = verbose

    @property
    def keras_model(self) -> Any:
        """The plain Keras model (after ``fit`` or ``load``)."""
        self._check_fitted()
        return self.keras_model_

    def fit(self, data: Any, *, validation_data: Any = None, epochs: int | None = None,
            checkpoint: str | Path | None = None, resume: bool = False,
            cache_dir: str | Path | None = None) -> Model:
        """Fit preprocessing on the training rows, build the Keras model, train it.

        With ``checkpoint`` (a folder), the weights, optimizer state and history are saved
        after every epoch; ``resume=True`` continues from there after an interruption and
        ends with the same weights as an uninterrupted run. Data too large for memory (see
        ``train.stream``) is encoded once into ``cache_dir`` and read back part by part.
        """
        from plait.graph import build, compile_model
        from plait.stream import wants_streaming
        from plait.training import Batches, set_random_seed

        run = Run(Path(checkpoint), self.spec, [data, validation_data]) if checkpoint else None
        carried = run.resume() if run and resume else None
        states = carried["states"] if carried else None
        if wants_streaming(data, self.spec.train):
            prepared = self._prepare_streamed(data, validation_data, cache_dir, states)
        else:
            prepared = self._prepare_in_memory(data, validation_data, states)
        self.states_ = prepared.states
        if run and not carried:
            run.start(self.states_)
        train = self.spec.train
        set_random_seed(train.seed)
        self.keras_model_ = compile_model(build(self.spec, self.states_), self.spec)
        first_epoch = run.restore(self.keras_model_, carried) if carried else 0
        batches = Batches(prepared.train, train.batch_size, train.seed, epoch=first_epoch)
        validation = Batches(prepared.valid, train.batch_size, shuffle=False) if prepared.valid else None
        callbacks, recorder = self._callbacks(batches, validation is not None, run, carried)
        self.keras_model_.fit(
            batches, validation_data=validation, epochs=epochs or train.epochs,
            initial_epoch=first_epoch, callbacks=callbacks, shuffle=False, verbose=self.verbose,
        )
        self.history_ = recorder.history
        self.data_report_ = prepared.report
        self.metrics_ = {}
        if prepared.valid_table is not None:
            self.metrics_["validation"] = self._evaluate(prepared.valid_table, choose_thresholds=True)
        elif prepared.valid:
            self.metrics_["validation"] = self._evaluate_parts(prepared.valid, validation)
        return self

    def _prepare_in_memory(self, data: Any, validation_data: Any, states: dict | None) -> Prepared:
        from plait.training import Part

        table = read_table(data)
        train_table, valid_table = self._split(table, validation_data)
        states = states or fit_states(self.spec, train_table)
        arrays = training_arrays(self.spec, states, train_table)
        if not arrays.rows:
            raise PlaitError(f"{table.source}: no rows left to train on after the missing-value "
                             f"policies: {arrays.report}")
        report = {"training_rows": train_table.num_rows, "used_rows": arrays.rows, "inputs": arrays.report}
        valid = []
        if valid_table is not None:
            report["validation_rows"] = valid_table.num_rows
            held_out = training_arrays(self.spec, states, valid_table)
            valid = [Part(held_out.x, held_out.y, held_out.weights if held_out.weighted else None)]
        part = Part(arrays.x, arrays.y, arrays.weights if arrays.weighted else None)
        return Prepared(states, [part], valid, report, valid_table)

    def _prepare_streamed(self, data: Any, validation_data: Any, cache_dir: str | Path | None,
                          states: dict | None) -> Prepared:
        from plait.stream import prepare

        streamed = prepare(self.spec, data, validation_data, cache_dir, states)
        return Prepared(streamed.states, streamed.train, streamed.valid, streamed.report)

    def _evaluate_parts(self, parts: list[Any], batches: Any) -> dict:
        """Validation metrics of a streamed run, from its encoded validation parts."""
        raw = self.keras_model_.predict(batches, verbose=0)
        raw = raw if isinstance(raw, dict) else {self.spec.outputs[0].name: raw}
        loaded = [part.targets() for part in parts]
        targets = {out.name: Target(np.concatenate([y[out.name] for y, _ in loaded]),
                                    np.concatenate([present[out.name] for _, present in loaded]))
                   for out in self.spec.outputs}
        return self._score({name: np.asarray(values) for name, values in raw.items()}, targets,
                           sum(part.rows for part in parts), choose_thresholds=True)

    def _split(self, table: Table, validation_data: Any) -> tuple[Table, Table | None]:
        if validation_data is not None:
            return table, read_table(validation_data)
        train = self.spec.train
        training, validation = stratified_split(self._strata(table), table.num_rows,
                                                train.validation_split, train.seed)
        if validation.size == 0:
            return table, None
        return table.take(training), table.take(validation)

    def _strata(self, table: Table) -> np.ndarray | None:
        for out in self.spec.outputs:
            if out.type in CLASSIFIERS:
                labels = table.strings(out.source, out.describe_use())
                return np.asarray(labels.fill_null("\x00missing").to_numpy(zero_copy_only=False))
        return None

    def _callbacks(self, batches: Any, has_validation: bool, run: Run | None,
                   carried: dict | None) -> tuple[list[Any], Any]:
        from plait.training import Checkpoint, EpochOrder, ResumableEarlyStopping

        callbacks: list[Any] = [EpochOrder(batches)]
        stopping = None
        config = self.spec.train.early_stopping
        if config is not None:
            monitor = config.monitor
            if not has_validation and monitor.startswith("val_"):
                monitor = monitor[4:]
            stopping = ResumableEarlyStopping(
                carried=carried.get("stopping") if carried else None, monitor=monitor,
                patience=config.patience, min_delta=config.min_delta, mode=config.direction,
                restore_best_weights=True)
            callbacks.append(stopping)
        history = carried["history"] if carried else {}
        recorder = Checkpoint(run.folder if run else None, history, stopping)
        return callbacks + [recorder], recorder

    def predict_arrays(self, data: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The model's raw outputs per output name, and the rows the input policies kept."""
        self._check_fitted()
        table = read_table(data)
        encoded = encode_inputs(self.spec, self.states_, table)
        raw = self.keras_model_.predict(encoded.inputs, batch_size=self.spec.train.batch_size,
                                        verbose=0)
        if not isinstance(raw, dict):
            raw = {self.spec.outputs[0].name: raw}
        return {name: np.asarray(values) for name, values in raw.items()}, encoded.kept

    def predict(self, data: Any) -> Any:
        """A pandas DataFrame: one column per output with the decoded prediction, plus
        ``<output>_proba`` (binary) or ``<output>_proba_<label>`` (category) columns. Rows
        an input's ``skip`` policy leaves out get empty predictions."""
        import pandas as pd

        raw, kept = self.predict_arrays(data)
        columns = {}
        for out in self.spec.outputs:
            for name, values in out.decode(raw[out.name], self.states_[out.name]).items():
                column = pd.Series(values)
                columns[name] = column.where(kept, None) if not kept.all() else column
        return pd.DataFrame(columns)

    def evaluate(self, data: Any) -> dict:
        """Metrics per output on labelled data, in the targets' own units, each beside the
        trivial baseline (majority class or training mean) and the lift over it."""
        return self._evaluate(read_table(data), choose_thresholds=False)

    def _evaluate(self, table: Table, choose_thresholds: bool) -> dict:
        """Metrics on ``table``; with ``choose_thresholds`` (the validation split), each binary
        output's decision threshold is first chosen on these rows."""
        self._check_fitted()
        raw, kept = self.predict_arrays(table)
        targets = {name: Target(target.values, target.present & kept)
                   for name, target in encode_targets(self.spec, self.states_, table).items()}
        return self._score(raw, targets, table.num_rows, choose_thresholds)

    def _score(self, raw: dict[str, np.ndarray], targets: dict[str, Target], rows: int,
               choose_thresholds: bool) -> dict:
        results: dict[str, Any] = {"rows": int(rows)}
        for out in self.spec.outputs:
            usable = targets[out.name]
            if choose_thresholds and out.type == "binary":
                out.choose_threshold(usable, raw[out.name], self.states_[out.name])
            results[out.name] = out.score(usable, raw[out.name], self.states_[out.name])
            results[out.name]["rows"] = int(usable.present.sum())
        return results

    def describe(self) -> dict[str, dict]:
        """Per branch, merge node, head and output: its layers, output shapes and parameters."""
        from plait.graph import build

        model = self.keras_model_ if hasattr(self, "keras_model_") else build(
            self.spec, getattr(self, "states_", None) or placeholder_states(self.spec))
        return describe_model(self.spec, model)

    def explain(self, data: Any, *, repeats: int = 5, seed: int = 0) -> dict:
        """Per input and output, how much the output's metric drops on labelled ``data`` when
        the input is permuted across rows, or switched off (see ``plait.explain``); kept as
        ``importance_`` and saved with the bundle."""
        from plait.explain import importance

        self._check_fitted()
        self.importance_ = importance(self, data, repeats=repeats, seed=seed)
        return self.importance_

    def save(self, path: str | Path, *, report: bool = False) -> Path:
        """Write the bundle directory (whole or not at all); returns its path. With
        ``report``, also ``report.html`` and the PNG plots it shows (``plots/``)."""
        from plait.bundle import save

        self._check_fitted()
        return save(self, Path(path), report=report)

    def _check_fitted(self) -> None:
        if not hasattr(self, "keras_model_"):
            raise PlaitError("this model is not trained yet: call fit(data) or plait.load(path)")


@dataclass
class Prepared:
    """Encoded training and validation parts, the fitted states, and the data report; for
    data read in memory, also the validation table (scored from its raw values)."""

    states: dict[str, dict]
    train: list[Any]
    valid: list[Any]
    report: dict
    valid_table: Table | None = None


class Run:
    """A checkpoint folder: what the run was started with, and how far it got."""

    def __init__(self, folder: Path, spec: Spec, sources: list[Any]) -> None:
        self.folder = folder
        self.fingerprint = {"spec": spec.to_dict(), "data": [identity(s) for s in sources]}

    def start(self, states: dict) -> None:
        from plait.training import clear, write_json

        clear(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / "run.json", {"fingerprint": self.fingerprint, "states": states})

    def resume(self) -> dict | None:
        """What the interrupted run left: states, history, epochs done; None if nothing."""
        from plait.training import read_json

        if not (self.folder / "progress.json").is_file():
            return None
        started = read_json(self.folder / "run.json")
        if started["fingerprint"] != json.loads(json.dumps(self.fingerprint)):
            raise PlaitError(f"{self.folder}: this checkpoint was written for another config or "
                             "other data; remove it, or train without --resume")
        return {"states": started["states"], **read_json(self.folder / "progress.json")}

    def restore(self, model: Any, carried: dict) -> int:
        """Load the checkpointed weights, optimizer and random state; the epoch to continue
        from."""
        from plait.training import seed_states

        model.optimizer.build(model.trainable_variables)
        best = self.folder / "best.weights.h5"
        if carried.get("stopping") and best.is_file():
            model.load_weights(best)
            carried["stopping"]["best_weights"] = model.get_weights()
        model.load_weights(self.folder / "weights.weights.h5")
        for state, value in zip(seed_states(model), carried.get("seeds", []), strict=False):
            state.assign(np.asarray(value, dtype=state.dtype))
        return int(carried["epoch"])


def identity(source: Any) -> Any:
    """What identifies a data source for a checkpoint: each file's path, size and change time;
    an in-memory table's shape and schema."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        path = Path(source).resolve()
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
    table = read_table(source)
    return [table.num_rows, str(table.arrow.schema)]


def placeholder_states(spec: Spec) -> dict[str, dict]:
    states = {s.name: s.placeholder_state() for s in spec.inputs}
    states.update({out.name: out.placeholder_state() for out in spec.outputs})
    return states


def describe_model(spec: Spec, model: Any) -> dict[str, dict]:
    from plait.graph import layer_groups

    kinds = {s.name: f"input {s.type}" for s in spec.inputs}
    kinds.update({n.name: f"merge {n.strategy}" for n in spec.merge_nodes})
    kinds.update({out.name: f"output {out.type}" for out in spec.outputs})
    kinds["head"] = "head"
    summary = {}
    for owner, layers in layer_groups(spec, model).items():
        rows = [{"layer": layer.name, "class": type(layer).__name__,
                 "shape": _shape(layer), "params": int(layer.count_params())} for layer in layers]
        summary[owner] = {"kind": kinds[owner], "layers": rows,
                          "params": sum(row["params"] for row in rows)}
    return summary


def _shape(layer: Any) -> list:
    output = layer.output
    shape = output.shape if hasattr(output, "shape") else output[0].shape
    return list(shape)


def load(path: str | Path) -> Model:
    """A trained Model from a bundle directory written by ``Model.save``."""
    from plait.bundle import load as load_bundle

    return load_bundle(Path(path))
