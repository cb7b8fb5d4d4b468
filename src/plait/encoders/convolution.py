"""A 1-D convolution over the steps, then the largest response of each filter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plait.encoders.base import Encoder
from plait.schema import Units


class ConvolutionEncoder(Encoder):
    """``filters`` 1-D convolutions of width ``kernel_size`` (ReLU), then global max pooling.

    >>> ConvolutionEncoder(filters=16, kernel_size=3).kernel_size
    3
    """

    kind: Literal["cnn"] = "cnn"
    filters: Units = 64
    kernel_size: int = Field(default=5, gt=0, le=64)

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        x = layers.Conv1D(self.filters, self.kernel_size, activation="relu", padding="same",
                          name=f"{name}_conv")(x)
        return layers.GlobalMaxPooling1D(name=f"{name}_max")(x)
