"""``set``: tags, a set of labels per row, from a list column or a delimited text.

The tags of a row are read the same way for files and requests (``read_tags``): a list
column's items, or a text split on the separator; each tag trimmed of spaces, empty ones
dropped; numbers and booleans are their label text. The ``set`` output reads its labels
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.data import Table, is_list, json_labels, labels, refused
from plait.evidence import Column, is_string, show
from plait.features.base import Encoded, Example, InputType, Recognised, same_values, shares_by
from plait.features.lists import positions
from plait.features.vocabulary import fit_vocabulary, lookup
from plait.schema import FittedState, StateClass

PAD, UNSEEN = 0, 1
LONGEST = 512
"""The default ``length`` is at most this many tags."""
LISTED = 10
"""A vocabulary up to this size is written out in ``plait code``'s comments."""
TAGS_EXPECTED = "a list of tags (text, numbers or true/false) or a text of tags separated by {separator!r}"


@dataclass
class Tags:
    """Each row's tags, flattened: the tags, the row of each (in row order), and which rows
    were missing (null)."""

    values: pa.Array
    owner: np.ndarray
    missing: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.missing)

    def distinct(self) -> tuple[pa.Array, np.ndarray]:
        """Each (row, tag) pair once: a set holds a tag once, however often it is written."""
        encoded = pc.dictionary_encode(self.values)
        size = max(1, len(encoded.dictionary))
        pairs = distinct(self.owner * size + encoded.indices.to_numpy().astype(np.int64))
        return encoded.dictionary.take(pa.array(pairs % size)), pairs // size


def distinct(codes: np.ndarray) -> np.ndarray:
    """The distinct codes in increasing order, as ``np.unique`` gives them, by one sort
    (``np.unique`` hashes integers: several times slower on a batch's (row, tag) codes).

    >>> distinct(np.array([5, 2, 5])).tolist()
    [2, 5]
    """
    ordered = np.sort(codes)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if ordered.size else ordered


def read_tags(table: Table, column: str, used_by: str, separator: str) -> Tags:
    """The tags of every row of ``column``: list items, or text split on ``separator``.

    >>> tags = read_tags(Table(pa.table({"t": ["a| b||a", None, ""]})), "t", "input 't'", "|")
    >>> tags.values.to_pylist(), tags.owner.tolist(), tags.missing.tolist()
    (['a', 'b', 'a'], [0, 0, 0], [False, True, False])
    """
    values = table.column(column, used_by)
    if pa.types.is_null(values.type):
        return Tags(pa.array([], pa.string()), np.zeros(0, np.int64), np.ones(len(values), bool))
    if is_list(values.type):
        lists = values.combine_chunks()
        leaf = lists.type.value_type
        if pa.types.is_nested(leaf) or pa.types.is_binary(leaf) or pa.types.is_large_binary(leaf):
            raise table.wrong_type(column, values, TAGS_EXPECTED.format(separator=separator))
        items = labels(pc.list_flatten(lists)).combine_chunks()
    else:
        strings = table.strings(column, used_by)
        lists = pc.split_pattern(strings, separator).combine_chunks()
        items = pc.list_flatten(lists)
    missing = pc.is_null(lists).to_numpy(zero_copy_only=False)
    owner = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    items = pc.utf8_trim_whitespace(items.cast(pa.string()))
    kept = pc.fill_null(pc.greater(pc.utf8_length(items), 0), False)
    return Tags(items.filter(kept), owner[kept.to_numpy(zero_copy_only=False)], missing)


def json_tags(values: list[Any], field: str, separator: str) -> pa.Array:
    """JSON values of one field as the list column ``read_tags`` reads: a list's items by the
    rule for labels, and a text (or number, or boolean) split on ``separator`` by the same
    Arrow kernel a file's text is split with.

    >>> json_tags([["a", 2], "b|c", None, True], "t", "|").to_pylist()
    [['a', '2'], ['b', 'c'], None, ['true']]
    """
    lists: list[list[str | None] | None] = [None] * len(values)
    scalars: list[int] = []
    for row, value in enumerate(values):
        if isinstance(value, list):
            if any(isinstance(item, (list, dict)) for item in value):
                raise refused(row, field, value, TAGS_EXPECTED.format(separator=separator))
            lists[row] = json_labels(value, field).to_pylist()
        elif isinstance(value, dict):
            raise refused(row, field, value, TAGS_EXPECTED.format(separator=separator) + ", or null")
        elif value is not None:
            scalars.append(row)
    if scalars:
        texts = json_labels([values[row] for row in scalars], field)
        for row, pieces in zip(scalars, pc.split_pattern(texts, separator).to_pylist(), strict=True):
            lists[row] = pieces
    return pa.array(lists, pa.list_(pa.string()))


class SetState(FittedState):
    """The known tags, most frequent first (tag ``i`` is id ``i + 2``, and multi-hot slot
    ``i + 1``), and the number of tag ids per row (``embedding``)."""

    vocabulary: list[str]
    length: int = Field(gt=0)


