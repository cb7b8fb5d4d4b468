"""Shared pieces of the config schema: the strict base model and constrained names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64),
]
"""Input, output and merge names become Keras layer names and Python identifiers."""

Units = Annotated[int, Field(gt=0, le=65536)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
MissingPolicy = Literal["fill", "skip", "error"]
Activation = Literal["relu", "gelu", "elu", "selu", "tanh", "sigmoid", "swish", "linear"]


class Strict(BaseModel):
    """A config block: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FittedState(BaseModel):
    """What an input or output learned from the training rows: typed, validated when a
    bundle loads, written to ``state.json`` as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)


StateClass = type[FittedState]
"""The class of a type's fitted state (``type`` itself is a config key of input and output types)."""
