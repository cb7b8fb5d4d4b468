"""Encoders of sequences (embedded words, time steps): one small class each, registered here.

A text or sequence input's ``encoder`` is one of ``SEQUENCE_ENCODERS``, chosen by ``kind``.
A new encoder is one module in this package and one line below.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from plait.encoders.base import Encoder
from plait.encoders.convolution import ConvolutionEncoder
from plait.encoders.pooling import FlattenEncoder, MeanEncoder
from plait.encoders.recurrent import GRUEncoder, LSTMEncoder

SEQUENCE_ENCODERS: dict[str, type[Encoder]] = {
    cls.model_fields["kind"].default: cls
    for cls in (MeanEncoder, FlattenEncoder, ConvolutionEncoder, LSTMEncoder, GRUEncoder)
}


def encoder_field(default: str) -> Any:
    """The annotation of an ``encoder`` key: one of the registered encoders, by ``kind``
    (``default`` when the key leaves it out)."""

    def with_kind(value: Any) -> Any:
        return {"kind": default, **value} if isinstance(value, dict) else value

    union = Annotated[Union[tuple(SEQUENCE_ENCODERS.values())], Field(discriminator="kind")]  # noqa: UP007
    return Annotated[union, BeforeValidator(with_kind)]


__all__ = ["SEQUENCE_ENCODERS", "Encoder", "encoder_field"]
