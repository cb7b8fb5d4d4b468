"""The public Model: fit, evaluate, predict, describe, save; and ``load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plait.data import Table, read_table
from plait.errors import PlaitError
from plait.preprocess import (
    encode_inputs,
    encode_targets,
    fit_states,
    select,
    stratified_split,
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

    def fit(self, data: Any, *, validation_data: Any = None, epochs: int | None = None) -> Model:
        """Fit preprocessing on the training rows, build the Keras model, train it."""
        import keras

        from plait.graph import build, compile_model

        table = read_table(data)
        train_table, valid_table = self._split(table, validation_data)
        self.states_ = fit_states(self.spec, train_table)
        train_x, train_y, train_weights, report = self._training_arrays(train_table)
        validation = None
        if valid_table is not None:
            valid_x, valid_y, valid_weights, _ = self._training_arrays(valid_table)
            validation = (valid_x, valid_y, valid_weights)
        keras.utils.set_random_seed(self.spec.train.seed)
        self.keras_model_ = compile_model(build(self.spec, self.states_), self.spec)
        history = self.keras_model_.fit(
            train_x, train_y, sample_weight=train_weights, validation_data=validation,
            epochs=epochs or self.spec.train.epochs, batch_size=self.spec.train.batch_size,
            callbacks=self._callbacks(validation is not None), verbose=self.verbose,
        )
        self.history_ = {key: [float(v) for v in values] for key, values in history.history.items()}
        self.data_report_ = {"training_rows": train_table.num_rows, "used_rows": len(train_x[
            self.spec.inputs[0].name]), "inputs": report}
        self.metrics_ = {}
        if valid_table is not None:
            self.data_report_["validation_rows"] = valid_table.num_rows
            self.metrics_["validation"] = self.evaluate(valid_table)
        return self

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

    def _training_arrays(self, table: Table) -> tuple[dict, dict, dict | None, dict]:
        encoded = encode_inputs(self.spec, self.states_, table)
        targets = encode_targets(self.spec, self.states_, table)
        rows = np.flatnonzero(encoded.kept)
        weights = {}
        for out in self.spec.outputs:
            target = targets[out.name]
            weight = out.sample_weights(target, self.states_[out.name])
            weight = np.ones(table.num_rows, np.float32) if weight is None else weight
            weights[out.name] = (weight * target.present)[rows].astype(np.float32)
            encoded.report.setdefault("targets", {})[out.name] = {
                "missing": int((~target.present).sum())}
        if not rows.size:
            raise PlaitError(f"{table.source}: no rows left to train on after the missing-value "
                             f"policies: {encoded.report}")
        x = select(encoded.inputs, rows)
        y = {name: target.values[rows] for name, target in targets.items()}
        uniform = all(np.all(w == 1.0) for w in weights.values())
        return x, y, None if uniform else weights, encoded.report

    def _callbacks(self, has_validation: bool) -> list[Any]:
        import keras

        stopping = self.spec.train.early_stopping
        if stopping is None:
            return []
        monitor = stopping.monitor
        if not has_validation and monitor.startswith("val_"):
            monitor = monitor[4:]
        return [keras.callbacks.EarlyStopping(monitor=monitor, patience=stopping.patience,
                                              min_delta=stopping.min_delta, mode=stopping.direction,
                                              restore_best_weights=True)]

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
        trivial baseline (majority class or training mean)."""
        self._check_fitted()
        table = read_table(data)
        raw, kept = self.predict_arrays(table)
        targets = encode_targets(self.spec, self.states_, table)
        results: dict[str, Any] = {"rows": int(table.num_rows)}
        for out in self.spec.outputs:
            target = targets[out.name]
            usable = Target(target.values, target.present & kept)
            results[out.name] = out.score(usable, raw[out.name], self.states_[out.name])
            results[out.name]["rows"] = int(usable.present.sum())
        return results

    def describe(self) -> dict[str, dict]:
        """Per branch, merge node, head and output: its layers, output shapes and parameters."""
        from plait.graph import build

        model = self.keras_model_ if hasattr(self, "keras_model_") else build(
            self.spec, getattr(self, "states_", None) or placeholder_states(self.spec))
        return describe_model(self.spec, model)

    def save(self, path: str | Path) -> Path:
        """Write the bundle directory (whole or not at all); returns its path."""
        from plait.bundle import save

        self._check_fitted()
        return save(self, Path(path))

    def _check_fitted(self) -> None:
        if not hasattr(self, "keras_model_"):
            raise PlaitError("this model is not trained yet: call fit(data) or plait.load(path)")


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
