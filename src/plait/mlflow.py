"""MLflow tracking of plait runs, and plait bundles as MLflow models.

Needs the extra: ``pip install "plait[mlflow]"``. Importing this module does not import
MLflow; the first function that needs it does, and says how to install it when it is
missing.

Runs go where MLflow itself would send them: ``MLFLOW_TRACKING_URI`` when it is set (a
server's ``http://host:port``, ``sqlite:///mlflow.db``, ``file:./mlruns``, ...), else
MLflow's own default (from MLflow 3.7: ``sqlite:///mlflow.db`` in the working folder, or
the ``./mlruns`` folder when that already holds runs), so ``mlflow ui`` started in the
same folder shows them. The experiment is the ``experiment`` given, else
``MLFLOW_EXPERIMENT_NAME``, else MLflow's default experiment (``plait train`` gives the
config file's name when neither ``--experiment`` nor the variable is set).

One training run, as ``plait train --track mlflow`` logs it::

    from plait.mlflow import Tracker

    model = plait.Model("reviews.yaml")
    with Tracker(model.spec, experiment="reviews", run_name="bundle") as tracker:
        model.fit("train.csv", callbacks=[tracker.callback()])
        bundle = model.save("bundle", report=True)
        tracker.log_result(model, bundle, example="train.csv")

What it logs:

- parameters: the config flattened to dotted keys, with inputs, outputs and merge nodes
  keyed by name (``inputs.review.encoder.kind``, ``train.epochs``); values as their YAML/JSON
  text, cut at MLflow's length limit;
- metrics: every epoch's Keras metrics (``loss``, ``val_loss``, ``species_accuracy``...),
  with step = the epoch's index counted from 0, as MLflow's Keras autologging does; after
  training, plait's validation metrics as ``validation.<output>.<metric>`` (baselines and
  lifts as ``validation.<output>.baseline.<metric>``), numbers only;
- artifacts: ``data_report.json`` (the data summary), ``bundle/`` (the bundle as written,
  with ``report.html`` when it has one) and ``model``, the bundle as an MLflow pyfunc
  model: ``mlflow.pyfunc.load_model("runs:/<run id>/model").predict(frame)`` takes a
  DataFrame of raw columns and returns what ``plait predict`` writes, and
  ``mlflow models serve -m runs:/<run id>/model`` serves it.

A trial of a search, as a child of the search's run (``nested=True`` nests under the
active run of this thread; ``parent_run_id`` under any active run, e.g. from a worker
thread)::

    with Tracker(experiment="reviews", run_name="search") as search:
        for number, spec in enumerate(candidates):
            model = plait.Model(spec)
            with Tracker(model.spec, run_name=f"trial {number}", nested=True) as trial:
                model.fit(data, callbacks=[trial.callback()])
                trial.log_result(model)        # metrics and data summary; no bundle, no model
        search.log_metrics({"best.f1": best})

``log_model(bundle_dir)`` logs an existing bundle as an MLflow model, in the active run or
in a run of its own.

The MLflow model holds the bundle (``artifacts/bundle``), a copy of plait's own source
(``code/plait``, so it loads where this plait version is not installed), and a
``requirements.txt`` of plait's pinned dependencies and MLflow: ``mlflow models serve``
can build its environment from the package index, or run offline in the current one with
``--env-manager local``. Its signature, when logged from data rows, lists the input
columns, each optional and integers widened to doubles, so missing values pass MLflow's
schema check and reach plait's own missing-value policy.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from plait.errors import PlaitError

ARTIFACT_PATH = "model"
# The MLflow model's code ("models from code"): it is run when the model loads, after the
# model's copy of plait is put on the path, so nothing of plait is pickled.
MODEL_CODE = """import mlflow.models

from plait.mlflow import PlaitModel

mlflow.models.set_model(PlaitModel())
"""
EXAMPLE_ROWS = 5
# MLflow's own limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH), used if it cannot be read.
PARAM_VALUE_LIMIT = 6000
# Names MLflow accepts for parameters and metrics, without "." and "/" so that a key
# part never reads as a path or as two levels.
PLAIN_KEY = re.compile(r"[\w\- ]+")


def _mlflow() -> Any:
    """The mlflow package, or a PlaitError saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise PlaitError('MLflow tracking needs the mlflow extra: pip install "plait[mlflow]"') from None
    return mlflow


