"""Sampled configs: each path of the space set to a value, every result validated.

A path that does not apply to what was sampled before it (``encoder.units`` when the
sampled ``kind`` is one without units) is left out of that trial. A sampled ``kind``,
``type`` or ``strategy`` drops the keys of the base config that the new kind refuses (a
GRU's ``bidirectional`` under a bag), so one base config serves every kind in the space.

>>> from plait.tuning.space import Tune
>>> base = {"inputs": [{"name": "review", "type": "text", "embedding_dim": 16,
...                     "encoder": {"kind": "gru", "units": 32, "bidirectional": True}}],
...         "outputs": [{"name": "liked", "type": "binary"}]}
>>> tune = Tune.model_validate({"space": {"inputs.review.encoder.kind": {"choices": ["gru", "bag"]},
...                                       "inputs.review.encoder.bidirectional": {"choices": [True, False]}}})
>>> config, params = configure(base, tune, lambda path, dimension: dimension.candidates()[-1])
>>> config["inputs"][0]
{'name': 'review', 'type': 'text', 'encoder': {'kind': 'bag', 'units': 32}}
>>> params
{'inputs.review.encoder.kind': 'bag'}
>>> check_space(base, tune)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from plait.errors import ConfigError
from plait.spec import Spec, check_references, config_path, load_spec
from plait.tuning.space import DISCRIMINATORS, Choices, Range, Tune, assign, dotted, locate, remove

Dimension = Range | Choices
Pick = Callable[[str, Dimension], Any]
KEPT_KEYS = ("name", "type", "column", "kind", "strategy", "from")
"""Keys a sampled kind never drops from its block: they say what the block is and reads."""


def problems(config: dict) -> list[tuple[str, str]]:
    """Where ``config`` is invalid and what is said of it, as (path, message); empty when
    it is valid."""
    try:
        spec = Spec.model_validate(config)
    except ValidationError as error:
        located = [(config_path(item["loc"], config), item["msg"])
                   for item in error.errors(include_url=False)]
        found = [(where[0], message) for where, message in located if where is not None]
        return found or [("config", "invalid")]
    try:
        check_references(spec)
    except ConfigError as error:
        return [("config", str(error))]
    return []


def configure(base: dict, tune: Tune, pick: Pick) -> tuple[dict, dict]:
    """``base`` with each path of the space set to what ``pick`` gives, and the values
    picked by path (leaving out paths that do not apply to the earlier picks)."""
    config, picked = base, {}
    for path, dimension in tune.space.items():
        keys = locate(config, path)
        if not problems(config) and problems(_set(config, keys, dimension.candidates()[0], picked)):
            continue
        value = pick(path, dimension)
        config = _set(config, keys, value, picked)
        picked[path] = value
    return config, picked


def _set(config: dict, keys: list[str | int], value: Any, picked: dict) -> dict:
    changed = assign(config, keys, value)
    if keys[-1] not in DISCRIMINATORS:
        return changed
    return settle(changed, keys, {dotted(locate(config, path)) for path in picked})


def settle(config: dict, keys: list[str | int], picked: set[str]) -> dict:
    """After ``keys`` (a kind) changed: drop, one at a time, the keys of its block and of the
    block holding it that the new kind refuses, keeping each removal that clears an error
    (picked keys stay: the trial fails on them, as it should)."""
    blocks = [keys[:-1], keys[:-2]] if len(keys) > 2 else [keys[:-1]]
    found = problems(config)
    for block in blocks:
        node = _at(config, block)
        for key in list(node) if isinstance(node, dict) else []:
            place = block + [key]
            if not found or key in KEPT_KEYS or dotted(place) in picked or isinstance(node[key], dict):
                continue
            lighter = remove(config, place)
            fewer = problems(lighter)
            if len(fewer) < len(found) or _refused(key, place, found) and len(fewer) <= len(found):
                config, found = lighter, fewer
    return config


def _refused(key: str | int, place: list[str | int], found: list[tuple[str, str]]) -> bool:
    """Whether an error is about this key: at its place (an unknown key, which hides the
    checks made after it), or at its block and naming it (a kind that has no use for it)."""
    block = dotted(place[:-1])
    return any(where == dotted(place) or where == block and str(key) in message for where, message in found)


def _at(config: Any, keys: list[str | int]) -> Any:
    for key in keys:
        config = config[key]
    return config


def check_space(base: dict, tune: Tune) -> None:
    """Every path names a place in ``base``, and every value of it gives a valid config with
    some choice of the other paths; otherwise one ConfigError naming each bad path."""
    lines = []
    for path, dimension in tune.space.items():
        locate(base, path)
        for value in dimension.candidates():
            if not _fits(base, tune, path, value):
                lines.append(_why(base, path, value))
    if lines:
        raise ConfigError("tune.space: invalid search space\n" + "\n".join(lines))


def _fits(base: dict, tune: Tune, path: str, value: Any) -> bool:
    """Whether ``path`` = ``value`` applies and validates with the other paths at their first
    values, or with one other choice path at each of its values."""
    others = [(p, d) for p, d in tune.space.items() if p != path and isinstance(d, Choices)]
    settings = [{}] + [{p: choice} for p, d in others for choice in d.choices]
    if len(others) <= 3:
        settings += [dict(zip([p for p, _ in others], combo, strict=True))
                     for combo in itertools.product(*(d.choices for _, d in others))]
    for setting in settings:
        def pick(p: str, d: Dimension, setting: dict = setting) -> Any:
            return value if p == path else setting.get(p, d.candidates()[0])

        config, picked = configure(base, tune, pick)
        if path in picked and not problems(config):
            return True
    return False


def _why(base: dict, path: str, value: Any) -> str:
    alone = assign(base, locate(base, path), value)
    try:
        load_spec(alone)
    except ConfigError as error:
        reason = str(error).split("\n", 1)[-1].strip()
        return f"  {path}: {json.dumps(value)} gives an invalid config: {reason}"
    return f"  {path}: {json.dumps(value)} never applies: an earlier path of the space always rules it out"
