"""Per-input importance: how much each output's metric drops without one input's information.

Two ways of taking an input away, both on the model's encoded inputs (nothing is retrained):

- ``permutation``: the input's values are shuffled across rows, so each row gets another
  row's value; repeated with ``repeats`` seeded shuffles, the mean and spread reported.
- ``switch_off``: every row gets the input's neutral value (``NEUTRAL``, one per input
  type), as if the branch carried nothing; an optional input's presence mask is set to 0.
  The model's answer is deterministic, so its spread comes from ``repeats`` bootstrap
  resamples of the rows.

Each output is scored with its type's ``importance_metric`` (ROC-AUC for binary, accuracy for
category, R² for number); a drop is positive when the model gets worse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from plait.data import read_table
from plait.errors import DataError
from plait.features.text import UNKNOWN
from plait.metrics import drop
from plait.preprocess import encode_inputs, encode_targets, select
from plait.targets.base import Target


def _scaled_fill(spec: Any, state: dict) -> np.ndarray:
    """Numbers and vectors: the fill value (the training mean by default), scaled."""
    fill, shift, divide = (np.asarray(state[key], np.float64) for key in ("fill", "shift", "divide"))
    scaled = (fill - shift) / divide
    return scaled.reshape(spec.input_shape(state))


def _empty_text(spec: Any, state: dict) -> np.ndarray:
    """An empty text encodes as one unknown word followed by padding."""
    tokens = np.zeros(spec.input_shape(state))
    tokens[0] = UNKNOWN
    return tokens


def _zeros(spec: Any, state: dict) -> np.ndarray:
    """A blank image; a sequence of training-mean steps (zero once standardised)."""
    return np.zeros(spec.input_shape(state))


NEUTRAL: dict[str, Callable[[Any, dict], np.ndarray]] = {
    "number": _scaled_fill,
    "vector": _scaled_fill,
    "category": lambda spec, state: np.zeros(spec.input_shape(state)),  # the unseen/missing slot
    "binary": lambda spec, state: np.full(spec.input_shape(state), state["fill"]),  # the training rate
    "text": _empty_text,
    "image": _zeros,
    "sequence": _zeros,
}
"""Per input type, the encoded value that stands for "no information" in a switched-off branch."""


def neutral_value(spec: Any, state: dict) -> np.ndarray:
    """The encoded neutral value of one row of input ``spec``.

    >>> from plait.features.number import NumberInput
    >>> neutral_value(NumberInput(name="age", scale="minmax"), {"fill": 30.0, "shift": 20.0, "divide": 40.0})
    array([0.25])
    """
    return NEUTRAL[spec.type](spec, state)


def importance(model: Any, data: Any, *, repeats: int = 5, seed: int = 0) -> dict:
    """Importance of every input for every output of a fitted ``model`` on labelled ``data``.

    Returns a JSON-able dict: ``metrics`` (the metric per output), ``reference`` (its value
    with every input intact) and, per input and output, ``permutation`` and ``switch_off``
    drops (``mean``, ``std``, and the ``runs``).
    """
    if repeats < 1:
        raise DataError(f"repeats: found {repeats}; expected at least 1")
    table = read_table(data)
    encoded = encode_inputs(model.spec, model.states_, table)
    rows = np.flatnonzero(encoded.kept)
    if rows.size < 2:
        raise DataError(f"{table.source}: found {rows.size} usable row(s); expected at least two "
                        "to measure importance")
    x = select(encoded.inputs, rows)
    targets = {name: Target(t.values[rows], t.present[rows])
               for name, t in encode_targets(model.spec, model.states_, table).items()}
    scorer = Scorer(model, targets)
    intact = _predict(model, x)
    reference = scorer.scores(intact)
    shuffles = [np.random.default_rng(seed + r).permutation(rows.size) for r in range(repeats)]
    resamples = [np.random.default_rng(seed + r).integers(0, rows.size, rows.size) for r in range(repeats)]
    result: dict[str, Any] = {
        "data": table.source, "rows": int(rows.size), "repeats": repeats, "seed": seed,
        "metrics": scorer.metrics, "reference": reference, "inputs": {},
    }
    for spec in model.spec.inputs:
        names = [spec.name, spec.mask_name] if spec.optional else [spec.name]
        permuted = [scorer.scores(_predict(model, {**x, **{n: x[n][order] for n in names}}))
                    for order in shuffles]
        switched = _predict(model, _switched_off(model, spec, x))
        result["inputs"][spec.name] = {
            out: {
                "permutation": _summary([drop(metric, reference[out], run[out]) for run in permuted]),
                "switch_off": scorer.bootstrap_drop(out, intact, switched, resamples),
            }
            for out, metric in scorer.metrics.items()
        }
    return result


class Scorer:
    """Scores raw model outputs with each output's importance metric."""

    def __init__(self, model: Any, targets: dict[str, Target]) -> None:
        self.model, self.targets = model, targets
        self.metrics = {out.name: out.importance_metric for out in model.spec.outputs}

    def score(self, name: str, raw: np.ndarray, rows: np.ndarray | None = None) -> float:
        out = next(o for o in self.model.spec.outputs if o.name == name)
        target = self.targets[name]
        if rows is not None:
            target, raw = Target(target.values[rows], target.present[rows]), raw[rows]
        return float(out.score(target, raw, self.model.states_[name])[self.metrics[name]])

    def scores(self, raw: dict[str, np.ndarray]) -> dict[str, float]:
        return {name: self.score(name, raw[name]) for name in self.metrics}

    def bootstrap_drop(self, name: str, intact: dict[str, np.ndarray], changed: dict[str, np.ndarray],
                       resamples: list[np.ndarray]) -> dict:
        """The drop on all rows, and its spread over bootstrap resamples (paired: the
        intact and changed answers scored on the same rows)."""
        metric = self.metrics[name]
        value = drop(metric, self.score(name, intact[name]), self.score(name, changed[name]))
        runs = [drop(metric, self.score(name, intact[name], rows), self.score(name, changed[name], rows))
                for rows in resamples]
        return {**_summary(runs), "mean": value}


