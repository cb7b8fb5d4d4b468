"""No lost work: `plait train` killed mid-run resumes from its checkpoint to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

EPOCHS = 12


def plait_command(*arguments: str | Path) -> list[str]:
    return [sys.executable, "-m", "plait", *map(str, arguments)]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 3))
    colour = rng.choice(["red", "blue"], 400)
    y = (x[:, 0] - x[:, 1] + (colour == "red") + rng.normal(scale=0.5, size=400)) > 0.3
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "colour": colour,
                  "y": np.where(y, "yes", "no")}).to_csv(folder / "train.csv", index=False)
    config = {
        "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"},
                   {"name": "c", "type": "number"}, {"name": "colour", "type": "category"}],
        "head": {"layers": [16], "dropout": 0.2},
        "outputs": [{"name": "y", "type": "binary"}],
        "train": {"epochs": EPOCHS, "batch_size": 100, "learning_rate": 0.01, "validation_split": 0.2,
                  "early_stopping": {"monitor": "val_loss", "patience": 1000}, "seed": 3},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return {"folder": folder, "config": folder / "config.yaml", "data": folder / "train.csv"}


def train(job: dict[str, Path], out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(plait_command("train", job["config"], "--data", job["data"], "--out", out, "-q",
                                        *extra), capture_output=True, text=True, timeout=300)


def kill_after_epoch(job: dict[str, Path], out: Path, epoch: int) -> int:
    """Start training, SIGKILL it once the checkpoint says ``epoch`` epochs are done; the
    epochs it had finished."""
    progress = out.parent / f".{out.name}.checkpoint" / "progress.json"
    process = subprocess.Popen(plait_command("train", job["config"], "--data", job["data"], "--out", out,
                                             "-q"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["epoch"] >= epoch:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    return json.loads(progress.read_text())["epoch"]


def predictions(bundle: Path, data: Path) -> pd.DataFrame:
    import plait

    return plait.load(bundle).predict(data)


def test_killed_run_leaves_no_bundle_and_resumes_to_the_same_result(job: dict[str, Path]) -> None:
    folder = job["folder"]
    whole = train(job, folder / "whole")
    assert whole.returncode == 0, whole.stderr
    assert not (folder / ".whole.checkpoint").exists()

    done_before_kill = kill_after_epoch(job, folder / "resumed", epoch=3)
    assert 3 <= done_before_kill < EPOCHS
    assert not (folder / "resumed").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith("resumed") or "partial" in p.name]

    resumed = train(job, folder / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not (folder / ".resumed.checkpoint").exists()
    history = json.loads((folder / "resumed" / "history.json").read_text())
    assert history == json.loads((folder / "whole" / "history.json").read_text())
    assert len(history["loss"]) == EPOCHS
    pd.testing.assert_frame_equal(predictions(folder / "resumed", job["data"]),
                                  predictions(folder / "whole", job["data"]))


def test_resume_refuses_a_checkpoint_of_other_data(job: dict[str, Path]) -> None:
    folder = job["folder"]
    kill_after_epoch(job, folder / "other", epoch=1)
    changed = folder / "changed.csv"
    pd.read_csv(job["data"]).iloc[:300].to_csv(changed, index=False)
    refused = subprocess.run(plait_command("train", job["config"], "--data", changed, "--out",
                                           folder / "other", "-q", "--resume"),
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"plait: error: {folder / '.other.checkpoint'}: this checkpoint "
                                     "was written for another config or other data")
    assert not (folder / "other").exists()
