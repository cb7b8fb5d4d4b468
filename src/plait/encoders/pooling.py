"""Encoders without weights of their own: a masked average, or all steps side by side."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from plait.encoders.base import Encoder


class MeanEncoder(Encoder):
    """The average over the steps; padding is left out of it.

    >>> MeanEncoder().kind
    'mean'
    """

    kind: Literal["mean"] = "mean"
    uses_mask: ClassVar[bool] = True

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        return layers.GlobalAveragePooling1D(name=f"{name}_mean")(x)


class FlattenEncoder(Encoder):
    """Every step side by side, for short sequences of a fixed length.

    >>> FlattenEncoder().kind
    'flatten'
    """

    kind: Literal["flatten"] = "flatten"

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        return layers.Flatten(name=f"{name}_flatten")(x)
