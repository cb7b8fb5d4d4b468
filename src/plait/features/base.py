"""What every input type shares: its config keys, the dense layers closing its branch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from plait.schema import Activation, MissingPolicy, Name, Rate, Strict, Units


@dataclass
class Encoded:
    """One input's model-ready array, the rows whose value was missing, the unseen count."""

    values: np.ndarray
    missing: np.ndarray
    unseen: int = 0
    notes: dict[str, int] = field(default_factory=dict)


class InputType(Strict):
    """Base of every input type.

    Subclasses set ``type`` (a Literal), implement ``fit``, ``encode``, ``input_shape`` and
    ``encoding_layers``; the base adds the branch's own dense ``layers`` after the encoder.

    ``optional: true`` gives the model a second input, ``<name>_mask`` (1 where the value is
    present, 0 where it is missing), and multiplies the branch by it, so an absent value
    contributes nothing. Missing rows are kept (with ``missing: fill``) and their mask is 0.
    """

    name: Name
    column: str | None = None
    missing: MissingPolicy = "fill"
    optional: bool = False
    layers: list[Units] = []
    activation: Activation = "relu"
    dropout: Rate = 0.0

    input_dtype: ClassVar[str] = "float32"

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def mask_name(self) -> str:
        """The model input that says, per row, whether this (optional) input is present."""
        return f"{self.name}_mask"

    def source_columns(self) -> list[str]:
        return [self.source]

    def describe_use(self) -> str:
        return f"input {self.name!r}"

    def fit(self, table: Any) -> dict:
        raise NotImplementedError

    def encode(self, table: Any, state: dict) -> Encoded:
        raise NotImplementedError

    def input_shape(self, state: dict) -> tuple[int, ...]:
        raise NotImplementedError

    def placeholder_state(self) -> dict:
        """A state with the shapes the config declares, for describing a model before fitting."""
        raise NotImplementedError

    def encoding_layers(self, x: Any, state: dict) -> Any:
        raise NotImplementedError

    def branch(self, x: Any, state: dict) -> Any:
        from keras import layers

        x = self.encoding_layers(x, state)
        for index, units in enumerate(self.layers, start=1):
            x = layers.Dense(units, activation=self.activation, name=f"{self.name}_dense_{index}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"{self.name}_dropout_{index}")(x)
        return x
