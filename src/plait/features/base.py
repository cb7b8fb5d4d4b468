"""What every input type shares: its config keys, its fitted state, how a request's values
become the column a file would hold, and the dense layers closing its branch.

An input type is one class. It owns its config keys (pydantic fields), its fitted state
(a ``State`` model), ``fit`` and one ``encode`` of a table column, used alike for training,
streaming, prediction, explanation and serving (a request's values are first turned into
the column a file would give, by ``request_column``), the value that stands for "no
information" (``neutral``), its entry in the server's schema, its Keras branch, what its
array holds (``describe_array``, for ``plait code``) and how ``plait init`` recognises it
(``recognise``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from plait.data import Table, json_numbers
from plait.evidence import Column
from plait.schema import Activation, FittedState, MissingPolicy, Name, Rate, StateClass, Strict, Units


@dataclass
class Encoded:
    """One input's model-ready array, the rows whose value was missing, the unseen count."""

    values: np.ndarray
    missing: np.ndarray
    unseen: int = 0
    notes: dict[str, int] = field(default_factory=dict)


@dataclass
class Example:
    """The same values as a file holds them (``columns``) and as a request sends them
    (``records``), for an input configured by ``config`` (its keys but the name): what the
    type accepts, shown in its docs and checked in the tests, file against request. The
    state is fitted on all rows but the last, so a last value may be unseen."""

    config: dict
    columns: dict[str, pa.Array]
    records: list[dict]


@dataclass
class Recognised:
    """What ``plait init`` makes of a column: the config entry (without its name), and the
    evidence for it, written as the entry's comment; ``beside``, further entries reading the
    same column another way, each named after the column with its ``suffix``."""

    entry: dict
    evidence: str
    suffix: str = ""
    beside: list[Recognised] = field(default_factory=list)


