"""The ``plait`` command in real subprocesses: train, predict, evaluate, describe; and every
mistake of the user's answered with ``plait: error: ...``, status 2, no traceback, and no
output file left behind.

Training runs the installed console script; the commands after it run as ``python -m
plait``, two at a time, since they are independent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import plait
from conftest import train_block

CONFIG = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
    ],
    "head": {"layers": [8]},
    "outputs": [{"name": "species", "type": "category"}, {"name": "body_mass_g", "type": "number"}],
    "train": train_block(epochs=40, learning_rate=0.05),
}


def command(script: bool) -> list[str]:
    """The console script installed beside this Python, or ``python -m plait``."""
    installed = Path(sys.executable).parent / "plait"
    if script and installed.exists():
        return [str(installed)]
    return [sys.executable, "-m", "plait"]


def plait_run(*arguments: str | Path, script: bool = False) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "200"}  # rich tables unwrapped
    return subprocess.run([*command(script), *map(str, arguments)], capture_output=True, text=True,
                          timeout=300, env=environment, check=False)


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("plait: error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in done.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory,
           penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> Path:
    """Config, training, validation and test files, and a bundle trained by the console script."""
    folder = tmp_path_factory.mktemp("cli")
    train, test = penguin_split
    train.iloc[:200].to_csv(folder / "train.csv", index=False)
    train.iloc[200:].to_csv(folder / "valid.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    test.drop(columns=["island"]).to_csv(folder / "no_island.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (folder / "typo.yaml").write_text(yaml.safe_dump({**CONFIG, "inputs": [{"name": "x", "type": "numbr"}]}))
    (folder / "not_a_bundle").mkdir()
    done = plait_run("train", folder / "config.yaml", "--data", folder / "train.csv", "--valid",
                     folder / "valid.csv", "--epochs", "3", "--out", folder / "bundle", "-q", "--no-report",
                     script=True)
    assert done.returncode == 0, done.stderr
    (folder / "train.log").write_text(done.stdout)
    return folder


@pytest.fixture(scope="module")
def results(folder: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every later command, run two at a time."""
    bundle, test, missing = folder / "bundle", folder / "test.csv", folder / "nothere.csv"
    commands = {
        "predict_csv": ("predict", bundle, "--data", test, "--out", folder / "out" / "predictions.csv"),
        "predict_parquet": ("predict", bundle, "--data", test, "--out", folder / "predictions.parquet"),
        "evaluate": ("evaluate", bundle, "--data", test, "--out", folder / "metrics.json"),
        "describe_config": ("describe", folder / "config.yaml"),
        "describe_bundle": ("describe", bundle),
        "no_config": ("train", folder / "nothere.yaml", "--data", test, "--out", folder / "b1"),
        "typo": ("train", folder / "typo.yaml", "--data", test, "--out", folder / "b2"),
        "extension": ("predict", bundle, "--data", test, "--out", folder / "p.txt"),
        "not_a_bundle": ("predict", folder / "not_a_bundle", "--data", test, "--out", folder / "p1.csv"),
        "no_column": ("predict", bundle, "--data", folder / "no_island.csv", "--out", folder / "p2.csv"),
        "evaluate_no_data": ("evaluate", bundle, "--data", missing, "--out", folder / "m.json"),
        "usage": ("predict", bundle),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(plait_run, *arguments) for name, arguments in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def loaded(folder: Path) -> plait.Model:
    return plait.load(folder / "bundle")


def test_train_writes_the_bundle_quietly(folder: Path, loaded: plait.Model) -> None:
    bundle = folder / "bundle"
    assert (folder / "train.log").read_text() == f"bundle written to {bundle}\n"
    assert sorted(os.listdir(bundle)) == ["MANIFEST.json", "history.json", "metrics.json", "model.keras",
                                          "spec.yaml", "state.json"]
    assert not (folder / ".bundle.checkpoint").exists()
    model = loaded
    assert len(model.history_["loss"]) == 3  # --epochs overrides the config's 40
    assert model.data_report_["training_rows"] == 200  # --valid: no rows split off for validation
    assert model.data_report_["validation_rows"] == model.metrics_["validation"]["rows"] == 58


def test_predict_writes_csv_with_a_column_per_output_and_class(
        folder: Path, results: dict, loaded: plait.Model, penguin_split: tuple) -> None:
    done = results["predict_csv"]
    assert done.returncode == 0, done.stderr
    _, test = penguin_split
    path = folder / "out" / "predictions.csv"
    assert done.stdout.strip() == f"{len(test)} predictions written to {path}"
    written = pd.read_csv(path)
    assert written.columns.tolist() == ["species", "species_proba_Adelie", "species_proba_Chinstrap",
                                        "species_proba_Gentoo", "body_mass_g"]
    expected = loaded.predict(test)
    assert written["species"].tolist() == expected["species"].tolist()
    np.testing.assert_allclose(written["body_mass_g"], expected["body_mass_g"], rtol=1e-12)
    np.testing.assert_allclose(written.filter(like="_proba_").sum(axis=1), 1.0, rtol=1e-5)


def test_predict_writes_parquet(folder: Path, results: dict) -> None:
    assert results["predict_parquet"].returncode == 0, results["predict_parquet"].stderr
    written = pd.read_parquet(folder / "predictions.parquet")
    csv = pd.read_csv(folder / "out" / "predictions.csv")
    assert written.columns.tolist() == csv.columns.tolist()
    assert written["species"].tolist() == csv["species"].tolist()
    assert written["body_mass_g"].dtype == np.float64


def test_evaluate_prints_and_writes_the_metrics(folder: Path, results: dict, loaded: plait.Model) -> None:
    done = results["evaluate"]
    assert done.returncode == 0, done.stderr
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(loaded.evaluate(folder / "test.csv")))
    assert metrics["species"]["baseline"]["kind"] == "majority class"
    assert {"accuracy", "macro_f1", "weighted_f1", "log_loss"} <= set(metrics["species"])
    assert {"mae", "rmse", "r2"} <= set(metrics["body_mass_g"])
    lines = [line for line in done.stdout.splitlines() if "species" in line and "accuracy" in line]
    assert lines and f"{metrics['species']['accuracy']:.4f}" in lines[0]


