"""Where attributions of ids are measured: an input's embedded words, tags or category,
scaled by an extra model input in the copy of the model that ``plait.attribution`` builds,
and left alone in every model that is trained, saved or served."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_scales: ContextVar[dict[str, Any] | None] = ContextVar("plait_attribution_scales", default=None)


def embedded(x: Any, name: str) -> Any:
    """The embedded values of input ``name``, as its branch goes on with them: unchanged in a
    model for training and prediction; in the copy that attributions are measured on,
    multiplied by an extra input ``<name>_attribution_scale`` of the same shape."""
    scales = _scales.get()
    if scales is None:
        return x
    import keras

    scale = keras.Input(shape=tuple(x.shape[1:]), name=f"{name}_attribution_scale")
    scales[name] = scale
    return scaled_layer()(name=f"{name}_attribution_scaled")(x, scale)


def scale_inputs() -> dict[str, Any]:
    """The scale inputs made so far in an open ``scaled_embeddings``, by their input name
    (outside one: none), for ``plait.graph.build`` to add to the model's inputs."""
    return {scale.name: scale for scale in (_scales.get() or {}).values()}


def scaled_layer() -> type:
    """``Scaled()(x, scale)``: ``x * scale``, passing ``x``'s padding mask on (Keras's own
    Multiply would merge it with the scale's absent one and lose it)."""
    import keras

    class Scaled(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, x: Any, scale: Any) -> Any:
            return x * scale

    return Scaled


@contextmanager
def scaled_embeddings() -> Iterator[dict[str, Any]]:
    """While open, every input's ``embedded`` values get a scale input, collected by input name."""
    scales: dict[str, Any] = {}
    token = _scales.set(scales)
    try:
        yield scales
    finally:
        _scales.reset(token)
