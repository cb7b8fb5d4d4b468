"""Learning rates of their own for chosen variables: a pretrained backbone fine-tuned gently
beside layers that learn from scratch.

Keras 3 has one learning rate per optimizer. Scaling the gradients instead would change the
step of SGD only: Adam, AdamW and RMSprop divide the gradient by its own running size, so
their steps do not shrink with it. ``LayerRates`` scales the learning rate itself, in the
update of each variable it was told about, which every optimizer's step is proportional to.

Written with ``keras`` only: ``plait code`` copies the mixin into the scripts it writes.
"""

from __future__ import annotations

import functools

import keras


class LayerRates:
    """Mixed into a Keras optimizer class (before it), gives the variables passed to
    ``scale_learning_rate`` a learning rate of their own: the optimizer's times ``scale``.
    The scales are set after construction and before the optimizer is built, as Keras's own
    ``exclude_from_weight_decay`` is, because they name variables, which a config cannot
    hold: ``get_config`` is the base optimizer's. AdamW's weight decay is not scaled.

    >>> import numpy as np
    >>> slow, fast = keras.Variable(np.zeros(1, "float32")), keras.Variable(np.zeros(1, "float32"))
    >>> optimizer = with_layer_rates(keras.optimizers.Adam)(learning_rate=0.1)
    >>> optimizer.scale_learning_rate([slow], 0.01)
    >>> optimizer.apply([np.ones(1, "float32")] * 2, [slow, fast])
    >>> [round(float(v.numpy()[0]), 4) for v in (slow, fast)]  # Adam's first step: the rate
    [-0.001, -0.1]
    """

    def scale_learning_rate(self, variables: list[keras.Variable], scale: float) -> None:
        if self.built:
            raise ValueError("scale_learning_rate() is called before the optimizer is built")
        scales = dict(getattr(self, "_rate_scales", {}))
        scales.update({self._var_key(variable): float(scale) for variable in variables})
        self._rate_scales = scales

    def update_step(self, gradient: object, variable: keras.Variable, learning_rate: object) -> None:
        # Looked up while the step is traced, so the compiled step holds one constant per
        # variable and costs nothing more than the base optimizer's.
        scale = getattr(self, "_rate_scales", {}).get(self._var_key(variable))
        if scale is not None:
            learning_rate = keras.ops.multiply(learning_rate, scale)
        super().update_step(gradient, variable, learning_rate)


@functools.cache
def with_layer_rates(base: type) -> type:
    """The Keras optimizer class ``base`` with ``LayerRates`` mixed in (one class per base),
    registered with Keras as ``plait>{base}WithLayerRates``."""
    cls = type(f"{base.__name__}WithLayerRates", (LayerRates, base),
               {"__doc__": f"{base.__name__} whose chosen variables learn at a rate of their own."})
    return keras.saving.register_keras_serializable(package="plait")(cls)


OPTIMIZERS_WITH_RATES = tuple(with_layer_rates(base) for base in (
    keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.SGD, keras.optimizers.RMSprop))
"""Registered when ``plait.layers`` is imported, so a compiled model.keras that uses one loads."""