def _switched_off(model: Any, spec: Any, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values = x[spec.name]
    neutral = neutral_value(spec, model.states_[spec.name]).astype(values.dtype)
    changed = {**x, spec.name: np.broadcast_to(neutral, values.shape).copy()}
    if spec.optional:
        changed[spec.mask_name] = np.zeros_like(x[spec.mask_name])
    return changed


def _predict(model: Any, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raw = model.keras_model_.predict(x, batch_size=model.spec.train.batch_size, verbose=0)
    if not isinstance(raw, dict):
        raw = {model.spec.outputs[0].name: raw}
    return {name: np.asarray(values) for name, values in raw.items()}


def _summary(runs: list[float]) -> dict:
    values = np.asarray(runs, np.float64)
    finite = values[np.isfinite(values)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "runs": [round(float(v), 6) for v in values],
    }


def ranked(result: dict) -> list[tuple[str, str, str, dict, dict]]:
    """(input, output, metric, permutation, switch_off) rows, most important inputs first: by
    their mean permutation drop relative to the largest drop for the same output, averaged
    over the outputs (so outputs scored on different scales count alike)."""
    inputs, outputs = list(result["inputs"]), list(result["metrics"])
    drops = np.array([[result["inputs"][name][out]["permutation"]["mean"] for out in outputs]
                      for name in inputs], np.float64)
    drops = np.nan_to_num(drops)
    largest = np.maximum(drops.max(axis=0), 1e-12)
    strength = (drops / largest).mean(axis=1)
    order = [inputs[i] for i in np.argsort(-strength, kind="stable")]
    return [(name, out, result["metrics"][out], cell["permutation"], cell["switch_off"])
            for name in order for out, cell in result["inputs"][name].items()]