# -- what is logged ---------------------------------------------------------------------------


def flatten_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The config as MLflow parameters: dotted keys; lists of named entries (inputs,
    outputs, merge nodes) keyed by their names; other values as their JSON text (strings
    as they are), cut at MLflow's length limit.

    >>> flatten_config({"inputs": [{"name": "age", "type": "number", "layers": [8, 4]}],
    ...                 "train": {"epochs": 3, "cache_dir": None}})
    {'inputs.age.type': 'number', 'inputs.age.layers': '[8, 4]', 'train.epochs': '3',
     'train.cache_dir': 'null'}
    """
    params: dict[str, str] = {}
    _flatten(dict(config), "", params)
    limit = _param_value_limit()
    return {key: value[:limit] for key, value in params.items()}


def _flatten(value: Any, prefix: str, into: dict[str, str]) -> None:
    def join(key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    if isinstance(value, dict) and value and all(_plain(key) for key in value):
        for key, item in value.items():
            _flatten(item, join(key), into)
    elif _named_entries(value):
        for item in value:
            _flatten({k: v for k, v in item.items() if k != "name"}, join(item["name"]), into)
    else:
        # An empty or oddly keyed mapping (class weights by label) stays one value.
        into[prefix] = value if isinstance(value, str) else json.dumps(value)


def _named_entries(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    names = [item.get("name") if isinstance(item, dict) else None for item in value]
    return all(_plain(name) for name in names) and len(set(names)) == len(names)


def _plain(key: Any) -> bool:
    return isinstance(key, str) and PLAIN_KEY.fullmatch(key) is not None


def _param_value_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return PARAM_VALUE_LIMIT
    return int(MAX_PARAM_VAL_LENGTH)


def flatten_metrics(scores: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of nested ``scores`` as metrics named ``<prefix>.<key>.<key>``; lists
    (confusion matrices) and keys MLflow would refuse (class labels with odd characters)
    are left out.

    >>> flatten_metrics({"rows": 40, "y": {"f1": 0.5, "labels": ["a"], "baseline": {"f1": 0.25},
    ...                                     "per_class": {"a/b": {"f1": 1.0}}}}, "validation")
    {'validation.rows': 40.0, 'validation.y.f1': 0.5, 'validation.y.baseline.f1': 0.25}
    """
    metrics: dict[str, float] = {}
    for key, value in scores.items():
        if not _plain(key):
            continue
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            metrics.update(flatten_metrics(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = float(value)
    return metrics


# -- runs -------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run, active while the ``with`` block runs: it ends FINISHED, or FAILED
    when the block raises (KILLED on Ctrl-C).

    ``spec`` (a plait Spec) is logged as parameters when the run starts, with ``params``
    (extra ones, e.g. a command-line override of ``train.epochs``) over it. ``experiment``
    is set first unless the run is nested; ``nested=True`` makes the run a child of this
    thread's active run, ``parent_run_id`` a child of that run. ``run_id`` and
    ``tracking_uri`` are known inside the block.
    """

    def __init__(self, spec: Any = None, *, experiment: str | None = None, run_name: str | None = None,
                 nested: bool = False, parent_run_id: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> None:
        self.mlflow = _mlflow()
        self.spec, self.experiment, self.run_name = spec, experiment, run_name
        self.nested, self.parent_run_id = nested or parent_run_id is not None, parent_run_id
        self.params, self.tags = dict(params or {}), dict(tags or {})
        self.run_id: str | None = None
        self.tracking_uri: str | None = None

    def __enter__(self) -> Tracker:
        from mlflow.exceptions import MlflowException

        import plait

        mlflow = self.mlflow
        tags = {"plait.version": plait.__version__, **self.tags}
        params = flatten_config(self.spec.to_dict()) if self.spec is not None else {}
        params.update({key: str(value) for key, value in self.params.items()})
        try:
            if self.experiment and not self.nested:
                mlflow.set_experiment(self.experiment)
            run = mlflow.start_run(run_name=self.run_name, nested=self.nested,
                                   parent_run_id=self.parent_run_id, tags=tags)
            self.run_id, self.tracking_uri = run.info.run_id, mlflow.get_tracking_uri()
            if params:
                mlflow.log_params(params, run_id=self.run_id)
        except MlflowException as error:
            if self.run_id is not None:  # __exit__ is not called when __enter__ fails
                mlflow.end_run(status="FAILED")
            raise PlaitError(f"cannot start an MLflow run at {mlflow.get_tracking_uri()}: "
                             f"{error.message}") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        status = "FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
        active = self.mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            self.mlflow.end_run(status=status)
        elif self.run_id is not None:  # the block ended it as the active run, or left a child open
            self.mlflow.MlflowClient().set_terminated(self.run_id, status=status)

    def callback(self) -> Any:
        """A Keras callback logging every epoch's metrics (training and ``val_``) to this run,
        step = the epoch's index; pass it to ``Model.fit(callbacks=[...])``."""
        return _epoch_logger(self.mlflow, self._started())

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step, run_id=self._started())

    def log_result(self, model: Any, bundle_dir: str | Path | None = None, *,
                   example: Any = None) -> None:
        """After ``fit``: the validation metrics and the data summary; with ``bundle_dir``
        (what ``model.save`` wrote), the bundle as artifacts under ``bundle/`` and as the
        MLflow model ``model``, whose signature comes from the first rows of ``example``
        (training data: a file, folder, DataFrame or Arrow table) when given."""
        run_id = self._started()
        validation = getattr(model, "metrics_", {}).get("validation")
        if validation:
            self.mlflow.log_metrics(flatten_metrics(validation, "validation"), run_id=run_id)
        client = self.mlflow.MlflowClient()
        client.log_dict(run_id, getattr(model, "data_report_", {}), "data_report.json")
        if bundle_dir is not None:
            client.log_artifacts(run_id, str(bundle_dir), "bundle")
            _log_pyfunc(Path(bundle_dir), model, example, ARTIFACT_PATH)

    def _started(self) -> str:
        if self.run_id is None:
            raise PlaitError("the MLflow run has not started: use the Tracker in a with block")
        return self.run_id


def _epoch_logger(mlflow: Any, run_id: str) -> Any:
    import keras

    class EpochMetrics(keras.callbacks.Callback):
        """Logs the epoch's Keras metrics to one MLflow run."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {key: float(value) for key, value in (logs or {}).items()
                       if _plain(key) and _is_number(value)}
            if metrics:
                mlflow.log_metrics(metrics, step=epoch, run_id=run_id)

    return EpochMetrics()


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


# -- the MLflow model -------------------------------------------------------------------------


def log_model(bundle_dir: str | Path, artifact_path: str = ARTIFACT_PATH, *, example: Any = None) -> Any:
    """Log a bundle as an MLflow pyfunc model in the active run, or in a new run of the
    current experiment (ended before returning) when none is active. With ``example``
    (data with the input columns: a file, DataFrame or Arrow table), its first rows give
    the model's signature. Returns MLflow's ``ModelInfo`` (``model_uri`` says where it is)."""
    from plait.model import load

    mlflow = _mlflow()
    bundle_dir = Path(bundle_dir)
    model = load(bundle_dir)  # checks the bundle before any run starts
    if mlflow.active_run() is not None:
        return _log_pyfunc(bundle_dir, model, example, artifact_path)
    with mlflow.start_run(run_name=bundle_dir.name):
        return _log_pyfunc(bundle_dir, model, example, artifact_path)


def _log_pyfunc(bundle_dir: Path, model: Any, example: Any, artifact_path: str) -> Any:
    import mlflow.pyfunc

    signature = _signature(model, example) if example is not None else None
    with tempfile.TemporaryDirectory(prefix="plait-mlflow-") as scratch, warnings.catch_warnings():
        # The signature says what the model takes; an input example would only repeat it.
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        model_code = Path(scratch) / "plait_model.py"
        model_code.write_text(MODEL_CODE, encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=artifact_path, python_model=str(model_code), artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(_plait_source(Path(scratch)))], pip_requirements=_requirements(model.spec),
            signature=signature)


def _plait_source(scratch: Path) -> Path:
    """A copy of the plait package without its bytecode caches."""
    import plait

    copy = scratch / "plait"
    shutil.copytree(Path(plait.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _requirements(spec: Any) -> list[str] | None:
    """plait's own pinned dependencies (and those of the pretrained extra when an input uses
    a pretrained encoder), and this MLflow; plait itself travels as code. None (MLflow then
    infers them) when plait runs from a source tree without being installed."""
    from importlib import metadata

    import mlflow

    pretrained = any(getattr(getattr(s, "encoder", None), "kind", None) == "pretrained" for s in spec.inputs)
    extras = {"pretrained"} if pretrained else set()
    try:
        declared = metadata.requires("plait") or []
    except metadata.PackageNotFoundError:
        return None
    wanted = []
    for line in declared:
        requirement, _, marker = line.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if not marker.strip() or (extra and extra.group(1) in extras):
            wanted.append(requirement.strip())
    return [*wanted, f"mlflow=={mlflow.__version__}"]


def _signature(model: Any, example: Any) -> Any:
    """The model signature from the first rows of ``example`` and their predictions, with
    every input optional and integers widened to doubles: a missing value makes a pandas
    integer column float, and plait, not MLflow, decides what a missing value means."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    rows = _first_rows(model, example)
    inputs, predictions = rows.arrow.to_pandas(), model.predict(rows)
    try:
        with warnings.catch_warnings():
            # Its advice on integer columns is followed below for the inputs; outputs are not checked.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            inferred = infer_signature(inputs, predictions)
    except (MlflowException, TypeError, ValueError) as error:
        # The model works without a signature; MLflow then checks no input.
        warnings.warn(f"the MLflow model is logged without a signature: {error}", stacklevel=3)
        return None
    widened = [ColSpec(DataType.double if spec.type in (DataType.long, DataType.integer) else spec.type,
                       spec.name, required=False) if isinstance(spec, ColSpec)
               else spec for spec in inferred.inputs.inputs]
    return ModelSignature(inputs=Schema(widened), outputs=inferred.outputs)


