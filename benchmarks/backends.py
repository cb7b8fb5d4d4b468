"""Backends: on each Keras backend that is installed, plait's tabular + text model against the
same network written by hand (the overhead benchmark's comparison), both in one process with
``KERAS_BACKEND`` set, timed alternately on the same encoded arrays after a warm-up epoch
each. The ratio plait / hand-written is taken per backend, so a backend is only ever compared
with itself: a machine busy with other work slows both sides of a ratio alike, and cannot
pass for a slow backend.

    python benchmarks/backends.py BACKEND ROWS ROUNDS    (one backend; prints JSON)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
BATCH = 256


def measure(rows: int, rounds: int) -> dict[str, Any]:
    """plait's model and the hand-written one on the backend this process runs."""
    import keras
    from common import text_spec, text_table
    from overhead import compare, hand_written_text

    compared = compare("tabular_text", text_spec(BATCH), text_table(rows), hand_written_text, rounds)
    train, predict = compared["train_examples_per_s"], compared["predict_examples_per_s"]
    return {"backend": keras.backend.backend(), "rows": rows, "rounds": rounds,
            "train_examples_per_s": train["plait"], "predict_examples_per_s": predict["plait"],
            "hand_written": {"train_examples_per_s": train["hand_written"],
                             "predict_examples_per_s": predict["hand_written"]},
            "train_ratio": compared["train_ratio"], "predict_ratio": compared["predict_ratio"]}


def run(quick: bool) -> dict[str, Any]:
    rows, rounds = (512, 2) if quick else (10_000, 5)
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
