"""InceptionTime (Ismail Fawaz et al., 2020): stacked inception modules over the steps.

Each module narrows its input with a bottleneck, reads it with convolutions of several
widths side by side and with a max-pooling path, and joins them; every third module adds
a shortcut from the last shortcut's end. Global average pooling gives one vector per row.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from plait.encoders.base import Encoder
from plait.schema import Units

KernelSize = Annotated[int, Field(gt=0, le=4096)]
Momentum = Annotated[float, Field(ge=0.0, lt=1.0)]
MOMENTUM = 0.9
"""Batch normalisation's momentum for its moving statistics, which predictions use. Keras's
0.99 needs hundreds of steps to follow the weights, more than a small series set gives in a
short run (GunPoint: 3 steps an epoch): predictions on held-out cases then flipped between
epochs while the training loss stayed near 0. 0.9 is PyTorch's default (its 0.1). In a
5-fold cross-validation on GunPoint's TRAIN cases (InceptionTime, 250 epochs, early
stopping on a validation split) held-out accuracy was 1.0 in every fold with 0.9, 0.81 on
average with 0.99."""


def capped(kernel_size: int, steps: int | None) -> int:
    """A kernel no wider than the series: with ``same`` padding a wider one only reads
    padding, at the cost of weights that never see data.

    >>> capped(40, 24), capped(10, 24), capped(8, None)
    (24, 10, 8)
    """
    return kernel_size if steps is None else max(1, min(kernel_size, steps))


class InceptionEncoder(Encoder):
    """``depth`` inception modules, each: a ``bottleneck`` 1×1 convolution (when its input
    has more than one channel; ``bottleneck: 0`` leaves it out), ``filters`` convolutions of
    each width in ``kernel_sizes`` (capped at the steps) and a max-pooling path, joined, batch
    normalised, ReLU; with ``residual``, a shortcut (1×1 convolution and batch normalisation)
    added every third module; then the average over the steps. The defaults are the
    published network: 6 modules of 4 × 32 channels, widths 40, 20 and 10. ``momentum`` is
    batch normalisation's, for its moving statistics (0.9; see ``MOMENTUM``).

    >>> encoder = InceptionEncoder(depth=3, kernel_sizes=[9, 5, 3])
    >>> encoder.kind, encoder.filters, encoder.residual
    ('inception', 32, True)
    """

    kind: Literal["inception"] = "inception"
    filters: Units = 32
    depth: int = Field(default=6, gt=0, le=64)
    kernel_sizes: list[KernelSize] = Field(default=[40, 20, 10], min_length=1, max_length=8)
    bottleneck: int = Field(default=32, ge=0, le=65536)
    residual: bool = True
    momentum: Momentum = MOMENTUM

    def module(self, x: Any, name: str) -> Any:
        """One inception module; its layers are named ``name`` + ``_…``."""
        from keras import layers

        steps = x.shape[1]
        narrowed = x
        if self.bottleneck and x.shape[-1] > 1:
            narrowed = layers.Conv1D(self.bottleneck, 1, padding="same", use_bias=False,
                                     name=f"{name}_bottleneck")(x)
        paths = [layers.Conv1D(self.filters, capped(size, steps), padding="same", use_bias=False,
                               name=f"{name}_conv{index}")(narrowed)
                 for index, size in enumerate(self.kernel_sizes, start=1)]
        pooled = layers.MaxPooling1D(3, strides=1, padding="same", name=f"{name}_pool")(x)
        paths.append(layers.Conv1D(self.filters, 1, padding="same", use_bias=False,
                                   name=f"{name}_pool_conv")(pooled))
        x = layers.Concatenate(name=f"{name}_concat")(paths)
        x = layers.BatchNormalization(momentum=self.momentum, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        shortcut_from = x
        for index in range(1, self.depth + 1):
            x = self.module(x, f"{name}_inception{index}")
            if self.residual and index % 3 == 0:
                shortcut = layers.Conv1D(x.shape[-1], 1, padding="same", use_bias=False,
                                         name=f"{name}_shortcut{index}_conv")(shortcut_from)
                shortcut = layers.BatchNormalization(momentum=self.momentum,
                                                     name=f"{name}_shortcut{index}_bn")(shortcut)
                x = layers.Add(name=f"{name}_shortcut{index}_add")([shortcut, x])
                x = layers.Activation("relu", name=f"{name}_shortcut{index}_relu")(x)
                shortcut_from = x
        return layers.GlobalAveragePooling1D(name=f"{name}_average")(x)
