"""Layers about positions in a sequence: a learned vector per position, and the first step.

Written with ``keras`` and ``keras.ops`` only: ``plait code`` copies these classes into the
scripts it writes.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="plait")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector to each position of a sequence ``(batch, steps, features)``, so
    that attention, which is blind to order, can tell the steps apart. The number of steps
    is the input's, fixed when the layer is built; a padding mask passes through unchanged.

    >>> import keras
    >>> layer = PositionEmbedding(name="where")
    >>> tuple(layer(keras.ops.zeros((2, 5, 3))).shape), tuple(layer.positions.shape)
    ((2, 5, 3), (5, 3))
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape: tuple) -> None:
        steps, features = input_shape[-2], input_shape[-1]
        if steps is None:
            raise ValueError("PositionEmbedding needs a fixed number of steps; found None")
        # small values, as BERT starts them, so that the positions do not drown the tokens
        self.positions = self.add_weight(shape=(steps, features), name="positions",
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return inputs + keras.ops.cast(self.positions, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package="plait")
class FirstStep(keras.layers.Layer):
    """The first step of a sequence: ``(batch, steps, features)`` → ``(batch, features)``.

    After self-attention the first step has read every other step, so it can stand for the
    whole sequence. A padding mask is read and dropped (the first step of a text is never
    padding); ``Cropping1D`` would do the cut but warns that it destroys the mask.

    >>> import keras
    >>> x = keras.ops.reshape(keras.ops.arange(12, dtype="float32"), (2, 3, 2))
    >>> keras.ops.convert_to_numpy(FirstStep()(x)).tolist()
    [[0.0, 1.0], [6.0, 7.0]]
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: keras.KerasTensor, mask: object = None) -> keras.KerasTensor:
        return inputs[:, 0]

    def compute_mask(self, inputs: keras.KerasTensor, mask: object = None) -> None:
        return None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *input_shape[2:])
