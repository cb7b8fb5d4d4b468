"""A linear layer on a sparse vector given as (id, weight) pairs: the bag-of-n-grams branch.

Written with ``keras`` and ``keras.ops`` only: ``plait code`` copies the class into the
scripts it writes.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="plait")
class WeightedBag(keras.layers.Layer):
    """A linear layer on a sparse vector of ``size`` entries, given per row as ``(id, weight)``
    pairs, shape ``(batch, slots, 2)``: the sum of ``weight * table[id]`` over the pairs,
    plus a bias, ``units`` values per row. Id 0 with weight 0 pads a row.

    It equals a ``Dense(units)`` on the full sparse vector, but reads only the pairs, so
    neither the rows nor a batch are ever spread over all ``size`` entries.

    >>> import numpy as np
    >>> bag = WeightedBag(4, 2)
    >>> bag.build((None, 3, 2))
    >>> bag.set_weights([np.arange(8, dtype="float32").reshape(4, 2), np.ones(2, "float32")])
    >>> pairs = np.array([[[1, 0.5], [3, 2.0], [0, 0.0]]], "float32")  # ids 1 and 3, then padding
    >>> keras.ops.convert_to_numpy(bag(pairs)).tolist()
    [[14.0, 16.5]]
    """

    def __init__(self, size: int, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.units = units

    def build(self, input_shape: tuple) -> None:
        # Small random rows, as keras.layers.Embedding starts: a zero table would give every
        # row the same output, and a ReLU head after it no gradient at all.
        self.table = self.add_weight(shape=(self.size, self.units), name="table",
                                     initializer=keras.initializers.RandomUniform(-0.05, 0.05))
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="zeros")

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        # Ids travel in a float32 array beside their weights; below 2**24 they are exact.
        ids = keras.ops.cast(inputs[..., 0], "int32")
        weights = keras.ops.expand_dims(inputs[..., 1], -1)
        rows = keras.ops.take(self.table, ids, axis=0)
        return keras.ops.sum(rows * weights, axis=-2) + self.bias

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "units": self.units}
