"""``text``: free text, tokenized into words, embedded and encoded."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.data import Table, json_labels
from plait.encoders import encoder_field
from plait.encoders.bag import BagEncoder, BagState
from plait.encoders.pooling import MeanEncoder
from plait.encoders.pretrained import dtype_handed_to_encoder, handed_to_encoder
from plait.errors import DataError
from plait.evidence import Column, is_string
from plait.features.base import LABEL_SCHEMA, Encoded, Example, InputType, Recognised, same_values, shares_by
from plait.features.lists import positions
from plait.features.vocabulary import fit_vocabulary, lookup
from plait.schema import FittedState, StateClass

PAD, UNKNOWN = 0, 1
TEXT_WORDS, TEXT_DISTINCT = 2.0, 0.2
PAIRED_WORDS = (16, 200)
"""``plait init`` reads a text column whose rows (95% of them) have more than the first and
at most the second number of words by a bag and a GRU beside it (measured on reviews, 95%
up to 101 words); shorter (titles) and longer ones by the bag alone."""
PAIR_F1, BAG_F1, TFIDF_F1 = 0.9496, 0.9452, 0.9439
"""Test F1 on the reviews' review text alone (examples/reviews/text_alone.py): a GRU beside a
bag, the bag alone, TF-IDF + logistic regression; cited in init's comment."""
"""``plait init`` reads strings as text from this mean number of words and share of distinct values."""


def word_bytes(data: np.ndarray, lowercase: bool) -> np.ndarray:
    """Which UTF-8 bytes belong to words: ASCII letters, digits, ``_`` and ``'``, as RE2's
    ``[\\w']`` (its ``\\w`` is ASCII). Every other byte, each byte of a non-ASCII character
    included, separates words."""
    word = (data - np.uint8(ord("a"))) < 26
    if not lowercase:
        word |= (data - np.uint8(ord("A"))) < 26
    word |= (data - np.uint8(ord("0"))) < 10
    word |= data == ord("_")
    word |= data == ord("'")
    return word


