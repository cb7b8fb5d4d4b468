"""The same config trains, saves and reloads on each Keras backend that is installed, and a
bundle written on JAX predicts the same numbers on the others."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plait

BACKENDS = ["tensorflow", "torch"]

SPEC = {
    "inputs": [
        {"name": "x", "type": "number"},
        {"name": "colour", "type": "category", "embedding_dim": 3},
        {"name": "note", "type": "text", "length": 4, "encoder": {"kind": "gru", "units": 4}},
    ],
    "head": {"layers": [8]},
    "outputs": [{"name": "label", "type": "binary"}, {"name": "amount", "type": "number"}],
    "train": {"epochs": 2, "batch_size": 32, "validation_split": 0.2},
}

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, pandas as pd
    import keras, plait
    frame = pd.read_csv(sys.argv[1])
    trained = plait.Model(json.loads(sys.argv[2]), verbose=0).fit(frame)
    trained.save(sys.argv[3] + "/own")
    again = plait.load(sys.argv[3] + "/own")
    same = np.allclose(trained.predict(frame)["label_proba"], again.predict(frame)["label_proba"])
    loaded = plait.load(sys.argv[3] + "/jax")
    jax_bundle = loaded.predict(frame)
    explained = loaded.attribute(frame, rows=[0, 1], steps=8)
    print(json.dumps({"backend": keras.backend.backend(), "reload_same": bool(same),
                      "from_jax": jax_bundle["label_proba"].tolist(), "explained": explained}))
""")


def example_frame(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=rows)
    return pd.DataFrame({
        "x": x,
        "colour": rng.choice(["red", "green", "blue"], rows),
        "note": rng.choice(["very good", "bad", "good enough", "not good"], rows),
        "label": (x > 0).astype(int),
        "amount": 3 * x + 1,
    })


@pytest.fixture(scope="module")
def jax_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("backends")
    frame = example_frame()
    frame.to_csv(folder / "data.csv", index=False)
    model = plait.Model(SPEC, verbose=0).fit(frame)
    model.save(folder / "jax")
    return folder, frame, folder / "jax"


def test_default_backend_is_jax(jax_bundle: tuple) -> None:
    manifest = json.loads((jax_bundle[2] / "MANIFEST.json").read_text())
    assert manifest["backend"] == os.environ.get("KERAS_BACKEND", "jax")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_trains_saves_and_reads_a_jax_bundle(backend: str, jax_bundle: tuple) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    folder, frame, bundle = jax_bundle
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder / "data.csv"), json.dumps(SPEC), str(folder)],
        capture_output=True, text=True, env=environment, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert report["reload_same"]
    expected = plait.load(bundle).predict(frame)["label_proba"].to_numpy()
    np.testing.assert_allclose(report["from_jax"], expected, atol=1e-4)
    # integrated gradients through this backend's own autodiff: the shares JAX finds
    on_jax = plait.load(bundle).attribute(frame, rows=[0, 1], steps=8)
    for got, want in zip(report["explained"]["rows"], on_jax["rows"], strict=True):
        for output in ("label", "amount"):
            shares = got["outputs"][output][0]["inputs"]
            for name, entry in want["outputs"][output][0]["inputs"].items():
                assert shares[name]["total"] == pytest.approx(entry["total"], abs=1e-4), (output, name)
            assert [s for _, s in shares["note"]["units"]] == pytest.approx(
                [s for _, s in want["outputs"][output][0]["inputs"]["note"]["units"]], abs=1e-4)
    manifest = json.loads((folder / "own" / "MANIFEST.json").read_text())
    assert manifest["backend"] == backend
