"""What every output type shares: its config keys and the tower that ends in its layer.

An output type is one class. It owns its config keys, its fitted state (a ``State``
model), how a target column is encoded and a prediction decoded into columns, its loss and
metrics, its entry in the server's schema, its plots and notes in the report, and any
choice made on the validation rows (``choose``, which returns a new state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from plait.data import Table
from plait.schema import Activation, FittedState, Name, Rate, StateClass, Strict, Units


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

    State: ClassVar[StateClass] = FittedState
    importance_metric: ClassVar[str]
    """The metric ``explain`` measures drops of."""
    metric_names: ClassVar[tuple[str, ...]]
    """The single-number metrics ``score`` reports (``plait tune`` may optimise any)."""
    stratifies: ClassVar[bool] = False
    """Whether a validation split keeps each of this output's labels in proportion."""

    @property
    def source(self) -> str:
        return self.column or self.name

    def source_columns(self) -> list[str]:
        """The columns the target is read from (one, unless the type reads several)."""
        return [self.source]

    def describe_use(self) -> str:
        return f"output {self.name!r}"

    def fit(self, table: Table) -> FittedState:
        raise NotImplementedError

    def encode(self, table: Table, state: Any) -> Target:
        raise NotImplementedError

    def load_state(self, raw: Any) -> FittedState:
        """The fitted state from its JSON form; a ValidationError names the bad field."""
        return self.State.model_validate(raw)

    def placeholder_state(self) -> FittedState:
        raise NotImplementedError

    def strata(self, table: Table) -> np.ndarray | None:
        """Each row's label, for a stratified split; None when this output has no classes."""
        if not self.stratifies:
            return None
        labels = table.strings(self.source, self.describe_use())
        return np.asarray(labels.fill_null("\x00missing").to_numpy(zero_copy_only=False))

    # -- the model --------------------------------------------------------------------------

    def units(self, state: Any) -> int:
        raise NotImplementedError

    def keras_loss(self) -> Any:
        raise NotImplementedError

    def keras_metrics(self) -> list[Any]:
        return []

    def sample_weights(self, target: Target, state: Any) -> np.ndarray | None:
        return None

    def head(self, x: Any, state: Any) -> Any:
        from keras import layers

        for index, units in enumerate(self.layers, start=1):
            x = layers.Dense(units, activation=self.activation, name=f"{self.name}_dense_{index}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"{self.name}_dropout_{index}")(x)
        return layers.Dense(self.units(state), activation=self.output_activation(), name=self.name)(x)

    def output_activation(self) -> str:
        raise NotImplementedError

    def describe_units(self, state: Any) -> str:
        """What the final layer's units hold, in words, for ``plait code``."""
        raise NotImplementedError

    # -- predictions and scores -------------------------------------------------------------

    def decode(self, predicted: np.ndarray, state: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def prediction_columns(self, state: Any) -> list[str]:
        """The columns ``decode`` gives, in order."""
        return [self.name]

    def probability_columns(self, state: Any) -> list[tuple[str, str]]:
        """(label, column) for each column that holds a label's probability."""
        return []

    def schema(self, state: Any) -> dict[str, Any]:
        """This output as a client sees it in ``/v1/schema``; ``bars`` are the probabilities
        the serving page draws."""
        return {"name": self.name, "type": self.type, "columns": self.prediction_columns(state),
                "bars": [list(pair) for pair in self.probability_columns(state)]}

    def choose(self, target: Target, predicted: np.ndarray, state: Any) -> FittedState:
        """The state after the choices made on validation rows (a decision threshold); the
        same state when there is nothing to choose."""
        return state

    def score(self, target: Target, predicted: np.ndarray, state: Any) -> dict:
        raise NotImplementedError

    def plots(self, scores: dict, source: str) -> dict[str, bytes]:
        """The report's plots of these scores, PNG bytes by file name."""
        return {}

    def notes(self, scores: dict) -> list[str]:
        """Sentences the report shows under this output's metrics."""
        return []

    def tables(self, scores: dict) -> list[tuple[list[str], list[list[Any]]]]:
        """Tables the report shows under this output's metrics: headings and rows."""
        return []