def words(text: pa.ChunkedArray, lowercase: bool) -> pa.Array:
    """Each row's list of word tokens: letters, digits and apostrophes; the rest separates.
    An empty text is one empty token, which no vocabulary holds.

    Words are found on the UTF-8 bytes of the whole column at once with numpy, and cut out
    into one buffer: twice as fast as a regular-expression replace and split in Arrow.

    >>> words(pa.array(["Don't stop-me, NOW!", "", None]), lowercase=True).to_pylist()
    [["don't", 'stop', 'me', 'now'], [''], None]
    """
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    if lowercase:
        text = pc.utf8_lower(text)
    present = pc.is_valid(text).to_numpy(zero_copy_only=False)
    text = pc.fill_null(text, "").cast(pa.large_string())
    _, offset_buffer, data_buffer = text.buffers()
    offsets = np.frombuffer(offset_buffer, np.int64)[text.offset:text.offset + len(text) + 1]
    data = (np.frombuffer(data_buffer, np.uint8)[offsets[0]:offsets[-1]] if data_buffer is not None
            else np.zeros(0, np.uint8))
    offsets = offsets - offsets[0]
    word = word_bytes(data, lowercase)
    starts, ends = word_bounds(word, offsets)
    first = np.searchsorted(starts, offsets)
    per_row = np.diff(first)
    blank = (per_row == 0) & present
    lengths = np.insert(ends - starts, first[:-1][blank], 0)
    token_offsets = np.concatenate([[0], np.cumsum(lengths)])
    wide = token_offsets[-1] >= 2**31
    tokens = pa.Array.from_buffers(
        pa.large_string() if wide else pa.string(), len(lengths),
        [None, pa.py_buffer(token_offsets.astype(np.int64 if wide else np.int32)), pa.py_buffer(data[word])])
    list_offsets = np.concatenate([[0], np.cumsum(per_row + blank)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(list_offsets), tokens,
                                    mask=None if present.all() else pa.array(~present))


def word_bounds(word: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) byte of every run of word bytes; a run that crosses from
    one row into the next is two words."""
    rise = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(rise == 1), np.flatnonzero(rise == -1)
    inner = offsets[(offsets > 0) & (offsets < word.size)]
    crossing = np.unique(inner[word[inner - 1] & word[inner]])
    if crossing.size:
        starts, ends = np.sort(np.concatenate([starts, crossing])), np.sort(np.concatenate([ends, crossing]))
    return starts, ends


class TextState(FittedState):
    """The word vocabulary, most frequent first (word ``i`` encodes as ``i + 2``), and the
    number of tokens per row. With a ``bag`` encoder, ``bag`` holds what it fitted (its
    n-grams), the word vocabulary is empty and ``length`` is the bag's slots per row."""

    vocabulary: list[str]
    length: int = Field(gt=0)
    bag: BagState | None = None


class TextInput(InputType):
    """Free text: a word vocabulary fitted on the training rows, then an encoder.

    ``length`` tokens per row (longer texts are cut, shorter padded; inferred as the 95th
    percentile of training lengths when not given). ``vocabulary_size`` caps the
    embedding rows, two of which are padding and unknown words. An empty text reads as
    one unknown word. Values are read by the rule for labels (a number is its text).

    With ``encoder: {kind: bag}`` the words are not embedded: the text becomes a weighted
    bag of word n-grams read by a linear layer (see ``plait.encoders.bag``).

    >>> TextInput(name="review", length=50, encoder={"kind": "lstm", "units": 16}).encoder.kind
    'lstm'
    >>> TextInput(name="review", encoder={"kind": "bag", "ngrams": 2}).input_dtype
    'float32'
    """

    type: Literal["text"] = "text"
    length: int | None = Field(default=None, gt=0, le=100000)
    vocabulary_size: int = Field(default=20000, gt=2)
    min_frequency: int = Field(default=1, ge=1)
    embedding_dim: int = Field(default=32, gt=0, le=4096)
    lowercase: bool = True
    encoder: encoder_field("mean", words=True) = Field(default_factory=MeanEncoder)  # type: ignore[valid-type]

    State: ClassVar[StateClass] = TextState
    model_keys: ClassVar[frozenset[str]] = InputType.model_keys | {"embedding_dim"}
    accepts: ClassVar[str] = "text (a number is read as its text), or null"
    widget: ClassVar[str] = "textarea"
    recognise_order: ClassVar[int] = 60

    @model_validator(mode="after")
    def _bag_keys(self) -> TextInput:
        found = self.changed(("embedding_dim", "length", "vocabulary_size"))
        if isinstance(self.encoder, BagEncoder) and found:
            raise ValueError(f"found {found}, which a bag encoder does not use (it reads every word and "
                             "embeds none); expected encoder.max_features or encoder.slots instead")
        return self

    @property
    def input_dtype(self) -> str:  # type: ignore[override]
        # a bag's (id, weight) pairs share one float32 array; word ids are integers
        return "float32" if isinstance(self.encoder, BagEncoder) else "int32"

    def fit(self, table: Table) -> TextState:
        text = table.strings(self.source, self.describe_use())
        tokens = words(text, self.lowercase)
        if isinstance(self.encoder, BagEncoder):
            bag = self.encoder.fit_text(tokens, self.min_frequency)
            return TextState(vocabulary=[], length=bag.slots, bag=bag)
        flat = pc.list_flatten(tokens)
        vocabulary = fit_vocabulary(pc.filter(flat, pc.not_equal(flat, "")), self.min_frequency,
                                    self.vocabulary_size - 2)
        length = self.length
        if length is None:
            lengths = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy()
            length = int(min(512, max(1, np.percentile(lengths, 95)))) if lengths.size else 1
        return TextState(vocabulary=vocabulary, length=length)

    def encode(self, table: Table, state: TextState) -> Encoded:
        text = table.strings(self.source, self.describe_use())
        tokens = words(text, self.lowercase)
        if isinstance(self.encoder, BagEncoder):
            values, unseen = self.encoder.encode_text(tokens, self.bag_state(state))
            return Encoded(values, pc.is_null(text).to_numpy(zero_copy_only=False), unseen)
        rows, length = len(tokens), state.length
        owner = pc.list_parent_indices(tokens).to_numpy()
        flat = pc.list_flatten(tokens)
        ids = lookup(flat, state.vocabulary, offset=2)
        unseen = ids == 0
        ids[unseen] = UNKNOWN
        unseen &= pc.binary_length(flat).to_numpy() > 0
        position = positions(owner, rows)
        kept = position < length
        out = np.zeros((rows, length), np.int32)
        out.reshape(-1)[owner[kept] * length + position[kept]] = ids[kept]
        out[out[:, 0] == PAD, 0] = UNKNOWN
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        return Encoded(out, missing, int(np.count_nonzero(unseen)))

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_labels(values, field)

    def field_schema(self) -> dict[str, Any]:
        return LABEL_SCHEMA

    def bag_state(self, state: TextState) -> BagState:
        if state.bag is None:
            raise DataError(f"input {self.name!r}: its fitted state has no n-grams; expected the state "
                            "of a bag encoder (fit again with this config)")
        return state.bag

    def schema_details(self, state: TextState) -> dict[str, Any]:
        if isinstance(self.encoder, BagEncoder):
            bag = self.bag_state(state)
            return {"slots": bag.slots, "ngrams": self.encoder.ngrams, "vocabulary_size": len(bag.vocabulary),
                    "hash_buckets": bag.buckets, "lowercase": self.lowercase}
        return {"length": state.length, "vocabulary_size": len(state.vocabulary) + 2,
                "lowercase": self.lowercase}

    def input_shape(self, state: TextState) -> tuple[int, ...]:
        if isinstance(self.encoder, BagEncoder):
            return (self.bag_state(state).slots, 2)
        return (state.length,)

    def placeholder_state(self) -> TextState:
        if isinstance(self.encoder, BagEncoder):
            bag = self.encoder.placeholder(self.min_frequency)
            return TextState(vocabulary=[], length=bag.slots, bag=bag)
        return TextState(vocabulary=[f"word_{i}" for i in range(self.vocabulary_size - 2)],
                         length=self.length or 100)

    def encoding_layers(self, x: Any, state: TextState) -> Any:
        from keras import layers

        if isinstance(self.encoder, BagEncoder):
            return self.encoder.bag_layers(x, self.bag_state(state), self.name)
        slots = len(state.vocabulary) + 2
        x = layers.Embedding(slots, self.embedding_dim, mask_zero=self.encoder.uses_mask,
                             name=f"{self.name}_embedding")(x)
        return self.encoder.apply(self.embedded(x), self.name)

    def neutral(self, state: TextState) -> np.ndarray:
        """An empty text: one unknown word followed by padding (a bag: no n-gram at all)."""
        tokens = np.zeros(self.input_shape(state))
        if isinstance(self.encoder, BagEncoder):
            return tokens
        tokens[0] = UNKNOWN
        return tokens

    def attribution_baseline(self, values: np.ndarray, state: TextState) -> np.ndarray:
        """A bag's n-grams, each with weight 0 (an id has no gradient; its weight does)."""
        if isinstance(self.encoder, BagEncoder):
            baseline = values.copy()
            baseline[..., 1] = 0.0
            return baseline
        return super().attribution_baseline(values, state)

    def attribution_scale_start(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Padding stays as it is (only the words vanish), so an encoder that reads padding
        credits no word with it."""
        return np.broadcast_to((values == PAD)[..., None], (len(values), *shape)).astype(np.float32)

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table,
                   state: TextState) -> dict | None:
        """Per word of the row, in order: its embedding's share; under a bag, the shares of
        the n-grams it is part of, each n-gram's split evenly over its occurrences and words.

        >>> state = TextState(vocabulary=["good", "fit"], length=3)
        >>> text = TextInput(name="t", length=3, encoder={"kind": "gru"})
        >>> shares = np.array([[0.5, 0.25], [-0.5, 0.0], [0.0, 0.0]])
        >>> text.attributed(shares, np.array([2, 1, 0]), Table(pa.table({"t": ["Good FAB"]})), state)
        {'kind': 'words', 'units': [['Good', 0.75], ['FAB', -0.5]]}
        """
        if getattr(self.encoder, "embeds_column", False):
            return None
        text = table.strings(self.source, self.describe_use())
        shown = [word for word in words(text, lowercase=False)[0].as_py() or [] if word] or [""]
        if isinstance(self.encoder, BagEncoder):
            tokens = [word for word in words(text, self.lowercase)[0].as_py() or [] if word]
            per_word = self.encoder.word_shares(tokens, values[:, 0].astype(np.int64), shares.sum(axis=-1),
                                                self.bag_state(state))
        else:
            per_word = shares.reshape(len(shares), -1).sum(axis=1)[:min(len(shown), state.length)]
        return shares_by("words", shown, per_word)

    def describe_array(self, state: TextState, fitted: bool) -> str:
        if isinstance(self.encoder, BagEncoder):
            return self.encoder.describe(self.bag_state(state))
        return "word ids (0: padding, 1: unknown word, then the fitted vocabulary)"

    @classmethod
    def examples(cls) -> list[Example]:
        """Text, with an empty text, a missing one and unseen words (the last); numbers as
        their text; the first texts again as a bag of n-grams with hash buckets."""
        texts = ["A good fit!", "too small", None, "", "fine fabric, good fit", "brand new words"]
        return [
            same_values({"type": "text", "length": 4}, "a", pa.array(texts), texts),
            same_values({"type": "text", "length": 2, "encoder": {"kind": "cnn", "kernel_size": 2}}, "a",
                        pa.array([1.0, 2.5, None, 3.0]), [1, 2.5, None, 3]),
            same_values({"type": "text", "encoder": {"kind": "bag", "units": 2, "hash_buckets": 4}}, "a",
                        pa.array(texts), texts),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Strings of 2 or more words on average, 20% or more of them distinct."""
        if not is_string(column.values.type):
            return None
        strings = column.values.cast(pa.string())
        counts = pc.list_value_length(pc.utf8_split_whitespace(strings)).to_numpy(zero_copy_only=False)
        mean_words = float(counts.mean())
        if mean_words < TEXT_WORDS or column.distinct < TEXT_DISTINCT * column.count:
            return None
        longest = float(np.percentile(counts, 95))
        facts = f"{column.of}; text, mean {mean_words:.0f} words, 95% up to {longest:.0f}{column.gaps}"
        bag = {"type": "text", "encoder": {"kind": "bag", "ngrams": 2}}
        if not PAIRED_WORDS[0] < longest <= PAIRED_WORDS[1]:
            why = ("a few words are nearly all n-grams" if longest <= PAIRED_WORDS[0] else
                   f"over {PAIRED_WORDS[1]} words one costs much")
            return Recognised(bag, f"{facts}; read as a TF-IDF bag of word 1-2-grams, which on held-out "
                              "reviews matched TF-IDF + logistic regression (no recurrent encoder beside "
                              f"it: {why}, and it was not measured there)")
        return Recognised(bag, f"{facts}; read as a TF-IDF bag of word 1-2-grams (the wide path) and, "
                          "below, in order by a GRU", beside=[Recognised(
                              {"type": "text", "length": 8 * math.ceil(longest / 8), "min_frequency": 2,
                               "embedding_dim": 64, "encoder": {"kind": "gru", "units": 64,
                                                                "bidirectional": True}, "dropout": 0.4},
                              f"the same text in word order, by a bidirectional GRU beside the bag above: on "
                              f"held-out reviews the pair reached test F1 {PAIR_F1}, the bag alone {BAG_F1}, "
                              f"TF-IDF + logistic regression {TFIDF_F1}", suffix="_gru")])

    # -- pretrained encoders: `encoder: {kind: pretrained}` embeds the text itself, before the
    # model (plait.encoders.pretrained); these methods are then the encoder's -----------------
    (fit, encode, load_state, placeholder_state, input_shape, encoding_layers, neutral, schema_details,
     describe_array) = handed_to_encoder(fit, encode, InputType.load_state, placeholder_state, input_shape,
                                         encoding_layers, neutral, schema_details, describe_array)
    input_dtype = dtype_handed_to_encoder(input_dtype)
