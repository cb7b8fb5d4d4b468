"""JAX's persistent compilation cache lives in plait's cache folder: the second
``plait predict`` of a bundle finds every program the first one compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import PENGUINS


def predict(bundle: Path, out: Path, cache: Path) -> None:
    env = {**os.environ, "PLAIT_CACHE_DIR": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR")  # the test session's own cache would take precedence
    done = subprocess.run([sys.executable, "-m", "plait", "predict", str(bundle), "--data", str(PENGUINS),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr


def compiled(cache: Path) -> set[str]:
    return {path.name for path in (cache / "xla").glob("*-cache")}


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "jax") != "jax", reason="JAX's cache")
def test_a_second_predict_compiles_nothing_new(penguin_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    predict(penguin_bundle, tmp_path / "first.csv", cache)
    first = compiled(cache)
    assert any(name.startswith("jit_predict_step") for name in first), first
    predict(penguin_bundle, tmp_path / "second.csv", cache)
    assert compiled(cache) == first
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "first.csv"), pd.read_csv(tmp_path / "second.csv"))
