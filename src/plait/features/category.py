"""``category``: strings or integers from a fitted vocabulary, embedded or one-hot."""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.data import Table, json_labels
from plait.evidence import Column, is_numeric, is_string, markers, shares
from plait.features.base import LABEL_SCHEMA, Encoded, Example, InputType, Recognised, same_values
from plait.features.vocabulary import fit_vocabulary, lookup
from plait.schema import FittedState, StateClass

LISTED = 10
"""A vocabulary up to this size is written out in ``plait code``'s comments."""


class CategoryState(FittedState):
    """The known values, most frequent first; value ``i`` encodes as ``i + 1``."""

    vocabulary: list[str]


def id_like(name: str) -> bool:
    """``id``, ``key``, ``uuid``, ``index`` as the last word (``Clothing ID``, ``user_id``, ``userId``)."""
    return bool(re.search(r"(^|[^a-z0-9])(id|key|uuid|guid|index)$", name.lower())
                or re.search(r"[a-z](ID|Id)$", name))


class CategoryInput(InputType):
    """A categorical column; index 0 is the slot for unseen and missing values.

    ``min_frequency`` drops rare values into that slot; ``max_categories`` keeps the most
    frequent ones. ``encoding`` is ``embedding`` (of ``embedding_dim``, by default a size
    growing with the vocabulary) or ``onehot``. Values are read by the rule for labels.

    >>> CategoryInput(name="department", embedding_dim=8).embedding_size(10)
    8
    """

    type: Literal["category"] = "category"
    encoding: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int | None = Field(default=None, gt=0, le=4096)
    min_frequency: int = Field(default=1, ge=1)
    max_categories: int | None = Field(default=None, gt=0)

    input_dtype: ClassVar[str] = "int32"
    State: ClassVar[StateClass] = CategoryState
    model_keys: ClassVar[frozenset[str]] = InputType.model_keys | {"embedding_dim"}
    accepts: ClassVar[str] = ("text, a number or true/false (read as labels), or null; values outside "
                              "the vocabulary share one slot")
    widget: ClassVar[str] = "select"
    recognise_order: ClassVar[int] = 70

    @model_validator(mode="after")
    def _one_encoding(self) -> CategoryInput:
        if self.encoding == "onehot" and self.embedding_dim is not None:
            raise ValueError(f"embedding_dim is {self.embedding_dim} but encoding is 'onehot', which "
                             "has no embedding; remove embedding_dim, or set encoding: embedding")
        return self

    def fit(self, table: Table) -> CategoryState:
        strings = table.strings(self.source, self.describe_use())
        return CategoryState(vocabulary=fit_vocabulary(strings, self.min_frequency, self.max_categories))

    def encode(self, table: Table, state: CategoryState) -> Encoded:
        strings = table.strings(self.source, self.describe_use())
        index = lookup(strings, state.vocabulary, offset=1)
        missing = pc.is_null(strings).to_numpy(zero_copy_only=False)
        unseen = int(np.count_nonzero((index == 0) & ~missing))
        return Encoded(index.reshape(-1, 1), missing, unseen)

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        return json_labels(values, field)

    def field_schema(self) -> dict[str, Any]:
        return LABEL_SCHEMA

    def schema_details(self, state: CategoryState) -> dict[str, Any]:
        return {"values": state.vocabulary}

    def input_shape(self, state: Any) -> tuple[int, ...]:
        return (1,)

    def placeholder_state(self) -> CategoryState:
        return CategoryState(vocabulary=[f"value_{i}" for i in range(self.max_categories or 10)])

    def embedding_size(self, slots: int) -> int:
        return self.embedding_dim or min(32, max(2, round(1.6 * math.pow(slots, 0.56))))

    def encoding_layers(self, x: Any, state: CategoryState) -> Any:
        from keras import layers

        slots = len(state.vocabulary) + 1
        if self.encoding == "onehot":
            x = layers.Flatten(name=f"{self.name}_flatten")(x)
            x = layers.CategoryEncoding(slots, output_mode="one_hot", name=f"{self.name}_onehot")(x)
            return self.embedded(x)
        x = layers.Embedding(slots, self.embedding_size(slots), name=f"{self.name}_embedding")(x)
        return layers.Flatten(name=f"{self.name}_flatten")(self.embedded(x))

    def neutral(self, state: CategoryState) -> np.ndarray:
        """The slot of unseen and missing values."""
        return np.zeros(1)

    def describe_array(self, state: CategoryState, fitted: bool) -> str:
        if fitted and len(state.vocabulary) <= LISTED:
            return f"1 + the value's position in {state.vocabulary} (0: unseen or missing)"
        return "the category's index in the fitted vocabulary (0: unseen or missing)"

    @classmethod
    def examples(cls) -> list[Example]:
        """Text; integers and whole numbers as their digits, other numbers as their decimal
        text; booleans as true and false; a value not seen in training (the last)."""
        return [
            same_values({"type": "category"}, "a", pa.array(["red", "blue", None, "red", "purple"]),
                        ["red", "blue", None, "red", "purple"]),
            same_values({"type": "category"}, "a", pa.array([1.0, 2.5, None, 3.0, 4.0]),
                        [1, 2.5, None, 3.0, 4]),
            same_values({"type": "category", "encoding": "onehot"}, "a", pa.array([True, False, None, True]),
                        [True, False, None, True]),
            same_values({"type": "category"}, "a", pa.array([7, 8, None, 9], pa.int64()), [7, 8.0, None, 9]),
        ]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Labels, and integers with an id-like name (``Clothing ID``: codes, not amounts)."""
        kind = column.values.type
        if is_numeric(kind):
            if not (pa.types.is_integer(kind) and id_like(column.name)):
                return None
            return Recognised({"type": "category"}, f"{column.of} integers with an id-like name: codes, "
                              f"not amounts{column.gaps}")
        if not (is_string(kind) or pa.types.is_boolean(kind)):
            return None
        strings = column.values.cast(pa.string())
        return Recognised({"type": "category"},
                          f"{column.of}: {shares(strings)}{column.gaps}{markers(strings)}")
