"""Per-input importance: neutral values per input type, and on a model where one input carries
the signal and the others are noise, that input clearly matters most (API and ``plait explain``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import plait
from conftest import fit, train_block
from plait.bundle import update, verify
from plait.data import read_table
from plait.errors import BundleError
from plait.spec import load_spec

NEUTRAL_CASES = [
    ({"name": "a", "type": "number", "scale": "minmax", "fill": "median"}, pa.array([1.0, 3.0, 10.0, None])),
    ({"name": "a", "type": "vector", "size": 2}, pa.array([[1.0, 2.0], [3.0, 8.0], [2.0, 2.0], None])),
    ({"name": "a", "type": "category"}, pa.array(["x", "y", "x", None])),
    ({"name": "a", "type": "binary"}, pa.array(["yes", "no", "yes", None])),
    ({"name": "a", "type": "text", "length": 4}, pa.array(["good fit", "too small", "fine", None])),
    ({"name": "a", "type": "image", "size": [2, 2], "channels": 1},
     pa.array([[0, 50, 100, 150], [10, 20, 30, 40], [255, 0, 255, 0], None])),
    ({"name": "a", "type": "sequence"}, pa.array([[[1.0], [2.0]], [[3.0]], [[0.0], [5.0]], None])),
]


@pytest.mark.parametrize(("config", "column"), NEUTRAL_CASES, ids=[c["type"] for c, _ in NEUTRAL_CASES])
def test_neutral_value_is_what_a_missing_value_encodes_to(config: dict, column: pa.Array) -> None:
    spec = load_spec({"inputs": [config], "outputs": [{"name": "y", "type": "number"}]}).inputs[0]
    table = read_table(pa.table({"a": column, "y": [1.0, 2.0, 3.0, 4.0]}))
    state = spec.fit(table)
    encoded = spec.encode(table, state)
    assert encoded.missing[-1]
    np.testing.assert_allclose(spec.neutral(state), encoded.values[-1], rtol=1e-6)
    assert not np.allclose(spec.neutral(state), encoded.values[0])


def signal_frame(rows: int, seed: int) -> pd.DataFrame:
    """``signal`` decides both targets; ``noise`` and ``tag`` are independent of them."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    return pd.DataFrame({
        "signal": signal,
        "noise": rng.normal(size=rows),
        "tag": rng.choice(["red", "green", "blue", None], rows),
        "y": (signal + 0.4 * rng.normal(size=rows) > 0).astype(int),
        "amount": 3 * signal + 10 + 0.3 * rng.normal(size=rows),
    })


SPEC = {
    "inputs": [{"name": "noise", "type": "number"}, {"name": "signal", "type": "number"},
               {"name": "tag", "type": "category", "optional": True}],
    "head": {"layers": [8]},
    "outputs": [{"name": "y", "type": "binary"}, {"name": "amount", "type": "number"}],
    "train": train_block(epochs=40, learning_rate=0.05),
}


@pytest.fixture(scope="module")
def explained() -> tuple[plait.Model, pd.DataFrame]:
    return fit(SPEC, signal_frame(300, seed=0)), signal_frame(160, seed=1)


def test_the_signal_input_matters_most(explained: tuple[plait.Model, pd.DataFrame]) -> None:
    model, test = explained
    result = model.explain(test, repeats=3, seed=0)
    assert result["metrics"] == {"y": "roc_auc", "amount": "r2"}
    assert result["reference"]["y"] > 0.85 and result["reference"]["amount"] > 0.8
    for out in ("y", "amount"):
        for way in ("permutation", "switch_off"):
            signal = result["inputs"]["signal"][out][way]
            others = [result["inputs"][name][out][way] for name in ("noise", "tag")]
            assert signal["mean"] > 0.25, (out, way, signal)
            assert all(signal["mean"] > o["mean"] + 3 * o["std"] + 0.1 for o in others), (out, way)
            assert all(abs(o["mean"]) < 0.06 for o in others), (out, way, others)
            assert len(signal["runs"]) == 3 and signal["std"] >= 0
    again = model.explain(test, repeats=3, seed=0)
    assert again["inputs"]["noise"]["y"]["permutation"] == result["inputs"]["noise"]["y"]["permutation"]


def test_plait_explain_writes_importance_into_the_bundle(explained: tuple[plait.Model, pd.DataFrame],
                                                         tmp_path: Path) -> None:
    model, test = explained
    bundle = model.save(tmp_path / "bundle")
    data = tmp_path / "test.parquet"
    test.to_parquet(data, index=False)
    done = subprocess.run([sys.executable, "-m", "plait", "explain", str(bundle), "--data", str(data),
                           "--repeats", "2", "--seed", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows[:2]] == ["signal", "signal"]
    assert len(rows) == 6
    manifest = verify(bundle)
    assert "importance.json" in manifest["files"] and "report.html" not in manifest["files"]
    stored = json.loads((bundle / "importance.json").read_text())
    assert (stored["repeats"], stored["seed"], stored["rows"]) == (2, 4, 160)
    assert plait.load(bundle).importance_ == stored
    assert not list(tmp_path.glob(".bundle.*"))


def test_a_damaged_bundle_is_not_updated(explained: tuple[plait.Model, pd.DataFrame], tmp_path: Path) -> None:
    model, _ = explained
    bundle = model.save(tmp_path / "bundle")
    (bundle / "history.json").write_text("{}")
    before = {path.name: path.read_bytes() for path in bundle.iterdir()}
    with pytest.raises(BundleError, match="history.json: its sha256 does not match"):
        update(bundle, {"importance.json": b"{}", "report.html": b"<p>"})
    assert {path.name: path.read_bytes() for path in bundle.iterdir()} == before
    assert not list(tmp_path.glob(".bundle.*"))
