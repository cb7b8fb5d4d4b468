"""A transformer encoder trained from scratch, and the attention blocks it shares with the
``attention`` merge."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from plait.encoders.base import Encoder
from plait.schema import Rate, Units

Blocks = Field(default=2, ge=1, le=64)
Heads = Field(default=4, ge=1, le=256)


class TransformerEncoder(Encoder):
    """Each step projected to ``units`` with a ``Dense``, a learned vector added per
    position, then ``blocks`` transformer blocks of ``heads``-head self-attention and a
    feed-forward layer of ``feed_forward`` units (twice ``units`` when not given), then one
    vector per row: the average of the steps, padding left out (``pooling: mean``), or the
    first step (``pooling: first``). Padding words are masked out of attention.

    >>> TransformerEncoder(blocks=1, heads=2, units=16).feed_forward_units
    32
    """

    kind: Literal["transformer"] = "transformer"
    blocks: int = Blocks
    heads: int = Heads
    units: Units = 64
    feed_forward: Units | None = None
    dropout: Rate = 0.1
    pooling: Literal["mean", "first"] = "mean"
    uses_mask: ClassVar[bool] = True

    @model_validator(mode="after")
    def _heads_divide_units(self) -> TransformerEncoder:
        return check_heads(self)

    @property
    def feed_forward_units(self) -> int:
        return self.feed_forward or 2 * self.units

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        from plait.layers.position import PositionEmbedding

        name = f"{name}_transformer"
        x = layers.Dense(self.units, name=f"{name}_project")(x)
        x = PositionEmbedding(name=f"{name}_position")(x)
        if self.dropout:
            x = layers.Dropout(self.dropout, name=f"{name}_dropout")(x)
        x = attention_blocks(x, name, blocks=self.blocks, heads=self.heads, units=self.units,
                             feed_forward=self.feed_forward_units, dropout=self.dropout)
        return pool(x, self.pooling, f"{name}_{self.pooling}")


def check_heads(config: Any) -> Any:
    """``units`` split evenly over the heads (each head reads ``units / heads`` of them)."""
    if config.units % config.heads:
        raise ValueError(f"units: found {config.units} with heads: {config.heads}; expected units "
                         "divisible by heads (each head attends over units / heads of them)")
    return config


def attention_blocks(x: Any, name: str, *, blocks: int, heads: int, units: int, feed_forward: int,
                     dropout: float) -> Any:
    """``blocks`` pre-norm transformer blocks over ``x`` ``(batch, tokens, units)``, then a
    final layer normalisation; a padding mask on ``x`` keeps padding out of attention.

    Normalising before each sub-layer, rather than after the residual sum, keeps training
    stable from scratch without a learning-rate warm-up (as in FT-Transformer)."""
    from keras import layers

    for block in range(1, blocks + 1):
        at = f"{name}_{block}"
        h = layers.LayerNormalization(name=f"{at}_attention_norm")(x)
        h = layers.MultiHeadAttention(heads, units // heads, dropout=dropout, name=f"{at}_attention")(h, h)
        if dropout:
            h = layers.Dropout(dropout, name=f"{at}_attention_dropout")(h)
        x = layers.Add(name=f"{at}_attention_residual")([x, h])
        h = layers.LayerNormalization(name=f"{at}_feed_forward_norm")(x)
        h = layers.Dense(feed_forward, activation="gelu", name=f"{at}_feed_forward_1")(h)
        h = layers.Dense(units, name=f"{at}_feed_forward_2")(h)
        if dropout:
            h = layers.Dropout(dropout, name=f"{at}_feed_forward_dropout")(h)
        x = layers.Add(name=f"{at}_feed_forward_residual")([x, h])
    return layers.LayerNormalization(name=f"{name}_norm")(x)


def pool(x: Any, pooling: str, name: str) -> Any:
    """One vector per row from ``(batch, tokens, units)``: the masked mean or the first token."""
    from keras import layers

    from plait.layers.position import FirstStep

    if pooling == "first":
        return FirstStep(name=name)(x)
    return layers.GlobalAveragePooling1D(name=name)(x)
