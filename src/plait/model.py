"""The public Model: fit, evaluate, predict, describe, explain, save; and ``Model.load``."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from plait import bundle
from plait.errors import BundleError, ConfigError, DataError, PlaitError
from plait.parts import Part, read_json, write_json
from plait.preprocess import (
    Prepared,
    States,
    dump_states,
    encode_inputs,
    fit_states,
    load_states,
    needed_columns,
    prepare,
    training_arrays,
)
from plait.sources import Source, open_source
from plait.spec import Spec, load_spec
from plait.targets.base import Target

STATE_FORMAT = 1


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

    # -- training ---------------------------------------------------------------------------

    def fit(self, data: Any, *, validation_data: Any = None, epochs: int | None = None,
            checkpoint: str | Path | None = None, resume: bool = False,
            cache_dir: str | Path | None = None, callbacks: list[Any] | None = None) -> Model:
        """Fit preprocessing on the training rows, build the Keras model, train it.

        With ``checkpoint`` (a folder), the weights, optimizer state and history are saved
        after every epoch; ``resume=True`` continues from there after an interruption and
        ends with the same weights as an uninterrupted run. Data too large for memory (see
        ``train.stream``) is encoded once into ``cache_dir`` and read back part by part.
        ``callbacks`` are Keras callbacks run after plait's own (their ``logs`` hold the
        epoch's Keras metrics); one with a ``bind(model, valid_parts)`` method is first
        given this Model and the encoded validation parts, to score plait's metrics.
        """
        from plait.backend import use_compilation_cache
        from plait.distributed import chief_first, is_chief, reserve_devices

        reserve_devices(self.spec.train.distribution)  # before anything starts JAX
        use_compilation_cache()  # before a pretrained encoder compiles, in prepare
        train = self.spec.train
        source = open_source(data, train)
        valid_source = open_source(validation_data, train) if validation_data is not None else None
        run = Run(Path(checkpoint), self.spec, [source, valid_source]) if checkpoint else None
        carried = run.resume() if run and resume else None
        prepared = chief_first(source.on_disk, lambda: prepare(
            self.spec, source, valid_source, cache_dir, carried["states"] if carried else None))
        if run and not carried and is_chief():
            run.start(prepared.states)
        return self._train(prepared, epochs, callbacks, run, carried)

    def fit_prepared(self, prepared: Prepared, *, epochs: int | None = None,
                     callbacks: list[Any] | None = None) -> Model:
        """Train on data already fitted and encoded by ``plait.preprocess.prepare`` for a spec
        with the same ``preprocessing()`` as this one (``plait tune`` encodes once for many
        trials); otherwise as ``fit``."""
        from plait.backend import use_compilation_cache
        from plait.distributed import reserve_devices

        if prepared.config != self.spec.preprocessing():
            raise PlaitError("these prepared data were fitted and encoded for another preprocessing config")
        reserve_devices(self.spec.train.distribution)
        use_compilation_cache()
        return self._train(prepared, epochs, callbacks, None, None)

    def _train(self, prepared: Prepared, epochs: int | None, callbacks: list[Any] | None,
               run: Run | None, carried: dict | None) -> Model:
        from plait.distributed import plan_for
        from plait.graph import compile_model, ensemble

        if not prepared.valid:
            self._check_needs_no_validation()
        train = self.spec.train
        self.states_ = prepared.states
        plan = plan_for(train.distribution, train.batch_size)  # None: one device, as ever
        if train.ensemble == 1:
            self.keras_model_, self.history_ = self._train_network(
                prepared, None, epochs, callbacks, plan, run, carried)
        else:
            done = (carried or {}).get("members", {})
            trained = [self._train_network(prepared, index, epochs, callbacks, plan,
                                           run and run.member(index), done.get(index))
                       for index in range(train.ensemble)]
            networks = [uncompiled(self.spec, self.states_, index, network)
                        for index, (network, _) in enumerate(trained)]
            self.keras_model_ = compile_model(ensemble(networks), self.spec)
            self.history_ = {"members": [history for _, history in trained]}
        self.distributed_ = plan.describe() if plan else None
        self.data_report_ = prepared.report
        self.metrics_ = {}
        if prepared.valid:
            self.states_, self.metrics_["validation"] = self.score_parts(prepared.valid, choose=True)
        return self

    def _train_network(self, prepared: Prepared, index: int | None, epochs: int | None,
                       callbacks: list[Any] | None, plan: Any, run: Run | None,
                       carried: dict | None) -> tuple[Any, dict]:
        """Build and train the network, or member ``index`` of an ensemble (its own seed, batch
        order and early stopping); a member finished before an interruption is loaded."""
        from plait.backend import set_random_seed
        from plait.distributed import is_chief
        from plait.graph import build_member, compile_model
        from plait.training import Batches

        train = self.spec.train
        seed = train.seed + (index or 0)
        if index is not None and self.verbose != 0:
            print(f"ensemble member {index + 1} of {train.ensemble} (seed {seed})", file=sys.stderr)
        set_random_seed(seed)
        with plan.scope() if plan else contextlib.nullcontext():
            self.keras_model_ = compile_model(build_member(self.spec, self.states_, index), self.spec)
            if carried and carried.get("done"):
                self.keras_model_.optimizer.build(self.keras_model_.trainable_variables)
                self.keras_model_.load_weights(run.folder / DONE_WEIGHTS)
                return self.keras_model_, carried["history"]
            first_epoch = run.restore(self.keras_model_, carried) if carried else 0
            batches = Batches(prepared.train, train.batch_size, seed, epoch=first_epoch)
            validation = Batches(prepared.valid, train.batch_size, shuffle=False) if prepared.valid else None
            if plan:
                plan.agree(first_epoch, "the epoch to resume from")
                batches, validation = plan.share(batches), plan.share(validation)
            own, recorder = self._callbacks(batches, validation is not None, run if is_chief() else None,
                                            carried)
            for callback in callbacks or []:
                if hasattr(callback, "bind"):
                    callback.bind(self, prepared.valid)
            self.keras_model_.fit(
                batches, validation_data=validation, epochs=epochs or train.epochs,
                initial_epoch=first_epoch, callbacks=own + list(callbacks or []), shuffle=False,
                verbose=self.verbose,
            )
        network = self.keras_model_
        if plan:
            network = plan.localized(network, lambda: compile_model(
                build_member(self.spec, self.states_, index), self.spec))
        if run is not None and index is not None and is_chief():
            run.finish(network)
        return network, recorder.history

    def _check_needs_no_validation(self) -> None:
        # Before training, not after it: the missing validation rows are known already.
        needs = [(index, out, out.needs_validation()) for index, out in enumerate(self.spec.outputs)]
        problems = [f"  outputs[{index}] {out.name!r}: {why}" for index, out, why in needs if why]
        if problems:
            raise ConfigError("config: there are no validation rows, and these need them\n" +
                              "\n".join(problems) + "\n  give train.validation_split above 0 (e.g. 0.2), or "
                              "validation data (plait train --valid, or Model.fit(validation_data=))")

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

    # -- encoded parts, predictions and scores ----------------------------------------------

    def _source(self, data: Any) -> Source:
        return data if isinstance(data, Source) else open_source(data, self.spec.train)

    def encoded_parts(self, data: Any) -> Iterator[Part]:
        """``data`` batch by batch, encoded as training encodes it (rows an input's ``skip``
        policy leaves out are dropped)."""
        self._check_fitted()
        source = self._source(data)
        for _, _, table in source.batches(needed_columns(self.spec)):
            arrays = training_arrays(self.spec, self.states_, table)
            yield Part(arrays.x, arrays.y, arrays.weights, arrays.present, read=table.num_rows)

    def raw_outputs(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The Keras model's outputs for encoded inputs, by output name."""
        raw = self.keras_model_.predict(x, batch_size=self.spec.train.batch_size, verbose=0)
        if not isinstance(raw, dict):
            raw = {self.spec.outputs[0].name: raw}
        return {name: np.asarray(values) for name, values in raw.items()}

    def score_parts(self, parts: Iterable[Part], choose: bool = False) -> tuple[States, dict]:
        """Metrics per output on encoded parts, and the states after the choices made on
        these rows when ``choose`` (the validation split: decision thresholds)."""
        raws, targets, present, read = [], [], [], 0
        for part in parts:
            read += part.read
            if not part.rows:
                continue
            raws.append(self.raw_outputs(part.inputs()))
            y, has = part.targets()
            targets.append(y)
            present.append(has)
        if not raws:
            raise PlaitError("no rows to score: every row was left out by the missing-value policies")
        states = dict(self.states_)
        results: dict[str, Any] = {"rows": read}
        for out in self.spec.outputs:
            raw = np.concatenate([r[out.name] for r in raws])
            target = Target(np.concatenate([y[out.name] for y in targets]),
                            np.concatenate([p[out.name] for p in present]))
            if choose:
                states[out.name] = out.choose(target, raw, states[out.name])
            results[out.name] = out.score(target, raw, states[out.name])
            results[out.name]["rows"] = int(target.present.sum())
        return states, results

    def predict_arrays(self, data: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The model's raw outputs per output name, and the rows the input policies kept."""
        self._check_fitted()
        raws, kept = [], []
        for _, _, table in self._source(data).batches(needed_columns(self.spec, targets=False)):
            encoded = encode_inputs(self.spec, self.states_, table)
            raws.append(self.raw_outputs(encoded.inputs))
            kept.append(encoded.kept)
        return ({name: np.concatenate([raw[name] for raw in raws]) for name in raws[0]},
                np.concatenate(kept))

    def encode(self, data: Any) -> dict[str, np.ndarray]:
        """The arrays the Keras model is fed for ``data`` (what ``predict`` accepts: a pandas
        DataFrame, a pyarrow Table or a file path), by model input name: each input encoded
        with its fitted state, plus ``<name>_mask`` for an optional input. Every row is there,
        as in ``predict`` (a row an input's ``skip`` policy leaves out holds its filled value).
        These are the inputs of a network written by ``plait export``.

        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 8, "y": [0, 0, 1, 1] * 8})
        >>> model = Model({"inputs": [{"name": "x", "type": "number"}],
        ...                "outputs": [{"name": "y", "type": "binary"}],
        ...                "train": {"epochs": 1, "validation_split": 0}}, verbose=0).fit(frame)
        >>> encoded = model.encode(pd.DataFrame({"x": [1.5, 3.0]}))
        >>> {name: (array.dtype.name, array.shape) for name, array in encoded.items()}
        {'x': ('float32', (2, 1))}
        >>> [round(float(v), 3) for v in encoded["x"].ravel()]  # standardised: (x - mean) / std
        [0.0, 1.342]
        """
        self._check_fitted()
        parts = [encode_inputs(self.spec, self.states_, table).inputs
                 for _, _, table in self._source(data).batches(needed_columns(self.spec, targets=False))]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

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
        self._check_fitted()
        return self.score_parts(self.encoded_parts(data))[1]

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
        source = self._source(data)
        self.importance_ = importance(self, list(self.encoded_parts(source)), source.name,
                                      repeats=repeats, seed=seed)
        return self.importance_

    def attribute(self, data: Any, rows: list[int], *, steps: int | None = None) -> dict:
        """Which words, pixels, steps or values drove the predictions for ``rows`` (0-based
        row numbers) of ``data``, by integrated gradients (see ``plait.attribution``); labels
        are not needed. Kept as ``attributions_`` and saved with the bundle.

        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 8, "y": [0, 0, 1, 1] * 8})
        >>> model = Model({"inputs": [{"name": "x", "type": "number"}],
        ...                "outputs": [{"name": "y", "type": "binary"}],
        ...                "train": {"epochs": 1, "validation_split": 0}}, verbose=0).fit(frame)
        >>> found = model.attribute(frame, rows=[3])["rows"][0]["outputs"]["y"][0]
        >>> abs(found["value"] - found["baseline"] - found["inputs"]["x"]["total"]) < 1e-3
        True
        """
        from plait.attribution import STEPS, Attributor, chosen_rows

        self._check_fitted()
        source = self._source(data)
        table = chosen_rows(source, rows, needed_columns(self.spec, targets=False))
        encoded = encode_inputs(self.spec, self.states_, table)
        if not encoded.kept.all():
            skipped = rows[int(np.flatnonzero(~encoded.kept)[0])]
            raise DataError(f"{source.name}: row {skipped} is left out by an input's 'missing: skip' "
                            "policy, so the model makes no prediction to explain")
        steps = steps or STEPS
        self.attributions_ = {"data": source.name, "method": "integrated gradients", "steps": steps,
                              "rows": Attributor(self, steps).explain(encoded.inputs, table, list(rows))}
        return self.attributions_

    # -- the bundle -------------------------------------------------------------------------

    def report_files(self, metrics: dict | None = None, source: str = "validation split") -> dict[str, bytes]:
        """``report.html`` and ``plots/*.png`` for this model; ``metrics`` default to those of
        its validation split."""
        from plait.report import report_files

        if metrics is None:
            metrics = getattr(self, "metrics_", {}).get("validation")
        return report_files(self, metrics, source)

    def save(self, path: str | Path, *, report: bool = False) -> Path:
        """Write the bundle directory (whole or not at all); returns its path. With
        ``report``, also ``report.html`` and the PNG plots it shows (``plots/``)."""
        self._check_fitted()
        files = {
            "spec.yaml": self.spec.to_yaml().encode("utf-8"),
            "state.json": bundle.json_bytes({"format": STATE_FORMAT, "states": dump_states(self.states_),
                                             "data": self.data_report_}),
            "metrics.json": bundle.json_bytes(self.metrics_),
            "history.json": bundle.json_bytes(self.history_),
        }
        if getattr(self, "importance_", None) is not None:
            files["importance.json"] = bundle.json_bytes(self.importance_)
        if getattr(self, "attributions_", None) is not None:
            files["attributions.json"] = bundle.json_bytes(self.attributions_)
        if report:
            files.update(self.report_files())
        return bundle.save(Path(path), files, self.keras_model_.save)

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """A trained Model from a bundle directory written by ``Model.save``; every file is
        checked against the manifest and every fitted state validated by its type."""
        from plait.backend import load_keras_model, precision, use_compilation_cache
        from plait.graph import compile_model

        path = Path(path)
        contents = bundle.read(path)  # before the backend loads, so a wrong path is reported at once
        try:
            spec = load_spec(yaml.safe_load(contents.spec_text))
        except (ConfigError, yaml.YAMLError) as error:
            raise BundleError(f"{path / 'spec.yaml'}: {error}") from None
        model = cls(spec)
        where = str(path / "state.json")
        model.states_ = load_states(spec, contents.state.get("states"), where, BundleError)
        model.data_report_ = contents.state.get("data", {})
        model.metrics_, model.history_ = contents.metrics, contents.history
        model.manifest_ = contents.manifest
        if contents.importance is not None:
            model.importance_ = contents.importance
        if contents.attributions is not None:
            model.attributions_ = contents.attributions
        use_compilation_cache()
        # The layers keep the policies they were saved with; the model's own (which decides
        # whether compile scales the loss) is the config's, not whatever the caller set.
        with precision(spec.train.precision):
            try:
                keras_model = load_keras_model(contents.keras_file)
            except (ValueError, OSError, KeyError) as error:
                raise BundleError(f"{contents.keras_file}: cannot be loaded: {error}") from None
            model.keras_model_ = compile_model(keras_model, spec)
        return model

    def _check_fitted(self) -> None:
        if not hasattr(self, "keras_model_"):
            raise PlaitError("this model is not trained yet: call fit(data) or plait.load(path)")


DONE_WEIGHTS = "done.weights.h5"


class Run:
    """A checkpoint folder: what the run was started with, and how far it got. An ensemble's
    members each checkpoint into a folder of their own, ``member_<k>``, inside it."""

    def __init__(self, folder: Path, spec: Spec, sources: list[Source | None]) -> None:
        self.folder, self.spec = folder, spec
        self.fingerprint = {"spec": spec.to_dict(),
                            "data": [None if s is None else s.identity() for s in sources]}

    def start(self, states: States) -> None:
        from plait.training import clear

        clear(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / "run.json", {"fingerprint": self.fingerprint, "states": dump_states(states)})

    def member(self, index: int) -> Run:
        """Member ``index`` of an ensemble: its own checkpoint folder inside this one."""
        from plait.graph import member_name

        member = copy.copy(self)
        member.folder = self.folder / member_name(index)
        member.folder.mkdir(parents=True, exist_ok=True)
        return member

    def resume(self) -> dict | None:
        """What the interrupted run left: states, history, epochs done (an ensemble's: those of
        each member that began, under ``members``); None if nothing."""
        from plait.graph import member_name

        if not checkpointed(self.folder):
            return None
        progress = self.progress(self.folder)
        members = {index: found for index in range(self.spec.train.ensemble)
                   if (found := self.progress(self.folder / member_name(index)))}
        started = read_json(self.folder / "run.json")
        if started["fingerprint"] != json.loads(json.dumps(self.fingerprint)):
            raise PlaitError(f"{self.folder}: this checkpoint was written for another config or "
                             "other data; remove it, or train without --resume")
        states = load_states(self.spec, started["states"], str(self.folder / "run.json"))
        return {"states": states, **(progress or {}), "members": members}

    @staticmethod
    def progress(folder: Path) -> dict | None:
        if not (folder / "progress.json").is_file():
            return None
        return {**read_json(folder / "progress.json"), "done": (folder / DONE_WEIGHTS).is_file()}

    def finish(self, network: Any) -> None:
        """Mark this member trained: its final weights, which a resumed run loads."""
        from plait.training import save_weights

        save_weights(network, self.folder / DONE_WEIGHTS)

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


def checkpointed(folder: Path) -> bool:
    """Whether a checkpoint folder holds a finished epoch to resume from (an ensemble's: in a
    member's folder)."""
    return (folder / "progress.json").is_file() or any(folder.glob("member_*/progress.json"))


def uncompiled(spec: Spec, states: States, index: int, trained: Any) -> Any:
    """Member ``index`` rebuilt with ``trained``'s weights and no optimizer: a compiled network
    inside another model would save its optimizer, which loading does not expect."""
    from plait.graph import build_member

    network = build_member(spec, states, index)
    network.set_weights(trained.get_weights())
    return network


def placeholder_states(spec: Spec) -> States:
    states = {s.name: s.placeholder_state() for s in spec.inputs}
    states.update({out.name: out.placeholder_state() for out in spec.outputs})
    return states


def fitted_states(spec: Spec, data: Any) -> States:
    """States fitted on ``data`` the way training fits them (all rows, up to ``fit_rows``)."""
    from plait.preprocess import sample

    return fit_states(spec, sample(spec, open_source(data, spec.train), 0.0, spec.train.fit_rows))


def describe_model(spec: Spec, model: Any) -> dict[str, dict]:
    """Per owner (input branch, merge node, head, output): its layers and parameters; an
    ensemble's members' layers are all listed, as ``member_<k>/<layer>``, and the layers that
    average the outputs under their outputs."""
    from plait.graph import layer_groups, members

    kinds = {s.name: f"input {s.type}" for s in spec.inputs}
    kinds.update({n.name: f"merge {n.strategy}" for n in spec.merge_nodes})
    kinds.update({out.name: f"output {out.type}" for out in spec.outputs})
    kinds["head"] = "head"
    networks = members(model)
    grouped = [(f"{network.name}/" if len(networks) > 1 else "", layer_groups(spec, network))
               for network in networks]
    if len(networks) > 1:
        grouped.append(("", {out.name: [model.get_layer(f"{out.name}_average")] for out in spec.outputs}))
    summary: dict[str, dict] = {}
    for prefix, groups in grouped:
        for owner, layers in groups.items():
            rows = [{"layer": prefix + layer.name, "class": type(layer).__name__,
                     "shape": _shape(layer), "params": int(layer.count_params())} for layer in layers]
            entry = summary.setdefault(owner, {"kind": kinds[owner], "layers": [], "params": 0})
            entry["layers"] += rows
            entry["params"] += sum(row["params"] for row in rows)
    return summary


def _shape(layer: Any) -> list:
    output = layer.output
    shape = output.shape if hasattr(output, "shape") else output[0].shape
    return list(shape)


def load(path: str | Path) -> Model:
    """A trained Model from a bundle directory written by ``Model.save`` (``Model.load``)."""
    return Model.load(path)

