"""Per-input importance: how much each output's metric drops without one input's information.

Two ways of taking an input away, both on the model's encoded inputs (nothing is retrained):

- ``permutation``: the input's values are shuffled across rows, so each row gets another
  row's value; repeated with ``repeats`` seeded shuffles, the mean and spread reported.
- ``switch_off``: every row gets the input's neutral value (its type's ``neutral``), as if
  the branch carried nothing; an optional input's presence mask is set to 0.
  The model's answer is deterministic, so its spread comes from ``repeats`` bootstrap
  resamples of the rows.

Each output is scored with its type's ``importance_metric`` (ROC-AUC for binary, accuracy for
category, R² for number); a drop is positive when the model gets worse.

A ``gated`` merge weighs its branches row by row; ``gates`` reports each such node's mean
weight per branch over the explained rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plait.errors import DataError
from plait.metrics import drop
from plait.parts import Part
from plait.targets.base import Target


def importance(model: Any, parts: list[Part], data: str, *, repeats: int = 5, seed: int = 0) -> dict:
    """Importance of every input for every output of a fitted ``model`` on labelled rows,
    encoded as ``parts`` (from the source named ``data``).

    Returns a JSON-able dict: ``metrics`` (the metric per output), ``reference`` (its value
    with every input intact) and, per input and output, ``permutation`` and ``switch_off``
    drops (``mean``, ``std``, and the ``runs``); with gated merge nodes, also ``gates``
    (see ``gate_weights``).
    """
    if repeats < 1:
        raise DataError(f"repeats: found {repeats}; expected at least 1")
    parts = [part for part in parts if part.rows]
    rows = sum(part.rows for part in parts)
    if rows < 2:
        raise DataError(f"{data}: found {rows} usable row(s); expected at least two to measure importance")
    x = {name: np.concatenate([part.x[name] for part in parts]) for name in parts[0].x}
    targets = {out.name: Target(np.concatenate([part.y[out.name] for part in parts]),
                                np.concatenate([part.present[out.name] for part in parts]))
               for out in model.spec.outputs}
    scorer = Scorer(model, targets)
    intact = model.raw_outputs(x)
    reference = scorer.scores(intact)
    shuffles = [np.random.default_rng(seed + r).permutation(rows) for r in range(repeats)]
    resamples = [np.random.default_rng(seed + r).integers(0, rows, rows) for r in range(repeats)]
    result: dict[str, Any] = {
        "data": data, "rows": int(rows), "repeats": repeats, "seed": seed,
        "metrics": scorer.metrics, "reference": reference, "inputs": {},
    }
    for spec in model.spec.inputs:
        names = [spec.name, spec.mask_name] if spec.optional else [spec.name]
        permuted = [scorer.scores(model.raw_outputs({**x, **{n: x[n][order] for n in names}}))
                    for order in shuffles]
        switched = model.raw_outputs(switched_off(spec, model.states_[spec.name], x))
        result["inputs"][spec.name] = {
            out: {
                "permutation": _summary([drop(metric, reference[out], run[out]) for run in permuted]),
                "switch_off": scorer.bootstrap_drop(out, intact, switched, resamples),
            }
            for out, metric in scorer.metrics.items()
        }
    gates = gate_weights(model, x)
    if gates:
        result["gates"] = gates
    return result


def gate_weights(model: Any, x: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """For each gated merge node of a fitted ``model``, the mean weight its gate gives each
    branch over the rows of the encoded inputs ``x``: ``{node: {branch: weight}}``, the
    weights of a node summing to 1. Empty when the model has no gated node.

    The weights say where the gate leans, not how much a branch matters: a gate can also
    switch per row (its mean then hides a choice), or stay near equal weights while the
    layers around it do the fitting. The permutation and switch-off drops measure importance.
    """
    import keras

    from plait.graph import members
    from plait.merges import Gated

    networks = members(model.keras_model)
    found = {layer.name for layer in networks[0].layers}
    gated = [node for node in model.spec.merge_nodes
             if isinstance(node, Gated) and node.gate_layer in found]
    if not gated:
        return {}
    means: dict[str, list[np.ndarray]] = {node.name: [] for node in gated}
    for network in networks:  # an ensemble's members each have their gates: their mean is reported
        # one model for every gate, so the shared branches run once per batch
        probe = keras.Model(network.input, {node.name: network.get_layer(node.gate_layer).output
                                            for node in gated})
        weights = probe.predict({name: x[name] for name in network.input}, verbose=0,
                                batch_size=model.spec.train.batch_size)
        for node in gated:
            means[node.name].append(weights[node.name].mean(axis=0))
    return {node.name: {source: float(mean) for source, mean in
                        zip(model.spec.node_sources(node), np.mean(means[node.name], axis=0), strict=True)}
            for node in gated}


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


def switched_off(spec: Any, state: Any, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoded inputs with input ``spec`` set to its neutral value in every row (and its
    presence mask to 0)."""
    values = x[spec.name]
    neutral = spec.neutral(state).astype(values.dtype)
    changed = {**x, spec.name: np.broadcast_to(neutral, values.shape).copy()}
    if spec.optional:
        changed[spec.mask_name] = np.zeros_like(x[spec.mask_name])
    return changed


def _summary(runs: list[float]) -> dict:
    values = np.asarray(runs, np.float64)
    finite = values[np.isfinite(values)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "runs": [round(float(v), 6) for v in values],
    }
