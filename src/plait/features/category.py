"""``category``: strings or integers from a fitted vocabulary, embedded or one-hot."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.features.base import Encoded, InputType
from plait.features.vocabulary import fit_vocabulary, lookup


class CategoryInput(InputType):
    """A categorical column; index 0 is the slot for unseen and missing values.

    ``min_frequency`` drops rare values into that slot; ``max_categories`` keeps the most
    frequent ones. ``encoding`` is ``embedding`` (of ``embedding_dim``, by default a size
    growing with the vocabulary) or ``onehot``.

    >>> CategoryInput(name="department", embedding_dim=8).embedding_size(10)
    8
    """

    type: Literal["category"] = "category"
    encoding: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int | None = Field(default=None, gt=0, le=4096)
    min_frequency: int = Field(default=1, ge=1)
    max_categories: int | None = Field(default=None, gt=0)

    input_dtype = "int32"

    @model_validator(mode="after")
    def _one_encoding(self) -> CategoryInput:
        if self.encoding == "onehot" and self.embedding_dim is not None:
            raise ValueError(f"embedding_dim is {self.embedding_dim} but encoding is 'onehot', which "
                             "has no embedding; remove embedding_dim, or set encoding: embedding")
        return self

    def fit(self, table: Any) -> dict:
        strings = table.strings(self.source, self.describe_use())
        return {"vocabulary": fit_vocabulary(strings, self.min_frequency, self.max_categories)}

    def encode(self, table: Any, state: dict) -> Encoded:
        strings = table.strings(self.source, self.describe_use())
        index = lookup(strings, state["vocabulary"], offset=1)
        missing = pc.is_null(strings).to_numpy(zero_copy_only=False)
        unseen = int(np.count_nonzero((index == 0) & ~missing))
        return Encoded(index.reshape(-1, 1), missing, unseen)

    def input_shape(self, state: dict) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> dict:
        size = self.max_categories or 10
        return {"vocabulary": [f"value_{i}" for i in range(size)]}

    def embedding_size(self, slots: int) -> int:
        return self.embedding_dim or min(32, max(2, round(1.6 * math.pow(slots, 0.56))))

    def encoding_layers(self, x: Any, state: dict) -> Any:
        from keras import layers

        slots = len(state["vocabulary"]) + 1
        if self.encoding == "onehot":
            x = layers.Flatten(name=f"{self.name}_flatten")(x)
            return layers.CategoryEncoding(slots, output_mode="one_hot", name=f"{self.name}_onehot")(x)
        x = layers.Embedding(slots, self.embedding_size(slots), name=f"{self.name}_embedding")(x)
        return layers.Flatten(name=f"{self.name}_flatten")(x)
