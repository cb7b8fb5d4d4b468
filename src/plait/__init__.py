"""plait: declarative multi-input deep models on Keras 3.

Importing plait is cheap: no deep-learning backend is loaded until a model is built.
Keras runs on JAX unless the user's own ``KERAS_BACKEND`` says otherwise.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"
__all__ = ["Model", "Spec", "load", "load_spec", "tune", "PlaitError", "__version__"]

if TYPE_CHECKING:
    from plait.errors import PlaitError
    from plait.model import Model, load
    from plait.spec import Spec, load_spec
    from plait.tuning.study import tune

_LAZY = {
    "Model": "plait.model",
    "load": "plait.model",
    "Spec": "plait.spec",
    "load_spec": "plait.spec",
    "tune": "plait.tuning.study",
    "PlaitError": "plait.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plait' has no attribute {name!r}")
