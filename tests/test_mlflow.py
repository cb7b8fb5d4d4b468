"""MLflow tracking and the MLflow model, against real stores: ``plait train --track mlflow``
in real subprocesses, logging to a local SQLite store and to a real ``mlflow server`` on
127.0.0.1 (started with the module, so it boots while the first run trains); then the
client reads back what was logged, and the logged model, loaded with ``mlflow.pyfunc``,
must predict what the bundle predicts. The untracked run trains in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import plait
from conftest import PENGUINS, free_port, train_block

mlflow = pytest.importorskip("mlflow")

from plait.cli import app  # noqa: E402
from plait.mlflow import Tracker, flatten_config, log_model  # noqa: E402

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # quiet test output

EPOCHS = 3
CONFIG = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
        {"name": "sex", "type": "category", "encoding": "onehot"},
    ],
    "head": {"layers": [8]},
    "outputs": [{"name": "species", "type": "category"}, {"name": "body_mass_g", "type": "number"}],
    "train": train_block(epochs=EPOCHS, learning_rate=0.05, validation_split=0.2),
}
RUN_LINE = "MLflow run "


def train(config: Path, out: Path, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m plait train`` on the penguins, in a subprocess with ``env`` added."""
    environment = {**os.environ, **env, "COLUMNS": "200"}
    environment.pop("MLFLOW_EXPERIMENT_NAME", None)  # the experiment is the config's name
    done = subprocess.run([sys.executable, "-m", "plait", "train", str(config), "--data", str(PENGUINS),
                           "--out", str(out), "--quiet", *options],
                          capture_output=True, text=True, timeout=300, env=environment, cwd=out.parent,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def logged_run_id(done: subprocess.CompletedProcess) -> str:
    line = next(line for line in done.stdout.splitlines() if line.startswith(RUN_LINE))
    return line.split()[2]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "penguins.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local(config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tracked run into a local SQLite store (no server)."""
    folder = tmp_path_factory.mktemp("local")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = train(config, folder / "bundle", "--track", "mlflow", env={"MLFLOW_TRACKING_URI": uri})
    return {"uri": uri, "run_id": logged_run_id(done), "bundle": folder / "bundle"}


def test_a_tracked_run_logs_config_epochs_metrics_and_artifacts(local: dict) -> None:
    client = mlflow.MlflowClient(tracking_uri=local["uri"])
    run = client.get_run(local["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "penguins"  # the config's name
    assert run.info.run_name == "bundle"
    params = run.data.params
    assert params["inputs.island.type"] == "category"
    assert params["inputs.island.embedding_dim"] == "2"
    assert params["outputs.species.type"] == "category"
    assert params["head.layers"] == "[8]"
    assert params["train.epochs"] == str(EPOCHS)
    assert run.data.tags["plait.version"] == plait.__version__

    for name in ("loss", "val_loss", "species_accuracy", "val_species_accuracy"):
        history = client.get_metric_history(local["run_id"], name)
        assert sorted(m.step for m in history) == list(range(EPOCHS)), name
    saved = json.loads((local["bundle"] / "history.json").read_text())
    losses = sorted(client.get_metric_history(local["run_id"], "loss"), key=lambda m: m.step)
    np.testing.assert_allclose([m.value for m in losses], saved["loss"], rtol=1e-6)

    validation = json.loads((local["bundle"] / "metrics.json").read_text())["validation"]
    metrics = run.data.metrics
    assert metrics["validation.species.accuracy"] == pytest.approx(validation["species"]["accuracy"])
    assert metrics["validation.body_mass_g.mae"] == pytest.approx(validation["body_mass_g"]["mae"])
    assert "validation.species.baseline.accuracy" in metrics

    top = {a.path for a in client.list_artifacts(local["run_id"])}
    assert {"bundle", "data_report.json"} <= top
    bundle = {a.path for a in client.list_artifacts(local["run_id"], "bundle")}
    for name in ("MANIFEST.json", "model.keras", "spec.yaml", "state.json", "metrics.json", "report.html"):
        assert f"bundle/{name}" in bundle
    report = json.loads(Path(client.download_artifacts(local["run_id"], "data_report.json")).read_text())
    assert report == json.loads((local["bundle"] / "state.json").read_text())["data"]


def test_the_logged_model_predicts_what_the_bundle_predicts(local: dict,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local["uri"])
    frame = pd.read_csv(PENGUINS)  # all columns, targets too; missing values in several
    logged = mlflow.pyfunc.load_model(f"runs:/{local['run_id']}/model")
    inputs = [spec.name for spec in logged.metadata.get_input_schema().inputs]
    assert sorted(inputs) == ["bill_length_mm", "flipper_length_mm", "island", "sex"]
    assert_same_predictions(logged.predict(frame), plait.load(local["bundle"]).predict(frame))


def test_mlflow_models_serve_answers_with_the_bundles_predictions(local: dict, tmp_path: Path) -> None:
    import httpx

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": local["uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                    f"runs:/{local['run_id']}/model", "--env-manager", "local",
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, log_path, path="/ping")
        rows = pd.read_csv(PENGUINS).head(6)  # row 3 has missing measures
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert answer.status_code == 200, answer.text
    served = pd.DataFrame(answer.json()["predictions"])
    assert_same_predictions(served, plait.load(local["bundle"]).predict(rows))


def assert_same_predictions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for column in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[column]):
            np.testing.assert_allclose(got[column].to_numpy(float), expected[column].to_numpy(float),
                                       atol=1e-6, err_msg=column)
        else:
            assert got[column].tolist() == expected[column].tolist(), column


@pytest.fixture(scope="module", autouse=True)
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A real ``mlflow server`` on a free port of 127.0.0.1 (SQLite backend, artifacts served
    from a local folder), started with the module so that it boots while the first run trains."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    log_path = folder / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'store.db'}",
               "--default-artifact-root", "mlflow-artifacts:/",
               "--artifacts-destination", str(folder / "artifacts")]
    # mlflow server starts uvicorn from the PATH: the one beside this Python. Its job runner
    # (several queue consumers, for features these tests do not use) is left off.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("w") as log:
        # A session of its own: the server's worker processes are stopped with it, as a group.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env,
                                   start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", process, log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(server_process: tuple[str, subprocess.Popen, Path]) -> str:
    """The server's URL, once it answers."""
    wait_for_health(*server_process)
    return server_process[0]


