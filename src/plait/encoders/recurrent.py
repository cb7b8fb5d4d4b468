"""Recurrent encoders: an LSTM or a GRU, reading one way or both."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from plait.encoders.base import Encoder
from plait.schema import Units


class RecurrentEncoder(Encoder):
    """A recurrent layer of ``units``; its last state is the encoding. ``bidirectional``
    reads the sequence both ways and joins the two states."""

    units: Units = 32
    bidirectional: bool = False
    uses_mask: ClassVar[bool] = True

    def cell(self) -> Any:
        raise NotImplementedError

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        if self.bidirectional:
            return layers.Bidirectional(self.cell()(self.units), name=f"{name}_bi{self.kind}")(x)
        return self.cell()(self.units, name=f"{name}_{self.kind}")(x)


class LSTMEncoder(RecurrentEncoder):
    """>>> LSTMEncoder(units=16, bidirectional=True).kind
    'lstm'
    """

    kind: Literal["lstm"] = "lstm"

    def cell(self) -> Any:
        from keras import layers

        return layers.LSTM


class GRUEncoder(RecurrentEncoder):
    """>>> GRUEncoder(units=16).kind
    'gru'
    """

    kind: Literal["gru"] = "gru"

    def cell(self) -> Any:
        from keras import layers

        return layers.GRU
