"""The only module that reaches into ``keras.src``: two things Keras's public API cannot do.
Also where the backend's own settings are made (JAX's compilation cache).

Each use says why. Everything else in plait uses ``keras`` and ``keras.layers`` only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

COMPILATION_CACHE_BYTES = 2 * 1024**3


def use_compilation_cache() -> None:
    """JAX's persistent compilation cache in plait's cache folder (``<cache>/xla``, the
    cache being ``$PLAIT_CACHE_DIR`` or ``~/.cache/plait``), so a second run of the same
    model (training, ``plait predict``, a ``plait serve`` start) loads its compiled programs
    instead of compiling them again. Kept under 2 GiB, oldest entries dropped first. Left
    alone when another backend runs or the user chose a cache (``JAX_COMPILATION_CACHE_DIR``).
    Called before the first model is built or loaded: JAX reads the setting once."""
    if keras.backend.backend() != "jax" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    from plait.sources import default_cache_dir

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "xla"))
    # The default keeps only programs that took a second to compile; a model's many
    # train, predict and encode steps each take less and add up to the wait.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)


@contextlib.contextmanager
def precision(policy: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``policy`` (``train.precision``) inside the block
    and restored after it: a layer keeps the policy it was made with, so only building needs
    it, and a bundle loads with its own policy whatever the caller set globally.

    >>> with precision("mixed_bfloat16"):
    ...     keras.layers.Dense(1).compute_dtype
    'bfloat16'
    >>> keras.mixed_precision.dtype_policy().name
    'float32'
    """
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(before)


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, without importing TensorFlow (seconds, and hundreds of
    megabytes) just to seed it when it is installed but not the backend: plait feeds Keras
    no ``tf.data`` pipelines, so that seed would never be used."""
    # keras.src: the public function seeds TensorFlow whenever it is importable; its module
    # holds the switch that says whether it is.
    from keras.src.utils import rng_utils

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    tensorflow = rng_utils.tf
    known = tensorflow._available
    tensorflow._available = False
    try:
        keras.utils.set_random_seed(seed)
    finally:
        tensorflow._available = known


def load_keras_model(file: Path) -> Any:
    """``keras.saving.load_model`` in safe mode. On JAX the variables are created inside a
    stateless scope, so their initializers (one compiled random op per weight shape, seconds
    in all) never run for values the file then replaces; any variable the file leaves out is
    initialized as usual. plait's own layers are registered first."""
    import plait.layers  # noqa: F401

    if keras.backend.backend() != "jax":
        return keras.saving.load_model(file, safe_mode=True, compile=False)
    # keras.src: the list of variables waiting for their initializers is not public.
    from keras.src.backend.common import global_state, variables

    with keras.StatelessScope(initialize_variables=False) as scope:
        model = keras.saving.load_model(file, safe_mode=True, compile=False)
    for variable in model.variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)
    pending = global_state.get_global_attribute("uninitialized_variables") or []
    global_state.set_global_attribute("uninitialized_variables", [v for v in pending if v._value is None])
    variables.initialize_all_variables()
    return model