def wait_for_health(url: str, process: subprocess.Popen, log_path: Path, path: str = "/health") -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"mlflow did not answer {path}:\n{log_path.read_text()}")


def test_a_run_is_logged_to_a_tracking_server(server: str, tmp_path: Path) -> None:
    config = tmp_path / "tracked.yaml"  # asks for tracking itself: no --track
    config.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "track": "mlflow"}}))
    done = train(config, tmp_path / "served", "--experiment", "over http", "--no-report",
                 env={"MLFLOW_TRACKING_URI": server})
    run_id = logged_run_id(done)
    client = mlflow.MlflowClient(tracking_uri=server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "over http"
    assert len(client.get_metric_history(run_id, "val_loss")) == EPOCHS
    assert "validation.species.accuracy" in run.data.metrics
    assert {"bundle/model.keras", "bundle/state.json"} <= {
        a.path for a in client.list_artifacts(run_id, "bundle")}
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.fixture(scope="module")
def untracked(config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run without --track (in this process), with a tracking URI set all the same."""
    folder = tmp_path_factory.mktemp("untracked")
    store = folder / "store"
    store.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        patch.chdir(folder)
        done = CliRunner().invoke(app, ["train", str(config), "--data", str(PENGUINS), "--out", "bundle",
                                        "--quiet"])
    assert done.exit_code == 0, done.output
    return {"folder": folder, "store": store, "bundle": folder / "bundle", "done": done}


def test_without_track_nothing_is_logged(untracked: dict) -> None:
    assert RUN_LINE not in untracked["done"].output
    assert list(untracked["store"].iterdir()) == []
    assert sorted(p.name for p in untracked["folder"].iterdir()) == ["bundle", "store"]


def test_log_model_logs_an_existing_bundle_in_a_run_of_its_own_or_the_active_one(
        untracked: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file store, which MLflow 3 keeps only on request, works as well as a database.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    info = log_model(untracked["bundle"], example=PENGUINS)
    assert mlflow.MlflowClient().get_run(info.run_id).info.status == "FINISHED"
    frame = pd.read_csv(PENGUINS).head(40)
    logged = mlflow.pyfunc.load_model(info.model_uri)
    assert logged.metadata.get_input_schema() is not None
    assert_same_predictions(logged.predict(frame), plait.load(untracked["bundle"]).predict(frame))

    with mlflow.start_run() as active:
        inside = log_model(untracked["bundle"], artifact_path="penguins")
        assert mlflow.active_run().info.run_id == active.info.run_id
    assert inside.run_id == active.info.run_id
    assert mlflow.pyfunc.load_model(f"runs:/{active.info.run_id}/penguins").metadata.signature is None


def test_nested_trackers_make_child_runs_and_a_failure_marks_the_run(
        local: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local["uri"])  # a store already set up: faster
    spec = plait.load_spec(CONFIG)
    with Tracker(spec, experiment="search", run_name="study") as study:
        with Tracker(spec, run_name="trial 0", nested=True, params={"train.epochs": 7}) as trial:
            trial.log_metrics({"score": 0.5}, step=1)
        with pytest.raises(RuntimeError), Tracker(run_name="trial 1", nested=True) as failed:
            raise RuntimeError("the trial broke")
        study.log_metrics({"best": 0.5})
    client = mlflow.MlflowClient()
    child = client.get_run(trial.run_id)
    assert child.data.tags["mlflow.parentRunId"] == study.run_id
    assert child.data.params["train.epochs"] == "7"
    assert child.data.params["inputs.island.embedding_dim"] == "2"
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(failed.run_id).data.tags["mlflow.parentRunId"] == study.run_id
    assert client.get_run(study.run_id).info.status == "FINISHED"
    assert mlflow.active_run() is None


def test_config_keys_name_inputs_and_long_values_are_cut() -> None:
    config = plait.load_spec(CONFIG).to_dict()
    config["outputs"][0]["class_weight"] = {"Adelie/old": 2.0}
    config["inputs"][0]["column"] = "x" * 10_000
    params = flatten_config(config)
    assert params["inputs.island.encoding"] == "embedding"
    assert params["merge.strategy"] == "concat"
    assert params["outputs.species.class_weight"] == '{"Adelie/old": 2.0}'  # a label is no key
    assert len(params["inputs.bill_length_mm.column"]) == 6000
    assert not any(key.endswith(".name") for key in params if key.startswith(("inputs.", "outputs.")))


def test_train_refuses_an_unknown_tracker(config: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "plait", "train", str(config), "--data", str(PENGUINS),
                           "--out", str(tmp_path / "b"), "--track", "wandb"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("plait: error: --track: found 'wandb'; expected mlflow")


def test_without_mlflow_installed_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(plait.PlaitError, match=r'pip install "plait\[mlflow\]"'):
        Tracker()


def test_an_unusable_tracking_uri_stops_train_before_it_trains(config: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://store")
    done = CliRunner().invoke(app, ["train", str(config), "--data", str(PENGUINS), "--out",
                                    str(tmp_path / "b"), "--track", "mlflow"])
    assert done.exit_code == 2
    assert done.stderr.startswith("plait: error: cannot start an MLflow run at nosuch://store: ")
    assert not (tmp_path / "b").exists()
