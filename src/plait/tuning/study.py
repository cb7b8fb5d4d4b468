"""Run a search: an Optuna study over the config's ``tune.space``.

Each trial samples a config (``plait.tuning.configs``), trains it on data fitted and encoded
once per distinct preprocessing (trials that change only model or training keys share the
encoded data), reports its validation metric after every epoch to the pruner, and records
its config. The study lives in a database: by default a SQLite file in the output folder
(``--resume`` continues it); any URL Optuna accepts lets several processes, on one machine
or many, work on one study. A worker killed mid-trial stops beating its heartbeat and its
trial is marked failed by the others. At the end: ``best.yaml``, ``trials.csv``, the best
config's bundle (``bundle/``, trained as ``plait train`` would) and ``report.html``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import yaml

from plait.errors import ConfigError, PlaitError
from plait.metrics import LOWER_IS_BETTER
from plait.model import Model
from plait.preprocess import Prepared, prepare
from plait.sources import open_source
from plait.spec import Spec, load_spec, read_config_file
from plait.tuning.configs import check_space, configure
from plait.tuning.space import Tune

STUDY_FILE = "study.db"
CACHED_PREPARATIONS = 4
"""Distinct preprocessing configs whose encoded data stay in memory at once."""


@dataclass
class Objective:
    """What a study optimises: one validation metric of one output, and its direction."""

    output: str
    name: str
    direction: str

    @classmethod
    def of(cls, spec: Spec, tune: Tune) -> Objective:
        outputs = {out.name: out for out in spec.outputs}
        output = tune.metric.output or spec.outputs[0].name
        if output not in outputs:
            raise ConfigError(f"tune.metric.output: found {output!r}; expected one of the outputs: "
                              + ", ".join(map(repr, outputs)))
        known = outputs[output].metric_names
        name = tune.metric.name or outputs[output].importance_metric
        if name not in known:
            raise ConfigError(f"tune.metric.name: found {name!r}; output {output!r} reports "
                              + ", ".join(known))
        direction = tune.metric.direction
        if direction == "auto":
            direction = "minimize" if name in LOWER_IS_BETTER else "maximize"
        return cls(output, name, direction)

    def read(self, metrics: dict) -> float:
        return float(metrics[self.output][self.name])

    def __str__(self) -> str:
        return f"{self.output} {self.name}"


@dataclass
class TuneResult:
    """The study's best config (without its ``tune`` section), its validation ``value``, the
    model trained on it, the Optuna study, and how many times this process fitted and
    encoded the data (once per distinct preprocessing config, while it stays in memory)."""

    config: dict
    value: float
    model: Model
    study: Any
    encodings: int


class Preparations:
    """Encoded data by preprocessing config, the few most recently used kept in memory."""

    def __init__(self, data: Any, valid: Any, cache_dir: str | Path | None) -> None:
        self.data, self.valid, self.cache_dir = data, valid, cache_dir
        self.kept: OrderedDict[str, Prepared] = OrderedDict()
        self.made = 0

    def get(self, spec: Spec) -> Prepared:
        key = json.dumps(spec.preprocessing(), sort_keys=True)
        if key not in self.kept:
            source = open_source(self.data, spec.train)
            valid = open_source(self.valid, spec.train) if self.valid is not None else None
            self.kept[key] = prepare(spec, source, valid, self.cache_dir)
            self.made += 1
            while len(self.kept) > CACHED_PREPARATIONS:
                self.kept.popitem(last=False)
        self.kept.move_to_end(key)
        return self.kept[key]


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise PlaitError('plait tune needs Optuna: pip install "plait[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The heartbeat is what lets workers recover a killed worker's trial; Optuna still calls it experimental.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def tune(config: str | Path | dict, data: Any, *, out: str | Path, valid: Any = None,
         trials: int | None = None, timeout_minutes: float | None = None, storage: str | None = None,
         study: str | None = None, resume: bool = False, cache_dir: str | Path | None = None,
         track: str | None = None, verbose: bool = True) -> TuneResult:
    """Search ``config``'s ``tune.space``; write ``best.yaml``, ``trials.csv``, ``bundle/``
    and ``report.html`` into ``out``; return the best config and its trained model.

    ``trials`` and ``timeout_minutes`` override the config's; ``storage`` is a database URL
    shared by workers (default: ``out/study.db``), ``study`` the study's name (default:
    the config file's name). The validation metric is read on ``valid`` or, without it, on
    the config's ``validation_split``. ``track="mlflow"`` logs the study as an MLflow run
    (the best model and its bundle) and each trial as a child run of it (its parameters,
    epochs and validation metrics).
    """
    optuna = optuna_module()
    base, spec, name = _base_config(config)
    settings = spec.tune.model_copy(update={k: v for k, v in {
        "trials": trials, "timeout_minutes": timeout_minutes}.items() if v is not None})
    objective = Objective.of(spec, settings)
    check_space(base, settings)
    if valid is None and spec.train.validation_split == 0:
        raise ConfigError("tune needs validation rows: pass --valid FILE or set train.validation_split "
                          "above 0")
    out = Path(out)
    if storage is None and (out / STUDY_FILE).exists() and not resume:
        raise PlaitError(f"{out}: already holds a study ({STUDY_FILE}); pass --resume to continue it, "
                         "or choose another --out")
    name = study or name
    tracking = tracker(track, None, experiment=name, run_name=f"study {name}")
    preparations = Preparations(data, valid, cache_dir)
    # A mistake in the data shows now, before any study is written, not once per trial.
    preparations.get(load_spec(base))
    study = _study(optuna, out, storage, name, settings, objective, spec.train.seed)
    with tracking or contextlib.nullcontext():
        runner = Trials(optuna, base, settings, objective, preparations, verbose, track)
        runner.run(study)
        result = finish(study, objective, preparations, out, verbose)
        if tracking:
            tracking.log_metrics({f"best.{objective.output}.{objective.name}": result.value})
            tracking.log_result(result.model, out / "bundle")
    return result


def tracker(track: str | None, spec: Spec | None, **settings: Any) -> Any:
    """An MLflow run (``plait.mlflow.Tracker``) when ``track`` asks for one, else None."""
    if track is None:
        return None
    if track != "mlflow":
        raise PlaitError(f"--track: found {track!r}; expected mlflow")
    from plait.mlflow import Tracker

    return Tracker(spec, **settings)


def _base_config(config: str | Path | dict) -> tuple[dict, Spec, str]:
    """The config without its ``tune`` section, the whole spec, and a name for the study."""
    raw = read_config_file(Path(config)) if isinstance(config, (str, Path)) else config
    spec = load_spec(raw if not isinstance(config, (str, Path)) else config)
    if spec.tune is None:
        where = config if isinstance(config, (str, Path)) else "config"
        raise ConfigError(f"{where}: no 'tune' section; add one with 'space' (see README, plait tune)")
    base = {key: value for key, value in raw.items() if key != "tune"}
    return base, spec, Path(config).stem if isinstance(config, (str, Path)) else "plait"


def _study(optuna: Any, out: Path, storage: str | None, name: str, settings: Tune, objective: Objective,
           seed: int) -> Any:
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    rdb = _storage(optuna, url, engine, settings.heartbeat_seconds)
    done = _finished(optuna, rdb, name)
    # Shared studies: each worker samples its own way, so two never start with the same trial.
    worker_seed = seed + done + (os.getpid() if storage else 0)
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1),
              "none": optuna.pruners.NopPruner()}[settings.pruner]
    sampler = optuna.samplers.TPESampler(seed=worker_seed % 2**32, constant_liar=True)
    study = optuna.create_study(storage=rdb, study_name=name, direction=objective.direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != objective.direction:
        raise PlaitError(f"study {name!r} in {url} {study.direction.name.lower()}s; this config's metric "
                         f"({objective}) asks to {objective.direction}: use another --study")
    return study


def _storage(optuna: Any, url: str, engine: dict, heartbeat: int) -> Any:
    """The study database; workers starting together race to create its tables, so an
    attempt that loses the race is retried."""
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=3 * heartbeat)
        except Exception as error:  # noqa: BLE001 - any failure but a lost race is the URL's, said once
            # lost the race: another worker inserted the schema version, or created a table
            # (SQLite: "table studies already exists") between this one's check and its CREATE
            lost = isinstance(error, sqlalchemy.exc.IntegrityError) or (
                isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" in str(error))
            if not lost:
                raise PlaitError(f"--storage {url}: cannot open the study database: {error}") from None
            time.sleep(0.5 * (attempt + 1))
    raise PlaitError(f"--storage {url}: the study database's tables could not be created")


def _finished(optuna: Any, storage: Any, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))


class Trials:
    """The objective Optuna calls, the live display, and the stop once ``trials`` exist."""

    def __init__(self, optuna: Any, base: dict, settings: Tune, objective: Objective,
                 preparations: Preparations, verbose: bool, track: str | None = None) -> None:
        self.optuna, self.base, self.settings = optuna, base, settings
        self.objective, self.preparations, self.verbose = objective, preparations, verbose
        self.track = track
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, study: Any) -> None:
        left = self.settings.trials - len(study.get_trials(deepcopy=False))
        if self.verbose:
            print(f"study {study.study_name!r}: {len(study.trials)} trials so far, {max(left, 0)} to go; "
                  f"{self.objective.direction} validation {self.objective}", file=sys.stderr)
        if left <= 0:
            return
        stop = self.optuna.study.MaxTrialsCallback(self.settings.trials, states=None)
        timeout = self.settings.timeout_minutes * 60 if self.settings.timeout_minutes else None
        study.optimize(self.trial, n_trials=left, timeout=timeout, callbacks=[stop, self.show],
                       catch=(PlaitError,), gc_after_trial=True)

    def trial(self, trial: Any) -> float:
        trial.set_user_attr("worker", self.worker)
        config, _ = configure(self.base, self.settings, lambda path, space: space.suggest(trial, path))
        trial.set_user_attr("config", config)
        spec = load_spec(config)
        model = Model(spec, verbose=0)
        callbacks = [EpochReport(trial, self.objective, self.optuna)]
        child = tracker(self.track, spec, nested=True, run_name=f"trial {trial.number}",
                        tags={"plait.trial": str(trial.number)})
        with child or contextlib.nullcontext():
            if child:
                callbacks.append(child.callback())
            model.fit_prepared(self.preparations.get(spec), callbacks=callbacks)
            if child:
                child.log_result(model)
        return self.objective.read(model.metrics_["validation"])

    def show(self, study: Any, trial: Any) -> None:
        if not self.verbose:
            return
        state = trial.state.name.lower()
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no trial complete yet"
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        print(f"trial {trial.number:>3} {state:<8} {self.objective} {value:>7}  {best}  {seconds:5.0f} s  "
              f"{params}", file=sys.stderr, flush=True)


class EpochReport(keras.callbacks.Callback):
    """The validation metric after each epoch, reported to the trial, which the pruner may
    stop. An ensemble's members train one after another, each scored alone; their epochs
    are reported as consecutive steps."""

    def __init__(self, trial: Any, objective: Objective, optuna: Any) -> None:
        super().__init__()
        self.trial, self.objective, self.optuna = trial, objective, optuna
        self.first_step = self.next_step = 0

    def bind(self, model: Model, valid_parts: list) -> None:
        self.plait_model, self.valid_parts = model, valid_parts

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.first_step = self.next_step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        _, scores = self.plait_model.score_parts(self.valid_parts, choose=True)
        value = self.objective.read(scores)
        step = self.first_step + epoch
        self.next_step = step + 1
        if math.isfinite(value):
            self.trial.report(value, step)
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"validation {self.objective} {value:.4f} after epoch {epoch + 1}")


def finish(study: Any, objective: Objective, preparations: Preparations, out: Path,
           verbose: bool) -> TuneResult:
    """Write trials.csv, best.yaml, the best config's bundle and report.html."""
    from plait.tuning.report import report_html

    trials = study.get_trials(deepcopy=False)
    write_text(out / "trials.csv", trials_table(trials, objective).to_csv(index=False))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        raise PlaitError(f"no trial of study {study.study_name!r} completed; see {out / 'trials.csv'}")
    best = study.best_trial
    config = best.user_attrs["config"]
    header = (f"# Best of {len(complete)} completed trials (of {len(trials)}) in study {study.study_name!r}: "
              f"validation {objective} {best.value:.4f}, trial {best.number}.\n")
    write_text(out / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    spec = load_spec(config)
    model = Model(spec, verbose=0).fit_prepared(preparations.get(spec))
    model.save(out / "bundle", report=True)
    write_text(out / "report.html", report_html(study, objective, config))
    if verbose:
        print(f"best: trial {best.number}, validation {objective} {best.value:.4f}; data encoded "
              f"{preparations.made} time(s); written to {out}: best.yaml, trials.csv, bundle/, report.html",
              file=sys.stderr)
    return TuneResult(config, float(best.value), model, study, preparations.made)


def trials_table(trials: list, objective: Objective) -> Any:
    """One row per trial: number, state, parameters, the metric, seconds, worker."""
    import pandas as pd

    rows = []
    for trial in trials:
        seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                   if trial.datetime_complete and trial.datetime_start else None)
        rows.append({"number": trial.number, "state": trial.state.name.lower(),
                     **{name: _cell(value) for name, value in trial.params.items()},
                     f"{objective.output}_{objective.name}": trial.value,
                     "seconds": round(seconds, 1) if seconds is not None else None,
                     "worker": trial.user_attrs.get("worker")})
    return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_text(path: Path, text: str) -> None:
    """Whole or not at all: written beside, then renamed."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{time.monotonic_ns()}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
