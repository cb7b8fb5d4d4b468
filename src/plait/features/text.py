"""``text``: free text, tokenized into words with Arrow kernels, embedded and encoded."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plait.features.base import Encoded, InputType
from plait.features.encoders import SequenceEncoder
from plait.features.lists import positions
from plait.features.vocabulary import fit_vocabulary, lookup

PAD, UNKNOWN = 0, 1


def words(text: pa.ChunkedArray, lowercase: bool) -> pa.Array:
    """Each row's list of word tokens: letters, digits and apostrophes; the rest separates.
    An empty text is one empty token, which no vocabulary holds."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    if lowercase:
        text = pc.utf8_lower(text)
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"[^\w']+", " "))
    return pc.utf8_split_whitespace(spaced)


class TextInput(InputType):
    """Free text: a word vocabulary fitted on the training rows, then an encoder.

    ``length`` tokens per row (longer texts are cut, shorter padded; inferred as the 95th
    percentile of training lengths when not given). ``vocabulary_size`` caps the
    embedding rows, two of which are padding and unknown words. An empty text reads as
    one unknown word.

    >>> TextInput(name="review", length=50, encoder={"kind": "lstm", "units": 16}).encoder.kind
    'lstm'
    """

    type: Literal["text"] = "text"
    length: int | None = Field(default=None, gt=0, le=100000)
    vocabulary_size: int = Field(default=20000, gt=2)
    min_frequency: int = Field(default=1, ge=1)
    embedding_dim: int = Field(default=32, gt=0, le=4096)
    lowercase: bool = True
    encoder: SequenceEncoder = Field(default_factory=SequenceEncoder)

    input_dtype = "int32"

    def fit(self, table: Any) -> dict:
        text = table.strings(self.source, self.describe_use())
        tokens = words(text, self.lowercase)
        flat = pc.list_flatten(tokens)
        vocabulary = fit_vocabulary(pc.filter(flat, pc.not_equal(flat, "")), self.min_frequency,
                                    self.vocabulary_size - 2)
        length = self.length
        if length is None:
            lengths = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy()
            length = int(min(512, max(1, np.percentile(lengths, 95)))) if lengths.size else 1
        return {"vocabulary": vocabulary, "length": length}

    def encode(self, table: Any, state: dict) -> Encoded:
        text = table.strings(self.source, self.describe_use())
        tokens = words(text, self.lowercase)
        rows, length = len(tokens), state["length"]
        owner = pc.list_parent_indices(tokens).to_numpy()
        flat = pc.list_flatten(tokens)
        ids = lookup(flat, state["vocabulary"], offset=2)
        unseen = ids == 0
        ids[unseen] = UNKNOWN
        unseen &= pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        position = positions(owner, rows)
        kept = position < length
        out = np.zeros((rows, length), np.int32)
        out[owner[kept], position[kept]] = ids[kept]
        out[out[:, 0] == PAD, 0] = UNKNOWN
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        return Encoded(out, missing, int(np.count_nonzero(unseen)))

    def input_shape(self, state: dict) -> tuple[int, ...]:
        return (state["length"],)

    def placeholder_state(self) -> dict:
        return {"vocabulary": [f"word_{i}" for i in range(self.vocabulary_size - 2)],
                "length": self.length or 100}

    def encoding_layers(self, x: Any, state: dict) -> Any:
        from keras import layers

        slots = len(state["vocabulary"]) + 2
        x = layers.Embedding(slots, self.embedding_dim, mask_zero=self.encoder.uses_mask,
                             name=f"{self.name}_embedding")(x)
        return self.encoder.apply(x, self.name)
