"""The ``tune`` section of a config: what ``plait tune`` optimises, and over which values.

Paths name what they change by the names the config gives: ``inputs.<input>.<key>...``,
``outputs.<output>.<key>...``, ``merge.<key>`` (``merge.<node>.<key>`` when ``merge`` is a
list of nodes), ``head.<key>``, ``train.<key>``. A range (``low``, ``high``, optional
``log`` and ``step``) samples integers when its bounds (and step) are whole numbers,
decimals otherwise; ``choices`` samples one of its values, which may be lists or mappings.

>>> tune = Tune.model_validate({"metric": {"output": "recommended", "name": "f1"},
...                             "space": {"train.learning_rate": {"low": 0.0003, "high": 0.01, "log": True},
...                                       "head.layers": {"choices": [[64], [128, 64]]}}})
>>> tune.space["train.learning_rate"].integer, tune.space["head.layers"].candidates()
(False, [[64], [128, 64]])
>>> config = {"inputs": [{"name": "review", "type": "text"}], "outputs": [{"name": "y", "type": "binary"}]}
>>> assign(config, locate(config, "inputs.review.encoder.kind"), "gru")["inputs"][0]
{'name': 'review', 'type': 'text', 'encoder': {'kind': 'gru'}}
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from plait.errors import ConfigError
from plait.schema import Name, Strict

SECTIONS = ("inputs", "outputs", "merge", "head", "train")
NAMED = ("inputs", "outputs")
DISCRIMINATORS = ("type", "kind", "strategy")
"""Keys that choose a kind of block: switching one drops the block's keys the new kind has
no use for (a GRU's ``bidirectional`` when the sample is a bag)."""


class Range(Strict):
    """Numbers from ``low`` to ``high`` (both included); ``log`` samples their logarithm
    uniformly, ``step`` rounds to a grid."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"found {value}; expected a number")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs a positive low; found {self.low:g}")
        if self.log and self.step is not None and not (self.integer and self.step == 1):
            raise ValueError("log: true samples without a step (or with step 1 between whole numbers)")
        return self

    @property
    def integer(self) -> bool:
        bounds = (self.low, self.high) + ((self.step,) if self.step is not None else ())
        return all(float(value).is_integer() for value in bounds)

    def candidates(self) -> list[Any]:
        """Values that stand for the range when a config is checked: its two ends."""
        return [self.value(self.low), self.value(self.high)]

    def value(self, number: float) -> int | float:
        return int(number) if self.integer else float(number)

    def suggest(self, trial: Any, path: str) -> Any:
        if self.integer:
            return trial.suggest_int(path, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        value = trial.suggest_float(path, self.low, self.high, step=self.step, log=self.log)
        # A step of 0.1 gives 0.30000000000000004: the grid point is what the config should say.
        return round(value, 12) if self.step is not None else value


class Choices(Strict):
    """One of ``choices``: numbers, text, lists or mappings."""

    choices: list[Any] = Field(min_length=1)

    def candidates(self) -> list[Any]:
        return list(self.choices)

    @property
    def scalar(self) -> bool:
        return all(value is None or isinstance(value, (bool, int, float, str)) for value in self.choices)

    def suggest(self, trial: Any, path: str) -> Any:
        if self.scalar:
            return trial.suggest_categorical(path, self.choices)
        # Optuna stores only scalars: a list or mapping is sampled by its JSON text.
        return json.loads(trial.suggest_categorical(path, [json.dumps(value) for value in self.choices]))


class Metric(Strict):
    """The validation metric to optimise: ``name`` of output ``output`` (by default the
    first output and the metric ``explain`` uses for it). ``direction`` ``auto`` minimises
    losses and errors, maximises the rest."""

    output: Name | None = None
    name: str | None = None
    direction: Literal["auto", "maximize", "minimize"] = "auto"


class Tune(Strict):
    """A search: ``trials`` in all (shared by every worker of a study), ended early after
    ``timeout_minutes``; ``pruner`` stops trials whose metric lags the others' at the same
    epoch. A worker that stops beating its heartbeat for a few ``heartbeat_seconds`` (in a
    database storage) has its running trial marked failed by the others."""

    metric: Metric = Field(default_factory=Metric)
    trials: int = Field(default=20, ge=1, le=100_000)
    timeout_minutes: float | None = Field(default=None, gt=0)
    pruner: Literal["median", "hyperband", "none"] = "median"
    heartbeat_seconds: int = Field(default=60, ge=1, le=3600)
    space: dict[str, Range | Choices] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _paths(cls, space: dict[str, Any]) -> dict[str, Any]:
        for path in space:
            section, *rest = path.split(".")
            if section not in SECTIONS or not rest or not all(rest):
                raise ValueError(f"{path!r}: expected a path such as train.learning_rate or "
                                 f"inputs.<name>.<key>, starting with one of {', '.join(SECTIONS)}")
            if section in NAMED and len(rest) < 2:
                raise ValueError(f"{path!r}: expected {section}.<name>.<key>")
        return space


def locate(raw: dict, path: str) -> list[str | int]:
    """The keys and list positions ``path`` means in the raw config ``raw``."""
    section, *rest = path.split(".")
    nodes = raw.get(section)
    if section in NAMED or (section == "merge" and isinstance(nodes, list)):
        where = _named(nodes or [], rest[0], section, path)
        return [section, where, *rest[1:]]
    return [section, *rest]


def _named(entries: list, name: str, section: str, path: str) -> int:
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    if name not in names:
        known = ", ".join(repr(n) for n in names if n) or "none"
        raise ConfigError(f"tune.space.{path}: no {section.rstrip('s')} named {name!r}; the config's "
                          f"{section} are {known}")
    return names.index(name)


def assign(raw: dict, keys: list[str | int], value: Any) -> dict:
    """A copy of ``raw`` with ``value`` at ``keys`` (mappings made on the way as needed)."""
    changed = copy.deepcopy(raw)
    node: Any = changed
    for key in keys[:-1]:
        if isinstance(key, str) and not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = copy.deepcopy(value)
    return changed


def remove(raw: dict, keys: list[str | int]) -> dict:
    """A copy of ``raw`` without the key at ``keys``."""
    changed = copy.deepcopy(raw)
    node: Any = changed
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return changed


def dotted(keys: list[str | int]) -> str:
    """Keys as config errors write them: ``inputs[0].encoder.units``.

    >>> dotted(["inputs", 0, "encoder", "units"])
    'inputs[0].encoder.units'
    """
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text
