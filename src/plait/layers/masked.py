"""A regression loss over several targets that leaves out the missing ones (NaN).

Written with ``keras`` and ``keras.ops`` only: ``plait code`` copies this class into the
scripts it writes.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="plait")
class MaskedLoss(keras.losses.Loss):
    """The squared (``mse``), absolute (``mae``) or Huber (``huber``, delta 1) error of each
    target that is present; a NaN target adds nothing, nor does its gradient.

    A row's loss is the sum of its present errors divided by its number of targets, so
    every present value weighs the same in the batch, whichever row it sits in.

    >>> import keras
    >>> truth = keras.ops.convert_to_tensor([[1.0, float("nan")], [0.0, 2.0]])
    >>> float(MaskedLoss("mae")(truth, keras.ops.zeros((2, 2))))
    0.75
    >>> float(MaskedLoss("mse")(truth, keras.ops.zeros((2, 2))))
    1.25
    """

    def __init__(self, kind: str = "mse", name: str | None = None, **kwargs: object) -> None:
        if kind not in ("mse", "mae", "huber"):
            raise ValueError(f"MaskedLoss kind: found {kind!r}; expected 'mse', 'mae' or 'huber'")
        super().__init__(name=name or f"masked_{kind}", **kwargs)
        self.kind = kind

    def call(self, y_true: keras.KerasTensor, y_pred: keras.KerasTensor) -> keras.KerasTensor:
        present = keras.ops.logical_not(keras.ops.isnan(y_true))
        # NaN is replaced before the subtraction: a NaN anywhere in the graph would reach the
        # gradient even where it is masked out.
        error = keras.ops.where(present, y_pred - keras.ops.where(present, y_true, 0.0), 0.0)
        size = keras.ops.cast(keras.ops.shape(y_true)[-1], error.dtype)
        return keras.ops.sum(self.elementwise(error), axis=-1) / size

    def elementwise(self, error: keras.KerasTensor) -> keras.KerasTensor:
        absolute = keras.ops.abs(error)
        if self.kind == "mae":
            return absolute
        if self.kind == "huber":
            return keras.ops.where(absolute <= 1.0, 0.5 * error * error, absolute - 0.5)
        return error * error

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind}
