"""The 1-D ResNet of the UCR baselines (Wang, Yan and Oates, 2017): residual blocks of
convolutions, then the average over the steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plait.encoders.base import Encoder
from plait.encoders.inception import MOMENTUM, KernelSize, Momentum, capped
from plait.schema import Units


class ResNetEncoder(Encoder):
    """One residual block per entry of ``filters``: a convolution of each width in
    ``kernel_sizes`` (capped at the steps), each batch normalised and, but the last, followed
    by ReLU; the block's input joins by a shortcut (a 1×1 convolution and batch
    normalisation, or batch normalisation alone when the channels already match), then
    ReLU. The average over the steps closes it. The defaults are the published network:
    blocks of 64, 128 and 128 filters, widths 8, 5 and 3. ``momentum`` is batch
    normalisation's, for its moving statistics (0.9, as for ``inception``).

    >>> ResNetEncoder(filters=[16, 32]).kernel_sizes
    [8, 5, 3]
    """

    kind: Literal["resnet"] = "resnet"
    filters: list[Units] = Field(default=[64, 128, 128], min_length=1, max_length=16)
    kernel_sizes: list[KernelSize] = Field(default=[8, 5, 3], min_length=1, max_length=8)
    momentum: Momentum = MOMENTUM

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        steps = x.shape[1]
        for block, filters in enumerate(self.filters, start=1):
            prefix = f"{name}_block{block}"
            shortcut = x
            last = len(self.kernel_sizes)
            for index, size in enumerate(self.kernel_sizes, start=1):
                x = layers.Conv1D(filters, capped(size, steps), padding="same",
                                  name=f"{prefix}_conv{index}")(x)
                x = layers.BatchNormalization(momentum=self.momentum, name=f"{prefix}_bn{index}")(x)
                if index < last:
                    x = layers.Activation("relu", name=f"{prefix}_relu{index}")(x)
            if shortcut.shape[-1] != filters:
                shortcut = layers.Conv1D(filters, 1, padding="same", name=f"{prefix}_shortcut_conv")(shortcut)
            shortcut = layers.BatchNormalization(momentum=self.momentum,
                                                 name=f"{prefix}_shortcut_bn")(shortcut)
            x = layers.Add(name=f"{prefix}_add")([shortcut, x])
            x = layers.Activation("relu", name=f"{prefix}_relu")(x)
        return layers.GlobalAveragePooling1D(name=f"{name}_average")(x)
