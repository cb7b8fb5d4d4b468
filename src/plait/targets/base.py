"""What every output type shares: its config keys and the tower that ends in its layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from plait.schema import Activation, Name, Rate, Strict, Units


@dataclass
class Target:
    """One output's training array and which rows have a usable target value."""

    values: np.ndarray
    present: np.ndarray


class OutputType(Strict):
    """Base of every output type.

    An output reads the shared head by default, or the merge node or input branch named by
    ``from``; its own ``layers`` form a private tower before the final layer. ``weight``
    scales its loss in the total.
    """

    name: Name
    column: str | None = None
    weight: float = Field(default=1.0, ge=0.0)
    reads: Name | None = Field(default=None, alias="from")
    layers: list[Units] = []
    activation: Activation = "relu"
    dropout: Rate = 0.0

    @property
    def source(self) -> str:
        return self.column or self.name

    def describe_use(self) -> str:
        return f"output {self.name!r}"

    def fit(self, table: Any) -> dict:
        raise NotImplementedError

    def encode(self, table: Any, state: dict) -> Target:
        raise NotImplementedError

    def units(self, state: dict) -> int:
        raise NotImplementedError

    def keras_loss(self) -> Any:
        raise NotImplementedError

    def keras_metrics(self) -> list[Any]:
        return []

    def sample_weights(self, target: Target, state: dict) -> np.ndarray | None:
        return None

    def decode(self, predicted: np.ndarray, state: dict) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def score(self, target: Target, predicted: np.ndarray, state: dict) -> dict:
        raise NotImplementedError

    def placeholder_state(self) -> dict:
        raise NotImplementedError

    def head(self, x: Any, state: dict) -> Any:
        from keras import layers

        for index, units in enumerate(self.layers, start=1):
            x = layers.Dense(units, activation=self.activation, name=f"{self.name}_dense_{index}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"{self.name}_dropout_{index}")(x)
        return layers.Dense(self.units(state), activation=self.output_activation(), name=self.name)(x)

    def output_activation(self) -> str:
        raise NotImplementedError