def describe_rows(output: str) -> dict[str, str]:
    """Each table row of ``plait describe``, by its first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if len(cells) == 5:
            rows[cells[0]] = cells
    return rows


def test_describe_a_bundle_gives_layers_shapes_and_parameters_per_part(results: dict,
                                                                     loaded: plait.Model) -> None:
    done = results["describe_bundle"]
    assert done.returncode == 0, done.stderr
    rows = describe_rows(done.stdout)
    described = loaded.describe()
    for part, summary in described.items():
        name, kind, layers, shape, params = rows[part]
        assert kind == summary["kind"]
        assert layers == " → ".join(layer["class"] for layer in summary["layers"])
        assert params == f"{summary['params']:,}"
    assert rows["island"][1:] == ["input category", "InputLayer → Embedding → Flatten", "(batch, 2)", "8"]
    assert rows["species"][3:] == ["(batch, 3)", "27"]  # 8 × 3 + 3
    assert rows["total"][4] == f"{sum(s['params'] for s in described.values()):,}"


def test_describe_a_config_without_data(results: dict) -> None:
    done = results["describe_config"]
    assert done.returncode == 0, done.stderr
    rows = describe_rows(done.stdout)
    assert rows["head"][1:] == ["head", "Dense", "(batch, 8)", "40"]  # (1 + 1 + 2) × 8 + 8
    assert "placeholders; pass --data to fit them" in done.stdout


@pytest.mark.parametrize(("case", "fragments", "left_out"), [
    ("no_config", ["nothere.yaml: no such config file"], "b1"),
    ("typo", ["typo.yaml: invalid config", "inputs[0].type: found 'numbr'; expected one of"], "b2"),
    ("extension", ["--out", "p.txt: found extension '.txt'; expected .csv or .parquet"], "p.txt"),
    ("not_a_bundle", ["not_a_bundle: not a plait bundle (no MANIFEST.json)"], "p1.csv"),
    ("no_column", ["no_island.csv: no column 'island' (needed by input 'island')"], "p2.csv"),
    ("evaluate_no_data", ["nothere.csv: no such file"], "m.json"),
])
def test_user_mistakes_give_one_clear_error(folder: Path, results: dict, case: str, fragments: list[str],
                                            left_out: str) -> None:
    assert_user_error(results[case], *fragments)
    assert not (folder / left_out).exists()
    assert not [name for name in os.listdir(folder) if ".partial-" in name or name.endswith(".checkpoint")]


def test_a_missing_option_is_a_usage_error_without_traceback(results: dict) -> None:
    done = results["usage"]
    assert done.returncode == 2
    assert "Missing option '--data'" in done.stderr and "Traceback" not in done.stderr

