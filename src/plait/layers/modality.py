"""Modality dropout: whole branches of optional inputs switched off at random in training.

Written with ``keras`` and ``keras.ops`` only: ``plait code`` copies this class into the
scripts it writes.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="plait")
class ModalityDropout(keras.layers.Layer):
    """In training, sets each row's branch to zeros with probability ``rate``; at inference
    it passes the branch through unchanged.

    A missing optional input reaches the merge as zeros (its branch times a presence mask
    of 0), so a dropped row is exactly what the model sees when that input is missing, and
    training with it teaches the model to predict without the input. Unlike ``Dropout``
    the kept rows are not rescaled: rescaling would make present values differ between
    training and inference. The draws come from a Keras ``SeedGenerator``, seeded from
    ``seed`` or, when it is None, from Keras's global seed (which plait sets from
    ``train.seed``), so a run is reproducible.

    >>> import keras
    >>> layer = ModalityDropout(0.5, seed=1)
    >>> x = keras.ops.ones((1000, 3))
    >>> bool(keras.ops.all(layer(x) == x))
    True
    >>> dropped = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> sorted(set(dropped.sum(axis=1).tolist())), 400 < int((dropped[:, 0] == 0).sum()) < 600
    ([0.0, 3.0], True)
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"ModalityDropout rate: found {rate}; expected 0 <= rate < 1")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs: keras.KerasTensor, training: bool | None = None) -> keras.KerasTensor:
        if not training or self.rate == 0.0:
            return inputs
        # one draw per row, broadcast over the branch's other axes: the whole branch goes
        shape = (keras.ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        kept = keras.random.uniform(shape, seed=self.seed_generator) >= self.rate
        return inputs * keras.ops.cast(kept, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
