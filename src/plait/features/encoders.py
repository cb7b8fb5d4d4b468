"""Encoders that turn a sequence of vectors (embedded words, time steps) into one vector."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plait.schema import Strict, Units


class SequenceEncoder(Strict):
    """How a branch reads a sequence.

    ``kind``: ``mean`` (masked average), ``cnn`` (1-D convolution then global max pooling),
    ``lstm`` or ``gru`` (``bidirectional`` to read both ways), or ``flatten``.

    >>> SequenceEncoder(kind="gru", units=16, bidirectional=True).kind
    'gru'
    """

    kind: Literal["mean", "cnn", "lstm", "gru", "flatten"] = "mean"
    units: Units = 32
    bidirectional: bool = False
    filters: Units = 64
    kernel_size: int = Field(default=5, gt=0, le=64)

    @property
    def uses_mask(self) -> bool:
        return self.kind in ("mean", "lstm", "gru")

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        if self.kind == "mean":
            return layers.GlobalAveragePooling1D(name=f"{name}_mean")(x)
        if self.kind == "flatten":
            return layers.Flatten(name=f"{name}_flatten")(x)
        if self.kind == "cnn":
            x = layers.Conv1D(self.filters, self.kernel_size, activation="relu",
                              padding="same", name=f"{name}_conv")(x)
            return layers.GlobalMaxPooling1D(name=f"{name}_max")(x)
        cell = layers.LSTM if self.kind == "lstm" else layers.GRU
        if self.bidirectional:
            return layers.Bidirectional(cell(self.units), name=f"{name}_bi{self.kind}")(x)
        return cell(self.units, name=f"{name}_{self.kind}")(x)
