"""plait tune: the search space is checked before any trial, a real Optuna study trains real
models, and workers share a study in SQLite and in a PostgreSQL server started here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import plait
from conftest import PENGUINS, free_port
from plait.errors import ConfigError

optuna = pytest.importorskip("optuna")

BASE = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "bill_depth_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
        {"name": "sex", "type": "category"},
    ],
    "head": {"layers": [16]},
    "outputs": [{"name": "species", "type": "category"}],
    "train": {"epochs": 6, "batch_size": 64, "learning_rate": 0.02, "validation_split": 0.25, "seed": 0},
}
SPACE = {
    "train.learning_rate": {"low": 0.003, "high": 0.05, "log": True},
    "head.layers": {"choices": [[8], [32, 16]]},
    "inputs.island.embedding_dim": {"low": 1, "high": 3},
}


def config_with(space: dict | None = None, **tune: Any) -> dict:
    return {**BASE, "tune": {"metric": {"output": "species", "name": "accuracy"}, "space": space or SPACE,
                             **tune}}


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- the space is checked before a trial runs --------------------------------------------------

@pytest.mark.parametrize(("space", "message"), [
    ({"inputs.beak.embedding_dim": {"low": 1, "high": 3}},
     "tune.space.inputs.beak.embedding_dim: no input named 'beak'"),
    ({"inputs.island.embeding_dim": {"low": 1, "high": 3}},
     "inputs.island.embeding_dim: 1 gives an invalid config: inputs[3].embeding_dim: unknown key"),
    ({"head.layers": {"choices": [[8], [0]]}},
     "head.layers: [0] gives an invalid config: head.layers[0]: found 0"),
    ({"train.learning_rate": {"low": 0.1, "high": 0.01}}, "low (0.1) must be below high (0.01)"),
    ({"learning_rate": {"low": 0.001, "high": 0.01}},
     "starting with one of inputs, outputs, merge, head, train"),
])
def test_a_bad_path_or_value_is_named_before_any_trial(space: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        plait.tune(config_with(space), PENGUINS, out=tmp_path / "out", verbose=False)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_metric_must_be_one_the_output_reports(tmp_path: Path) -> None:
    config = config_with()
    config["tune"]["metric"] = {"output": "species", "name": "f1"}
    with pytest.raises(ConfigError, match="tune.metric.name: found 'f1'; output 'species' reports accuracy"):
        plait.tune(config, PENGUINS, out=tmp_path / "out", verbose=False)


def test_data_without_an_input_column_is_refused_before_a_study_is_written(tmp_path: Path) -> None:
    frame = pd.read_csv(PENGUINS).drop(columns=["island"])
    with pytest.raises(plait.PlaitError, match="island"):
        plait.tune(config_with(), frame, out=tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_a_config_without_tune_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no 'tune' section"):
        plait.tune(BASE, PENGUINS, out=tmp_path, verbose=False)


def test_a_path_that_applies_to_some_kinds_only_is_left_out_of_the_others() -> None:
    from plait.tuning.configs import configure
    from plait.tuning.space import Tune

    base = {"inputs": [{"name": "note", "type": "text", "length": 20, "embedding_dim": 8,
                        "encoder": {"kind": "gru", "units": 8, "bidirectional": True}}],
            "outputs": [{"name": "y", "type": "binary"}]}
    tune = Tune.model_validate({"space": {
        "inputs.note.encoder.kind": {"choices": ["cnn", "gru", "bag"]},
        "inputs.note.encoder.filters": {"low": 16, "high": 64, "step": 16}}})
    for kind in ("cnn", "gru", "bag"):
        config, picked = configure(base, tune, lambda path, d, kind=kind: kind if "kind" in path else 32)
        plait.load_spec(config)  # valid, whatever was sampled
        assert ("inputs.note.encoder.filters" in picked) == (kind == "cnn"), (kind, picked)
        assert ("bidirectional" in config["inputs"][0]["encoder"]) == (kind == "gru")
        assert ("length" in config["inputs"][0]) == (kind != "bag")


# -- a real study ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("tune") / "out"
    result = plait.tune(config_with(trials=5, pruner="none"), PENGUINS, out=out, verbose=False)
    return out, result


def test_a_study_writes_the_best_config_its_trials_and_its_model(study: tuple[Path, Any]) -> None:
    out, result = study
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2, 3, 4] and set(trials["state"]) == {"complete"}
    assert {"train.learning_rate", "head.layers", "inputs.island.embedding_dim", "species_accuracy",
            "seconds", "worker"} <= set(trials.columns)
    assert result.value == pytest.approx(trials["species_accuracy"].max())
    assert result.value > 0.8  # three species, about 45 % in the largest: far above chance
    best_text = (out / "best.yaml").read_text()
    assert best_text.startswith("# Best of 5 completed trials (of 5)")
    best = plait.load_spec(yaml.safe_load(best_text))
    assert best.tune is None and best.to_dict() == plait.load_spec(result.config).to_dict()
    winner = trials.loc[trials["species_accuracy"].idxmax()]
    assert best.train.learning_rate == pytest.approx(winner["train.learning_rate"])
    assert yaml.safe_load(winner["head.layers"]) == best.head.layers
    model = plait.load(out / "bundle")
    assert model.metrics_["validation"]["species"]["accuracy"] == pytest.approx(result.value)
    assert model.predict(pd.read_csv(PENGUINS).head(5))["species"].notna().all()


def test_trials_that_change_only_model_keys_share_one_encoding(study: tuple[Path, Any]) -> None:
    _, result = study
    # learning rate and head change nothing of the data; embedding_dim of a category neither
    assert result.encodings == 1
    one = plait.load_spec(BASE)
    reseeded = plait.load_spec({**BASE, "train": {**BASE["train"], "seed": 1}})
    assert one.preprocessing() != reseeded.preprocessing()  # the split changes


def test_the_study_report_renders_in_chromium(study: tuple[Path, Any], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    out, _ = study
    fetched: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: fetched.append(request.url))
            page.goto((out / "report.html").as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({complete: i.complete, width: i.naturalWidth}))")
            headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
            rows = page.eval_on_selector_all("table tr", "rows => rows.length")
        finally:
            browser.close()
    assert headings == ["Optimization history", "Parameter importances", "Parallel coordinates", "Trials",
                        "Best config"]
    assert len(images) == 3 and all(i["complete"] and i["width"] > 300 for i in images), images
    assert rows == 6
    assert [url for url in fetched if not url.startswith(("file:", "data:"))] == []


# -- the command, resuming, and workers sharing a study ----------------------------------------

def tune_command(config: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "plait", "tune", str(config), "--data", str(PENGUINS), "--out", str(out),
            *options]


def test_resume_continues_the_study_and_a_second_run_without_it_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, config_with(trials=2, pruner="none"))
    out = tmp_path / "out"
    first = subprocess.run(tune_command(config, out), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "trial   1 complete" in first.stderr
    again = subprocess.run(tune_command(config, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 2
    assert "already holds a study (study.db); pass --resume" in again.stderr
    resumed = subprocess.run(tune_command(config, out, "--resume", "--trials", "3"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 trials so far, 1 to go" in resumed.stderr
    assert list(pd.read_csv(out / "trials.csv")["number"]) == [0, 1, 2]


def study_trials(storage: str, name: str) -> list[Any]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def run_workers(config: Path, tmp_path: Path, storage: str, trials: int) -> list[subprocess.CompletedProcess]:
    workers = [subprocess.Popen(tune_command(config, tmp_path / f"worker{i}", "--storage", storage, "--study",
                                             "shared", "--trials", str(trials)),
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    return [subprocess.CompletedProcess(w.args, w.wait(timeout=600), None, w.stderr.read()) for w in workers]


def test_two_workers_share_one_sqlite_study_and_run_each_trial_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, config_with(pruner="none"))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    finished = run_workers(config, tmp_path, storage, trials=4)
    assert all(w.returncode == 0 for w in finished), [w.stderr[-2000:] for w in finished]
    trials = study_trials(storage, "shared")
    assert [t.number for t in trials] == list(range(len(trials))) and 4 <= len(trials) <= 5
    assert all(t.state.name == "COMPLETE" for t in trials)
    # every trial was run by one worker, and the workers' trials.csv agree with the study
    for worker in ("worker0", "worker1"):
        listed = pd.read_csv(tmp_path / worker / "trials.csv")
        assert list(listed["number"]) == [t.number for t in trials]
        assert list(listed["worker"]) == [t.user_attrs["worker"] for t in trials]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of Debian's package, in a fresh data folder, on 127.0.0.1."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
    binaries = found[-1].parent
    # initdb refuses to run as root: then the server runs as the package's postgres user
    as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="plait-postgres-"))
    folder.chmod(0o755)
    data = folder / "data"
    if as_user:
        shutil.chown(folder, "postgres")
    port = free_port()
    server = None
    try:
        subprocess.run(as_user + [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                  "--no-sync"], check=True, capture_output=True, timeout=120)
        server = subprocess.Popen(as_user + [str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                             "-p", str(port), "-k", str(folder), "-c", "fsync=off"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        wait_for_database(url, server)
        yield url
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_database(url: str, server: subprocess.Popen) -> None:
    import sqlalchemy

    deadline = time.monotonic() + 60
    while True:
        try:
            with sqlalchemy.create_engine(url).connect():
                return
        except sqlalchemy.exc.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_workers_share_a_postgresql_study_and_survive_one_killed_mid_trial(tmp_path: Path) -> None:
    config = write_config(tmp_path, config_with(pruner="none", heartbeat_seconds=1))
    with postgres_server() as storage:
        doomed = subprocess.Popen(tune_command(config, tmp_path / "doomed", "--storage", storage, "--study",
                                               "shared", "--trials", "5"),
                                  stderr=subprocess.DEVNULL)
        running = wait_for_running_trial(storage, doomed)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=60)
        finished = run_workers(config, tmp_path, storage, trials=5)
        assert all(w.returncode == 0 for w in finished), [w.stderr[-2000:] for w in finished]
        trials = study_trials(storage, "shared")
    states = {t.number: t.state.name for t in trials}
    assert states[running] == "FAIL"  # marked by a live worker once its heartbeat stopped
    assert "RUNNING" not in states.values()
    assert [t.number for t in trials] == list(range(len(trials))) and 5 <= len(trials) <= 6
    assert sum(state == "COMPLETE" for state in states.values()) >= 4
    best = pd.read_csv(tmp_path / "worker0" / "trials.csv")
    assert np.isfinite(best["species_accuracy"].dropna()).all() and len(best) == len(trials)


def wait_for_running_trial(storage: str, worker: subprocess.Popen) -> int:
    """The number of a trial ``worker`` is running, once it has started one."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker ended before its first trial"
        with contextlib.suppress(KeyError):
            for trial in study_trials(storage, "shared"):
                mine = trial.user_attrs.get("worker", "").endswith(f":{worker.pid}")
                if trial.state.name == "RUNNING" and mine:
                    return trial.number
        time.sleep(0.2)
    raise AssertionError("no trial started within 300 s")


def test_a_tracked_study_logs_each_trial_as_a_child_run(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = plait.tune(config_with(trials=2, pruner="none"), PENGUINS, out=tmp_path / "out", track="mlflow",
                        verbose=False)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("plait").experiment_id])
    parent = next(run for run in runs if run.info.run_name == "study plait")
    children = sorted((run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda run: int(run.data.tags["plait.trial"]))
    assert [run.info.run_name for run in children] == ["trial 0", "trial 1"]
    for run, trial in zip(children, result.study.trials, strict=True):
        assert run.data.metrics["validation.species.accuracy"] == pytest.approx(trial.value)
        sampled = trial.params["train.learning_rate"]
        assert float(run.data.params["train.learning_rate"]) == pytest.approx(sampled)
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == BASE["train"]["epochs"]
    assert parent.data.metrics["best.species.accuracy"] == pytest.approx(result.value)
    logged = {item.path for item in client.list_artifacts(parent.info.run_id, "bundle")}
    assert "bundle/model.keras" in logged