class SetInput(InputType):
    """Tags: a set of labels per row, from a list column (``list<string>``) or a text of tags
    separated by ``separator`` (``"a|b"``). Tags are trimmed of spaces, empty ones dropped,
    each counted once per row; numbers and booleans are read as labels.

    A vocabulary of tags is fitted on the training rows (``min_frequency``, ``max_size``);
    other tags share one unseen slot. ``encoding: embedding`` (the default) gives each row's
    distinct tag ids (0 padding, 1 unseen, then the vocabulary; the most frequent tags first,
    ``length`` of them: by default the 95th percentile of tags per training row), read by
    the masked mean of their embeddings (``embedding_dim``). ``encoding: multi_hot`` gives a
    0/1 vector over the vocabulary, with one more slot, first, for unseen tags. A row with no
    tag (an empty list or text) encodes as a missing one does: one unseen id, or no slot set.

    >>> tags = SetInput(name="tags", length=3)
    >>> table = Table(pa.table({"tags": ["red|blue", "blue", "green| red |red", None]}))
    >>> state = tags.fit(table)
    >>> state.vocabulary
    ['blue', 'red', 'green']
    >>> tags.encode(table, state).values.tolist()
    [[2, 3, 0], [2, 0, 0], [3, 4, 0], [1, 0, 0]]
    >>> SetInput(name="tags", encoding="multi_hot").encode(table, state).values.tolist()[2]
    [0.0, 0.0, 1.0, 1.0]
    """

    type: Literal["set"] = "set"
    separator: str = Field(default="|", min_length=1)
    encoding: Literal["embedding", "multi_hot"] = "embedding"
    embedding_dim: int = Field(default=16, gt=0, le=4096)
    length: int | None = Field(default=None, gt=0, le=100000)
    min_frequency: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, gt=0)

    State: ClassVar[StateClass] = SetState
    model_keys: ClassVar[frozenset[str]] = InputType.model_keys | {"embedding_dim"}
    widget: ClassVar[str] = "text"
    recognise_order: ClassVar[int] = 45  # after sequence and vector, which take lists of numbers

    @model_validator(mode="after")
    def _embedding_keys(self) -> SetInput:
        found = self.changed(("embedding_dim", "length"))
        if self.encoding == "multi_hot" and found:
            raise ValueError(f"found {found}, which encoding 'multi_hot' does not use (it sets one slot "
                             "per tag, for every tag of the row); remove it, or set encoding: embedding")
        return self

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return f"{TAGS_EXPECTED.format(separator=self.separator)}, or null"

    @property
    def input_dtype(self) -> str:  # type: ignore[override]
        return "int32" if self.encoding == "embedding" else "float32"

    def tags(self, table: Table) -> Tags:
        return read_tags(table, self.source, self.describe_use(), self.separator)

    def fit(self, table: Table) -> SetState:
        tags = self.tags(table)
        distinct, owner = tags.distinct()
        vocabulary = fit_vocabulary(distinct, self.min_frequency, self.max_size)
        length = self.length
        if length is None:
            per_row = np.bincount(owner, minlength=tags.rows)[~tags.missing]
            length = int(min(LONGEST, max(1, np.percentile(per_row, 95)))) if per_row.size else 1
        return SetState(vocabulary=vocabulary, length=length)

    def encode(self, table: Table, state: SetState) -> Encoded:
        tags = self.tags(table)
        ids = lookup(tags.values, state.vocabulary, offset=2)
        unseen = int(np.count_nonzero(ids == 0))
        ids[ids == 0] = UNSEEN
        if self.encoding == "multi_hot":
            values = np.zeros((tags.rows, len(state.vocabulary) + 1), np.float32)
            values[tags.owner, ids - 1] = 1.0
        else:
            values = self.padded_ids(ids, tags.owner, tags.rows, state)
        return Encoded(values, tags.missing, unseen)

    def padded_ids(self, ids: np.ndarray, owner: np.ndarray, rows: int, state: SetState) -> np.ndarray:
        """Each row's distinct ids in ``length`` places: known tags first, most frequent first
        (so the order a set is written in never matters, and a cut keeps the common tags),
        then the unseen id; padding after them. A row without tags holds one unseen id: a
        masked mean of nothing would be undefined."""
        last = len(state.vocabulary) + 2
        rank = np.where(ids == UNSEEN, last, ids).astype(np.int64)
        pairs = distinct(owner * (last + 1) + rank)
        owner, rank = pairs // (last + 1), pairs % (last + 1)
        place = positions(owner, rows)
        kept = place < state.length
        out = np.zeros((rows, state.length), np.int32)
        out[owner[kept], place[kept]] = np.where(rank[kept] == last, UNSEEN, rank[kept])
        out[out[:, 0] == PAD, 0] = UNSEEN
        return out

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_tags(values, field, self.separator)

    def field_schema(self) -> dict[str, Any]:
        tag = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
        return {"anyOf": [{"type": "array", "items": tag}, {"type": "string"}, {"type": "number"},
                          {"type": "boolean"}, {"type": "null"}]}

    def schema_details(self, state: SetState) -> dict[str, Any]:
        details = {"values": state.vocabulary, "separator": self.separator, "encoding": self.encoding,
                   "example": self.separator.join(state.vocabulary[:3])}
        return details | ({"length": state.length} if self.encoding == "embedding" else {})

    def input_shape(self, state: SetState) -> tuple[int, ...]:
        if self.encoding == "multi_hot":
            return (len(state.vocabulary) + 1,)
        return (state.length,)

    def placeholder_state(self) -> SetState:
        return SetState(vocabulary=[f"tag_{i}" for i in range(self.max_size or 10)], length=self.length or 4)

    def encoding_layers(self, x: Any, state: SetState) -> Any:
        from keras import layers

        if self.encoding == "multi_hot":
            return x
        x = layers.Embedding(len(state.vocabulary) + 2, self.embedding_dim, mask_zero=True,
                             name=f"{self.name}_embedding")(x)
        return layers.GlobalAveragePooling1D(name=f"{self.name}_mean")(self.embedded(x))

    def neutral(self, state: SetState) -> np.ndarray:
        """No tag at all: one unseen id and padding, or no slot set."""
        values = np.zeros(self.input_shape(state))
        if self.encoding == "embedding":
            values[0] = UNSEEN
        return values

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table,
                   state: SetState) -> dict | None:
        """Per tag of the row: the share of its id's embedding (or of its multi-hot slot).

        >>> tags = SetInput(name="tags", length=3)
        >>> state = SetState(vocabulary=["red", "blue"], length=3)
        >>> shares = np.array([[0.5, 0.5], [-0.25, 0.0], [0.0, 0.0]])
        >>> tags.attributed(shares, np.array([3, 1, 0]), None, state)
        {'kind': 'tags', 'units': [['blue', 1.0], ['(unseen)', -0.25]]}
        """
        if self.encoding == "multi_hot":
            slots, ids = shares, np.flatnonzero(values) + 1
            slots = slots[ids - 1]
        else:
            slots, ids = shares.reshape(len(shares), -1).sum(axis=1), values.astype(np.int64)
            slots = slots[ids != PAD]
            ids = ids[ids != PAD]
        names = ["(padding)", "(unseen)", *state.vocabulary]
        return shares_by("tags", [names[i] for i in ids], slots)

    def describe_array(self, state: SetState, fitted: bool) -> str:
        known = (f"{state.vocabulary}" if fitted and len(state.vocabulary) <= LISTED
                 else f"the {len(state.vocabulary)} fitted tags, most frequent first")
        if self.encoding == "multi_hot":
            return ("1 in the slot of each tag of the row: slot 0 for tags outside the vocabulary, "
                    f"then {known}")
        return (f"each row's distinct tag ids, {state.length} places, read by a masked mean (0: padding, "
                f"1: a tag outside the vocabulary, or no tag at all; then {known})")

    @classmethod
    def examples(cls) -> list[Example]:
        """Delimited text with spaces, repeated and empty pieces, an empty text, a missing
        row and an unseen tag (the last); the same tags as lists, sent as lists and as text;
        numbers and booleans as their label text, multi-hot."""
        texts = ["red|blue", " blue | red |red", None, "", "green||", "purple|red"]
        lists = [["red", "blue"], ["blue", " red", "red"], None, [], ["green", ""], ["purple", "red"]]
        sent = [["red", "blue"], "blue| red|red", None, [], "green", ["purple", "red"]]
        return [
            same_values({"type": "set"}, "a", pa.array(texts), texts),
            same_values({"type": "set", "length": 1}, "a", pa.array(lists, pa.list_(pa.string())), sent),
            same_values({"type": "set", "encoding": "multi_hot", "separator": ";"}, "a",
                        pa.array([[1, 2], [2], None, [3]], pa.list_(pa.int64())), [[1, 2.0], "2", None, 3]),
            same_values({"type": "set", "encoding": "multi_hot"}, "a",
                        pa.array([[True], [False, True], None, [False]]),
                        ["true", [False, True], None, False]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Lists of text in which some tag is in some rows and not in others."""
        kind = column.values.type
        if not (is_list(kind) and is_string(kind.value_type)):
            return None
        tags = read_tags(Table(pa.table({"t": column.values})), "t", "", "|")
        distinct, owner = tags.distinct()
        counts = pc.value_counts(distinct)
        rows = tags.rows
        frequency = counts.field("counts").to_numpy()
        if not (frequency < rows).any():
            return None
        per_row = np.bincount(owner, minlength=rows)
        top = int(np.argmax(frequency))
        common = show(counts.field("values")[top].as_py())
        return Recognised({"type": "set"}, f"lists of text: {len(frequency):,} distinct tags, "
                          f"{per_row.min()} to {per_row.max()} per row; the most frequent, {common}, in "
                          f"{frequency[top] / rows:.0%} of rows{column.gaps}")
