"""Encoders of sequences (embedded words, time steps): one small class each, registered here.

A text or sequence input's ``encoder`` is one of ``SEQUENCE_ENCODERS``, chosen by ``kind``.
A new encoder is one module in this package and one line below. A ``bag`` counts the
words of text and is refused for other inputs (``TEXT_ONLY``).
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import AfterValidator, BeforeValidator, Field

from plait.encoders.bag import BagEncoder
from plait.encoders.base import Encoder
from plait.encoders.convolution import ConvolutionEncoder
from plait.encoders.inception import InceptionEncoder
from plait.encoders.pooling import FlattenEncoder, MeanEncoder
from plait.encoders.pretrained import PretrainedTextEncoder
from plait.encoders.recurrent import GRUEncoder, LSTMEncoder
from plait.encoders.resnet import ResNetEncoder
from plait.encoders.transformer import TransformerEncoder

SEQUENCE_ENCODERS: dict[str, type[Encoder]] = {
    cls.model_fields["kind"].default: cls
    for cls in (MeanEncoder, FlattenEncoder, ConvolutionEncoder, LSTMEncoder, GRUEncoder,
                InceptionEncoder, ResNetEncoder, TransformerEncoder, BagEncoder,
                PretrainedTextEncoder)
}
TEXT_ONLY = ("bag", "pretrained")
"""Kinds that read the words of a text input, not a sequence of vectors."""


def encoder_field(default: str, words: bool = False) -> Any:
    """The annotation of an ``encoder`` key: one of the registered encoders, by ``kind``
    (``default`` when the key leaves it out); those of ``TEXT_ONLY`` only where the input
    has ``words`` (text)."""

    def with_kind(value: Any) -> Any:
        return {"kind": default, **value} if isinstance(value, dict) else value

    def for_this_input(encoder: Encoder) -> Encoder:
        if encoder.kind in TEXT_ONLY and not words:
            kinds = [repr(kind) for kind in SEQUENCE_ENCODERS if kind not in TEXT_ONLY]
            raise ValueError(f"found kind {encoder.kind!r}, which reads the words of a text input; "
                             f"expected one of {' or '.join(', '.join(kinds).rsplit(', ', 1))}")
        return encoder

    union = Annotated[Union[tuple(SEQUENCE_ENCODERS.values())], Field(discriminator="kind")]  # noqa: UP007
    return Annotated[union, BeforeValidator(with_kind), AfterValidator(for_this_input)]


__all__ = ["SEQUENCE_ENCODERS", "TEXT_ONLY", "Encoder", "encoder_field"]