def _first_rows(model: Any, data: Any) -> Any:
    """The first ``EXAMPLE_ROWS`` rows of ``data`` holding the model's input columns, as a
    plait Table (which still knows the data's folder, for image paths). A file is read in
    batches, so only its first batch is read."""
    import numpy as np

    from plait.data import file_ending
    from plait.preprocess import needed_columns
    from plait.sources import STREAMABLE, open_source

    train = model.spec.train
    if isinstance(data, (str, Path)) and (Path(data).is_dir() or file_ending(Path(data)) in STREAMABLE):
        train = train.model_copy(update={"stream": "always", "part_rows": EXAMPLE_ROWS})
    _, _, table = next(iter(open_source(data, train).batches(needed_columns(model.spec, targets=False))))
    return table.take(np.arange(min(EXAMPLE_ROWS, table.num_rows)))


@functools.cache
def _model_class() -> type:
    """``PlaitModel``, made on first use because its base class is MLflow's (this module's
    ``__getattr__`` returns it)."""
    import mlflow.pyfunc

    class PlaitModel(mlflow.pyfunc.PythonModel):
        """A plait bundle as an MLflow pyfunc model: raw columns in, plait's predictions out."""

        def load_context(self, context: Any) -> None:
            import plait

            self.model = plait.load(context.artifacts["bundle"])

        # MLflow reads the DataFrame hint (resolved in this module, hence pandas imported at
        # its top) as: a DataFrame, checked against the logged signature.
        def predict(self, context: Any, model_input: pd.DataFrame,
                    params: dict | None = None) -> pd.DataFrame:
            return self.model.predict(model_input)

    PlaitModel.__qualname__ = "PlaitModel"
    return PlaitModel


def __getattr__(name: str) -> Any:
    if name == "PlaitModel":
        return _model_class()
    raise AttributeError(f"module 'plait.mlflow' has no attribute {name!r}")
