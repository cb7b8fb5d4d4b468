"""Backends: the tabular + text model of the overhead benchmark on each Keras backend that is
installed, each in its own process with ``KERAS_BACKEND`` set; training and prediction
examples per second on the encoded arrays, after a warm-up epoch (compilation) on each.

    python benchmarks/backends.py BACKEND ROWS ROUNDS    (one backend; prints JSON)
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
BATCH = 256


def measure(rows: int, rounds: int) -> dict[str, Any]:
    import keras
    from common import alternate, text_spec, text_table
    from overhead import encoded

    import plait
    from plait.training import Batches, EpochOrder, Part

    table = text_table(rows)
    model = plait.Model(text_spec(BATCH), verbose=0).fit(table)
    x, y = encoded(model, table)
    batches = Batches([Part(x, y, None)], BATCH, seed=0)
    network = model.keras_model

    def epoch() -> None:
        network.fit(batches, epochs=1, shuffle=False, callbacks=[EpochOrder(batches)], verbose=0)

    def predict() -> None:
        network.predict(x, batch_size=BATCH, verbose=0)

    epoch()
    predict()
    seconds = {name: statistics.median(times) for name, times in
               alternate({"train": epoch, "predict": predict}, rounds).items()}
    return {"backend": keras.backend.backend(), "rows": rows,
            "train_examples_per_s": rows / seconds["train"],
            "predict_examples_per_s": rows / seconds["predict"]}


def run(quick: bool) -> dict[str, Any]:
    rows, rounds = (512, 1) if quick else (10_000, 3)
    results: dict[str, Any] = {}
    for backend, module in MODULES.items():
        if importlib.util.find_spec(module) is None:
            results[backend] = {"error": f"not installed (no module {module!r})"}
            continue
        environment = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run([sys.executable, __file__, backend, str(rows), str(rounds)],
                              capture_output=True, text=True, env=environment, timeout=1800)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            results[backend] = {"error": lines[-1] if lines else f"exit status {done.returncode}"}
            continue
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["KERAS_BACKEND"] = sys.argv[1]
    print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
