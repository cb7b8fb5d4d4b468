"""Distributed training: 2 host devices, 2 processes on 127.0.0.1, a 1M-row table split in 2.

Each run is a real subprocess on real JAX (the device count and the process group are fixed
when JAX starts); the data are small and the epochs few, so these stay under a minute and a half.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import free_port
from plait.distributed import Distribution, PartShare, RowShare, as_dataset, read_cluster
from plait.errors import ConfigError
from plait.parts import Part

CONFIG = {
    "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"},
               {"name": "c", "type": "category"}],
    "head": {"layers": [8]},
    "outputs": [{"name": "y", "type": "binary"}],
    "train": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, "validation_split": 0.25, "seed": 1},
}


def table(rows: int = 256) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows),
                          "c": rng.choice(list("abcdefg"), rows)})
    frame["y"] = np.where(frame.a + (frame.c == "a") + rng.normal(scale=0.3, size=rows) > 0.5, "yes", "no")
    return frame


# -- on two host devices of one process ---------------------------------------------------

DEVICES_SCRIPT = r'''
import json, sys
import numpy as np, pandas as pd
import plait
from plait.distributed import Distribution, Plan, reserve_devices
from plait.errors import ConfigError
from plait.parts import Part
from plait.preprocess import Prepared, fit_states, training_arrays
from plait.data import read_table
from plait.spec import load_spec

config, frame = json.loads(sys.argv[1]), pd.read_csv(sys.argv[2])
reserve_devices(Distribution(devices=2))  # JAX starts with 2 host devices; plain runs use the first
found = {}

def with_distribution(base, **distribution):
    return {**base, "train": {**base["train"], "distribution": distribution}}

one = plait.Model(config, verbose=0).fit(frame)
two = plait.Model(with_distribution(config, devices=2), verbose=0).fit(frame)
difference = np.abs(one.predict(frame)["y_proba"] - two.predict(frame)["y_proba"]).max()
found["data_parallel"] = {"difference": float(difference), "plan": two.distributed_}
try:
    plait.Model(with_distribution({**config, "train": {**config["train"], "batch_size": 63}}, devices=2),
                verbose=0).fit(frame)
except ConfigError as error:
    found["odd_batch"] = str(error)

# A category input with a vocabulary of a million values; a few hundred rows use it.
VOCABULARY = 1_000_000
rng = np.random.default_rng(1)
users = rng.integers(0, VOCABULARY, 256)
rows = pd.DataFrame({"user": [f"u{u}" for u in users], "a": rng.normal(size=256)})
rows["y"] = (rows.a + (users % 2)) > 0.5
big = {"inputs": [{"name": "user", "type": "category", "embedding_dim": 4}, {"name": "a", "type": "number"}],
       "outputs": [{"name": "y", "type": "binary"}],
       "train": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "validation_split": 0.0, "seed": 1}}

def prepared_for(spec):
    states = fit_states(spec, read_table(rows))
    states["user"] = states["user"].model_copy(update={"vocabulary": [f"u{i}" for i in range(VOCABULARY)]})
    arrays = training_arrays(spec, states, read_table(rows))
    return Prepared(states, [Part(arrays.x, arrays.y, None, arrays.present)], [], {}, spec.preprocessing())

seen = {}
localized = Plan.localized

def inspect_then_localize(plan, model, rebuild):
    table = model.get_layer("user_embedding").embeddings.value
    seen.update(spec=str(table.sharding.spec), shards=[list(s.data.shape) for s in table.addressable_shards],
                devices=sorted(str(s.device) for s in table.addressable_shards), plan=plan.describe())
    return localized(plan, model, rebuild)

Plan.localized = inspect_then_localize
whole_spec, split_spec = load_spec(big), load_spec(with_distribution(big, model_parallel=2))
whole = plait.Model(whole_spec, verbose=0).fit_prepared(prepared_for(whole_spec))
split = plait.Model(split_spec, verbose=0).fit_prepared(prepared_for(split_spec))
x = prepared_for(whole_spec).train[0].x
seen["difference"] = float(np.abs(whole.raw_outputs(x)["y"] - split.raw_outputs(x)["y"]).max())
seen["table"] = list(split.keras_model.get_layer("user_embedding").embeddings.shape)
found["model_parallel"] = seen
print(json.dumps(found))
'''


@pytest.fixture(scope="module")
def on_two_devices(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("devices")
    table().to_csv(folder / "train.csv", index=False)
    command = [sys.executable, "-c", DEVICES_SCRIPT, json.dumps(CONFIG), str(folder / "train.csv")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_host_devices_train_as_one(on_two_devices: dict) -> None:
    found = on_two_devices["data_parallel"]
    assert found["difference"] < 1e-4
    assert found["plan"].startswith("data parallel over 2 devices")


def test_a_batch_that_does_not_split_over_the_devices_is_refused(on_two_devices: dict) -> None:
    assert on_two_devices["odd_batch"] == ("train.batch_size: found 63; expected a multiple of 2, the "
                                           "number of model copies it is split over (2 devices)")


def test_a_million_row_table_is_split_over_two_devices(on_two_devices: dict) -> None:
    found = on_two_devices["model_parallel"]
    rows, width = found["table"]
    assert rows > 1_000_000 and width == 4
    # 1,000,001 rows (the vocabulary and the unseen slot) do not halve: the columns do.
    assert found["spec"] == "P(None, 'model')"
    assert found["shards"] == [[rows, width // 2], [rows, width // 2]]
    assert len(set(found["devices"])) == 2
    assert "split: user_embedding/embeddings" in found["plan"]
    assert found["difference"] < 1e-4


# -- two processes on 127.0.0.1 -----------------------------------------------------------


def plait_train(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "plait", "train", str(config), "--data", str(data), "--out", str(out),
            "-q", "--no-report", *extra]


def group(port: int, index: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(index),
            "--heartbeat-timeout", "5"]


def test_two_processes_survive_a_killed_worker_and_resume_to_the_one_process_result(
        tmp_path: Path) -> None:
    epochs = 12
    table().to_csv(tmp_path / "train.csv", index=False)
    config_text = yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "epochs": epochs}})
    (tmp_path / "config.yaml").write_text(config_text)
    config, data, out = tmp_path / "config.yaml", tmp_path / "train.csv", tmp_path / "bundle"
    progress = tmp_path / ".bundle.checkpoint" / "progress.json"

    port = free_port()
    processes = [subprocess.Popen(plait_train(config, data, out, *group(port, index)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for index in (0, 1)]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and processes[1].poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = processes[0].communicate(timeout=60)  # bounded: the survivor must not hang
    processes[1].communicate()
    assert processes[0].returncode != 0
    assert time.monotonic() - killed < 30
    assert "another process of the group stopped" in stderr or "another task died" in stderr, stderr[-2000:]
    done = json.loads(progress.read_text())["epoch"]
    assert 1 <= done < epochs and not out.exists()

    port = free_port()
    resumed = [subprocess.Popen(plait_train(config, data, out, "--resume", *group(port, index)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for index in (0, 1)]
    outputs = [process.communicate(timeout=240) for process in resumed]
    errors = outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert [process.returncode for process in resumed] == [0, 0], errors
    assert "process 1 of 2: training done; process 0 writes the bundle" in outputs[1][0]
    assert not progress.parent.exists()

    import plait

    alone = plait.Model(config, verbose=0).fit(data)  # one process, one device, same seed
    grouped = plait.load(out)
    assert len(grouped.history_["loss"]) == epochs
    difference = np.abs(alone.predict(data)["y_proba"] - grouped.predict(data)["y_proba"]).max()
    assert difference < 1e-4


# -- the group's settings, and each process's share ---------------------------------------


def test_the_group_is_read_from_flags_slurm_and_kubernetes() -> None:
    assert read_cluster(environ={}) is None
    flags = read_cluster("10.0.0.1:1234", 4, 3, heartbeat_timeout=9, environ={})
    assert (flags.coordinator, flags.num_processes, flags.process_id, flags.heartbeat_timeout) == (
        "10.0.0.1:1234", 4, 3, 9)
    slurm = read_cluster(environ={"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                                  "SLURM_STEP_NODELIST": "node[003-004]", "PLAIT_COORDINATOR": ""})
    assert (slurm.coordinator, slurm.num_processes, slurm.process_id) == ("node003:12355", 2, 1)
    assert read_cluster(environ={"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}) is None
    k8s = read_cluster(environ={"JOB_COMPLETION_INDEX": "2", "PLAIT_NUM_PROCESSES": "3",
                                "PLAIT_COORDINATOR": "train-0.train"})
    assert (k8s.coordinator, k8s.num_processes, k8s.process_id) == ("train-0.train:12355", 3, 2)


@pytest.mark.parametrize(("flags", "message"), [
    (("h:1", 2, None), "--process-id: missing"),
    ((None, 2, 0), "--coordinator: missing"),
    (("h:1", 2, 2), "--process-id: found 2; expected 0 to 1 for 2 processes"),
    (("h:99999", 2, 0), "--coordinator: found 'h:99999'; expected HOST:PORT"),
])
def test_a_wrong_group_is_one_clear_error(flags: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_cluster(*flags, environ={})


def test_a_wrong_devices_flag_stops_before_training(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    table(32).to_csv(tmp_path / "train.csv", index=False)
    done = subprocess.run(plait_train(tmp_path / "config.yaml", tmp_path / "train.csv", tmp_path / "out",
                                      "--devices", "many"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "plait: error: --devices: found 'many'; expected a number of devices (1 or more) or 'all'")
    assert not (tmp_path / "out").exists()


def test_the_config_key_is_validated() -> None:
    assert Distribution.model_validate({"devices": "all"}).devices == "all"
    with pytest.raises(ValueError, match="expected a number of devices"):
        Distribution.model_validate({"devices": 0})


def parts(*sizes: int) -> list[Part]:
    first = np.cumsum((0, *sizes))
    return [Part({"x": np.arange(start, start + size)[:, None]}, {"y": np.zeros(size)}, None)
            for start, size in zip(first, sizes, strict=False)]


def rows_of(share: object) -> list[np.ndarray]:
    return [share[index][0]["x"].ravel() for index in range(len(share))]


def test_each_process_feeds_its_slice_of_every_global_batch() -> None:
    from plait.training import Batches

    batches = Batches(parts(50, 57), batch_size=20, seed=4)  # 2 processes of 2 devices each
    whole = rows_of(batches)
    shares = [rows_of(as_dataset(RowShare)(batches, 4, 2, index)) for index in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole) == 6
    for step, rows in enumerate(whole):
        kept = rows[:len(rows) - len(rows) % 4]  # the last batch (7 rows) is cut to 4, 2 each
        assert np.array_equal(np.concatenate([shares[0][step], shares[1][step]]), kept)
    few = as_dataset(RowShare)(Batches(parts(43), batch_size=20, seed=4), 4, 2, 0)
    assert len(few) == 2  # a last batch of 3 rows holds nothing for 4 devices: left out


def test_a_streamed_run_deals_its_cached_parts_out() -> None:
    from plait.training import Batches

    batches = Batches(parts(40, 40, 30, 30, 10), batch_size=20, seed=4)
    shares = [as_dataset(PartShare)(batches, 2, index) for index in (0, 1)]
    seen = [np.concatenate(rows_of(share)) for share in shares]
    assert len(shares[0]) == len(shares[1]) == 7  # process 1's 70 rows fill seven batches of 10
    assert all(len(batch) == 10 for share in shares for batch in rows_of(share))
    assert set(seen[0]) <= set(range(0, 40)) | set(range(80, 110)) | set(range(140, 150))
    assert set(seen[1]) <= set(range(40, 80)) | set(range(110, 140))
