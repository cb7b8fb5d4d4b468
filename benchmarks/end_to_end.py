"""End to end on the shipped reviews example: the wall time of each stage of training and
predicting, by calling plait's own functions in turn as ``Model.fit`` and ``Model.predict``
do: read, fit the preprocessing, encode, build and compile, train, predict (encode, run the
model, decode); then the test metric. The config's ``train.ensemble`` trains that many networks
one after another; the stages here are those of one network (``ensemble: 1``), which a run
of the example pays once per member."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, WORK, seconds

CONFIG = ROOT / "examples" / "reviews" / "config.yaml"


def split_files() -> Path:
    """The published train / validation / test split, written by the example's prepare.py."""
    folder = WORK / "reviews-data"
    if not all((folder / f"{part}.parquet").is_file() for part in ("train", "valid", "test")):
        subprocess.run([sys.executable, str(ROOT / "examples" / "reviews" / "prepare.py"), str(folder)],
                       check=True, stdout=subprocess.DEVNULL)
    return folder


class Stages:
    """Wall time per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, action: Any) -> Any:
        start = time.perf_counter()
        value = action()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return value


def run(quick: bool) -> dict[str, Any]:
    import keras

    from plait.data import read_table
    from plait.graph import build, compile_model
    from plait.metrics import binary_metrics
    from plait.preprocess import encode_inputs, encode_targets, fit_states
    from plait.spec import load_spec, read_config_file
    from plait.training import Batches, EpochOrder, Part

    folder = split_files()
    config = read_config_file(CONFIG)
    config["train"]["ensemble"] = 1
    spec = load_spec(config)
    epochs = 1
    stage = Stages()
    train, valid, test = (stage("read", lambda part=part: read_table(folder / f"{part}.parquet"))
                          for part in ("train", "valid", "test"))
    if quick:
        train, valid, test = (table.take(np.arange(min(rows, table.num_rows)))
                              for table, rows in ((train, 400), (valid, 200), (test, 200)))
    states = stage("fit", lambda: fit_states(spec, train))

    def arrays(table: Any) -> tuple[dict, dict]:
        x = encode_inputs(spec, states, table).inputs
        y = {name: target.values for name, target in encode_targets(spec, states, table).items()}
        return x, y

    train_x, train_y = stage("encode", lambda: arrays(train))
    valid_x, valid_y = stage("encode", lambda: arrays(valid))
    keras.utils.set_random_seed(spec.train.seed)
    model = stage("compile", lambda: compile_model(build(spec, states), spec))
    batches = Batches([Part(train_x, train_y, None)], spec.train.batch_size, spec.train.seed)
    validation = None if quick else (valid_x, valid_y)
    stage("train", lambda: model.fit(batches, validation_data=validation, epochs=epochs,
                                      shuffle=False, callbacks=[EpochOrder(batches)], verbose=0))

    def predict(table: Any) -> dict:
        raw = model.predict(encode_inputs(spec, states, table).inputs, batch_size=spec.train.batch_size,
                            verbose=0)
        return {out.name: out.decode(np.asarray(raw[out.name]), states[out.name]) for out in spec.outputs}

    stage("predict", lambda: predict(test))
    one_row = [seconds(lambda row=row: predict(test.take(np.array([row])))) for row in range(21)][1:]
    raw = model.predict(encode_inputs(spec, states, test).inputs, batch_size=spec.train.batch_size, verbose=0)
    target = encode_targets(spec, states, test)["recommended"]
    probability = np.asarray(raw["recommended"]).ravel()[target.present]
    score = binary_metrics(target.values.ravel()[target.present], probability, 0.5)
    return {
        "rows": {"train": train.num_rows, "valid": valid.num_rows, "test": test.num_rows},
        "epochs": epochs,
        "seconds": stage.seconds,
        "total_seconds": sum(stage.seconds.values()),
        "train_examples_per_s": train.num_rows * epochs / stage.seconds["train"],
        "predict_rows_per_s": test.num_rows / stage.seconds["predict"],
        "predict_one_row_ms_p50": 1000 * statistics.median(one_row),
        "test_at_threshold_0_5": {"recommended_f1": float(score["f1"]),
                                  "recommended_roc_auc": float(score["roc_auc"])},
    }
