"""Shared data, helpers and the models trained once per session.

Training is kept cheap: a few hundred rows and one batch per epoch wherever it can be
(JAX compiles each distinct batch shape once; steps on a compiled function cost
microseconds), so the time a fit costs is mostly compilation, paid once per model.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

# Many tests fit models of the same architecture (two seeds, a resumed run, a reloaded
# bundle, CLI subprocesses): JAX's persistent compilation cache, in a folder this session
# owns and its subprocesses inherit, compiles each distinct program once.
_JAX_CACHE = tempfile.mkdtemp(prefix="plait-tests-jax-")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _JAX_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' models are tiny: XLA's optimisation passes cost more than they save.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

DATA = Path(__file__).parent / "data"
PENGUINS = DATA / "penguins.csv"


def train_block(**overrides: Any) -> dict:
    """A ``train:`` block for small tests: one batch per epoch, no validation split."""
    block = {"epochs": 20, "batch_size": 1024, "learning_rate": 0.02, "validation_split": 0.0,
             "seed": 0}
    block.update(overrides)
    return block


def fit(spec: dict, data: Any, **kwargs: Any) -> Any:
    """A plait Model built from ``spec`` and fitted on ``data``, quietly."""
    import plait

    return plait.Model(spec, verbose=0).fit(data, **kwargs)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG file contents for a uint8 array of shape (height, width) or (height, width, 3)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels))
    return path


def layer_names(model: Any) -> dict[str, str]:
    """Each layer's name mapped to its class name."""
    return {layer.name: type(layer).__name__ for layer in model.keras_model.layers}


@pytest.fixture(scope="session")
def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


@pytest.fixture(scope="session")
def penguin_split(penguins: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fixed 75/25 split of the penguins, shuffled with a fixed seed."""
    order = np.random.default_rng(7).permutation(len(penguins))
    cut = int(len(penguins) * 0.75)
    return (penguins.iloc[order[:cut]].reset_index(drop=True),
            penguins.iloc[order[cut:]].reset_index(drop=True))


PENGUIN_SPEC = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "bill_depth_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
        {"name": "sex", "type": "category", "encoding": "onehot"},
    ],
    "merge": {"strategy": "concat"},
    "head": {"layers": [16]},
    "outputs": [
        {"name": "species", "type": "category"},
        {"name": "body_mass_g", "type": "number", "loss": "huber", "weight": 0.5},
    ],
    "train": train_block(epochs=150, learning_rate=0.03, validation_split=0.2),
}


@pytest.fixture(scope="session")
def penguin_model(penguin_split: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    """Species (category, string labels) and body mass (number) from the penguins' measures."""
    train, _ = penguin_split
    return fit(PENGUIN_SPEC, train)


@pytest.fixture(scope="session")
def penguin_bundle(penguin_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return penguin_model.save(tmp_path_factory.mktemp("bundles") / "penguins")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(bundle: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m plait serve BUNDLE`` on a free port of 127.0.0.1, running until the block
    ends; its base URL."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="plait-serve-")) / "server.log"
    command = [sys.executable, "-m", "plait", "serve", str(bundle), "--port", str(port), *options]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer /healthz:\n{log_path.read_text()}")