class InputType(Strict):
    """Base of every input type.

    Subclasses set ``type`` (a Literal) and ``State``, and implement ``fit``, ``encode``,
    ``input_shape``, ``placeholder_state``, ``encoding_layers``, ``neutral`` and
    ``describe_array``; the base adds the branch's own dense ``layers`` after the encoder.

    ``optional: true`` gives the model a second input, ``<name>_mask`` (1 where the value is
    present, 0 where it is missing), and multiplies the branch by it, so an absent value
    contributes nothing. Missing rows are kept (with ``missing: fill``) and their mask is 0.
    """

    name: Name
    column: str | None = None
    missing: MissingPolicy = "fill"
    optional: bool = False
    layers: list[Units] = []
    activation: Activation = "relu"
    dropout: Rate = 0.0

    input_dtype: ClassVar[str] = "float32"
    State: ClassVar[StateClass] = FittedState
    accepts: ClassVar[str] = "a number or null"
    """The values a request may send for this input, in words."""
    widget: ClassVar[str] = "number"
    """How the serving page asks for a value: number, select, text, textarea, file or json."""
    recognise_order: ClassVar[int] = 100
    """``plait init`` asks the types in this order; the first to recognise a column wins."""
    model_keys: ClassVar[frozenset[str]] = frozenset({"layers", "activation", "dropout"})
    """Config keys that shape only the Keras branch, never the fitted state or the encoded
    arrays (``plait tune`` reuses the encoded data across trials that differ only in them)."""

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def mask_name(self) -> str:
        """The model input that says, per row, whether this (optional) input is present."""
        return f"{self.name}_mask"

    def source_columns(self) -> list[str]:
        return [self.source]

    def changed(self, keys: tuple[str, ...]) -> str:
        """Those of ``keys`` set to other than their defaults, with their values
        (``"embedding_dim 16, length 8"``), or ``""``. A saved spec writes every key out,
        defaults included, so only a changed value can be a key given in vain.

        >>> from plait.features.text import TextInput
        >>> TextInput(name="t", embedding_dim=16).changed(("embedding_dim", "length"))
        'embedding_dim 16'
        """
        return ", ".join(f"{key} {getattr(self, key)}" for key in keys
                         if getattr(self, key) != type(self).model_fields[key].default)

    def preprocessing(self) -> dict[str, Any]:
        """The part of this input's config that its fitted state and encoded arrays depend
        on: all but ``model_keys``, and of an ``encoder`` only what it reads the values with.

        >>> from plait.features.text import TextInput
        >>> kept = TextInput(name="t", dropout=0.3, embedding_dim=8, encoder={"kind": "gru"}).preprocessing()
        >>> "dropout" in kept, "embedding_dim" in kept, "encoder" in kept, kept["vocabulary_size"]
        (False, False, False, 20000)
        """
        from plait.encoders.base import Encoder

        kept = self.model_dump(mode="json", by_alias=True, exclude=set(self.model_keys))
        encoder = getattr(self, "encoder", None)
        if isinstance(encoder, Encoder):
            kept["encoder"] = encoder.preprocessing()
            if kept["encoder"] is None:
                del kept["encoder"]
        return kept

    def describe_use(self) -> str:
        return f"input {self.name!r}"

    # -- fitting and encoding ---------------------------------------------------------------

    def fit(self, table: Table) -> FittedState:
        raise NotImplementedError

    def encode(self, table: Table, state: Any) -> Encoded:
        raise NotImplementedError

    def load_state(self, raw: Any) -> FittedState:
        """The fitted state from its JSON form; a ValidationError names the bad field."""
        return self.State.model_validate(raw)

    def placeholder_state(self) -> FittedState:
        """A state with the shapes the config declares, for describing a model before fitting."""
        raise NotImplementedError

    # -- requests ---------------------------------------------------------------------------

    def request_columns(self, records: list[dict]) -> dict[str, pa.Array]:
        """The columns a file would hold for these JSON records (a missing key is null)."""
        return {name: self.request_column([record.get(name) for record in records], name)
                for name in self.source_columns()}

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        """One field's JSON values as an Arrow column, by the rules files are read with."""
        return json_numbers(values, field)

    def field_schema(self) -> dict[str, Any]:
        """The JSON Schema of one record field, for the OpenAPI description."""
        return {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}, {"type": "null"}]}

    def schema(self, state: Any) -> dict[str, Any]:
        """This input as a client sees it in ``/v1/schema``: its fields, what they accept, and
        how the page asks for a value (``widget``)."""
        return {"name": self.name, "type": self.type, "fields": self.source_columns(),
                "missing": self.missing, "required": self.missing == "error", "optional": self.optional,
                "accepts": self.accepts, "widget": self.widget, **self.schema_details(state)}

    def schema_details(self, state: Any) -> dict[str, Any]:
        return {}

    # -- explanation and description --------------------------------------------------------

    def neutral(self, state: Any) -> np.ndarray:
        """The encoded value of one row that carries no information, for switching the input
        off in ``explain``."""
        raise NotImplementedError

    def describe_array(self, state: Any, fitted: bool) -> str:
        """What the encoded array holds, in words, for the comments of ``plait code``."""
        raise NotImplementedError

    def attribution_baseline(self, values: np.ndarray, state: Any) -> np.ndarray:
        """The encoded rows ``values`` as they would be with no information, where integrated
        gradients start (``plait.attribution``): the neutral value in every row."""
        return np.broadcast_to(self.neutral(state), values.shape).astype(values.dtype)

    def attribution_scale_start(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Where an embedded input's scale starts (``plait.attribution``), shaped ``(rows,
        *shape)`` like its embedding: 0 everywhere, every embedded value vanishing."""
        return np.zeros((len(values), *shape), np.float32)

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table, state: Any) -> dict | None:
        """One row's attribution shares (shaped as its encoded ``values``, or as its embedding
        for an embedded input), read from ``table`` (that row alone), summed into the units a
        person reads: ``{"kind": ..., "units": [[label, share], ...]}``; None when the input
        is one number (its total says it all)."""
        return None

    @classmethod
    def examples(cls) -> list[Example]:
        """Values this type accepts, each as a file column and as request records."""
        raise NotImplementedError

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Whether ``plait init`` should make this sampled column (of at least two distinct
        values) an input of this type; None leaves it to the next type."""
        return None

    # -- the branch -------------------------------------------------------------------------

    def input_shape(self, state: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def encoding_layers(self, x: Any, state: Any) -> Any:
        raise NotImplementedError

    def embedded(self, x: Any) -> Any:
        """Called by a branch on its embedded ids (words, tags, a category), which is where
        attributions are measured for ids (``plait.layers.scaled``); the identity in a model
        for training and prediction."""
        from plait.layers.scaled import embedded

        return embedded(x, self.name)

    def branch(self, x: Any, state: Any) -> Any:
        from keras import layers

        x = self.encoding_layers(x, state)
        for index, units in enumerate(self.layers, start=1):
            x = layers.Dense(units, activation=self.activation, name=f"{self.name}_dense_{index}")(x)
            if self.dropout:
                x = layers.Dropout(self.dropout, name=f"{self.name}_dropout_{index}")(x)
        return x


def shares_by(kind: str, labels: Any, shares: Any) -> dict:
    """Attribution units (``InputType.attributed``): each label with its share, in order."""
    pairs = zip(labels, shares, strict=False)
    return {"kind": kind, "units": [[str(label), float(share)] for label, share in pairs]}


def state_problem(error: ValidationError) -> str:
    """The first problem pydantic found in a state, as ``field: message``."""
    item = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in item["loc"]) or "state"
    return f"{where}: {item['msg']}"


LABEL_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
"""A field read by the rule for labels."""


def same_values(config: dict, field: str, file: pa.Array, sent: list[Any]) -> Example:
    """An example of one field: its file column and the JSON values a request sends for it."""
    return Example(config, {field: file}, [{field: value} for value in sent])
