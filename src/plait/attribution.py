"""Integrated gradients: which words, pixels, steps or values of one row drove a prediction.

For one row ``x`` and one output unit ``f`` (a binary output's probability, the predicted
class's probability, a number in the target's units, a vector's dimension, a label of a
set), each input value gets the share

    (x - x') * mean over a in (0, 1] of df/dx at x' + a (x - x')

where ``x'`` is a baseline that carries no information (the input's ``attribution_baseline``:
its neutral value, a bag without n-grams). The shares of all inputs add up to
``f(x) - f(x')`` (completeness); ``gap`` reports what the quadrature left over. The mean is
taken with ``steps`` Gauss-Legendre nodes, all in one batch.

Words, tags and categories are ids, which have no gradient: their shares are taken on their
embedding (``InputType.embedded``, ``plait.layers.scaled``), scaled from zero to the
embedding of the row, in a copy of the model built with one extra input per embedding (the
scale), weights copied by layer name. The scale is a multiplication, so a text's padding
mask passes through unchanged. An input without either (the token ids of a fine-tuned
pretrained encoder) is held at its value and gets no share.

Each input type then sums its shares into units a person reads (``InputType.attributed``):
words of a text, regions of an image, steps of a sequence, values of a vector, tags of a set;
any other input is one number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from plait.data import Table
from plait.errors import DataError
from plait.layers.scaled import scaled_embeddings

STEPS = 64
"""Gauss-Legendre nodes per row (each is one interpolated row in the gradient batch); more
make ``gap`` smaller where the model's answer turns sharply along the path."""

BATCH = 1024
"""Interpolated rows per gradient call."""


class Attributor:
    """Integrated gradients for a fitted ``plait.Model``; build once, call ``explain`` per
    batch of encoded rows."""

    def __init__(self, model: Any, steps: int = STEPS) -> None:
        if steps < 2:
            raise DataError(f"steps: found {steps}; expected at least 2")
        from plait.graph import build

        self.model, self.spec, self.states = model, model.spec, model.states_
        with scaled_embeddings() as scales:
            self.network = build(self.spec, self.states)
        by_name = {layer.name: layer for layer in model.keras_model.layers}
        for layer in self.network.layers:
            if layer.weights and layer.name in by_name:
                layer.set_weights(by_name[layer.name].get_weights())
        self.scaled = {name: scale.name for name, scale in scales.items()}
        self.moved = {spec.name: moved for spec in self.spec.inputs if (moved := self.moving(spec))}
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        self.alphas, self.weights = (nodes + 1.0) / 2.0, weights / 2.0
        self.steps = steps
        self.gradient = input_gradient(self.network)

    def moving(self, spec: Any) -> str | None:
        """The model input whose values move from baseline to row for input ``spec``: its
        scale, its own values (a float input), or None (held at its value)."""
        if spec.name in self.scaled:
            return self.scaled[spec.name]
        return spec.name if np.dtype(spec.input_dtype).kind == "f" else None

    def explain(self, x: dict[str, np.ndarray], table: Table, row_ids: list[Any]) -> list[dict]:
        """Per row of the encoded inputs ``x`` (from ``table``), for every output, the shares
        of each input in each explained unit (see ``plait.attribution``)."""
        rows = len(row_ids)
        row_tables = [table.take(np.array([row])) for row in range(rows)]
        ends, starts = self.endpoints(x)
        at_row, at_base = self.outputs(ends), self.outputs(starts)
        result = [{"row": row_id, "outputs": {}} for row_id in row_ids]
        for out in self.spec.outputs:
            state = self.states[out.name]
            units = [out.explained_units(at_row[out.name][r], state) for r in range(rows)]
            width = at_row[out.name].shape[1]
            # explained_values is linear: its slope turns shares of the raw output into target units
            scale = out.explained_values(np.ones((1, width)), state)[0] - \
                out.explained_values(np.zeros((1, width)), state)[0]
            value = out.explained_values(at_row[out.name], state)
            baseline = out.explained_values(at_base[out.name], state)
            for slot in range(max(len(chosen) for chosen in units)):
                picked = [chosen[slot] if slot < len(chosen) else None for chosen in units]
                shares = self.shares(ends, starts, out.name, [None if p is None else p[0] for p in picked],
                                     width)
                for r, chosen in enumerate(picked):
                    if chosen is None:
                        continue
                    index, label = chosen
                    inputs = {name: share[r] * scale[index] for name, share in shares.items()}
                    result[r]["outputs"].setdefault(out.name, []).append(
                        self.described(index, label, value[r], baseline[r], inputs, x, row_tables[r], r))
        return result

    def described(self, index: int, label: str, value: np.ndarray, baseline: np.ndarray,
                  shares: dict[str, np.ndarray], x: dict[str, np.ndarray], row_table: Table,
                  row: int) -> dict:
        inputs = {}
        for spec in self.spec.inputs:
            if spec.name not in shares:
                inputs[spec.name] = {"total": None, "held": True}
                continue
            share = shares[spec.name]
            entry = {"total": float(share.sum())}
            units = spec.attributed(share, x[spec.name][row], row_table, self.states[spec.name])
            inputs[spec.name] = {**entry, **(units or {})}
        change = float(value[index] - baseline[index])
        total = sum(entry["total"] for entry in inputs.values() if entry["total"] is not None)
        return {"unit": label, "value": float(value[index]), "baseline": float(baseline[index]),
                "gap": change - total, "inputs": inputs}

    def endpoints(self, x: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The network's inputs at the rows and at their baselines."""
        ends, starts = dict(x), dict(x)
        for spec in self.spec.inputs:
            moving = self.moved.get(spec.name)
            if moving is None:
                continue
            if moving == spec.name:
                baseline = spec.attribution_baseline(x[spec.name], self.states[spec.name])
                starts[moving] = baseline.astype(np.float32)
            else:
                shape = tuple(self.network.get_layer(moving).output.shape[1:])
                ends[moving] = np.ones((len(x[spec.name]), *shape), np.float32)
                starts[moving] = spec.attribution_scale_start(x[spec.name], shape)
        return ends, starts

    def outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self.network.predict(inputs, verbose=0, batch_size=BATCH)
        if not isinstance(raw, dict):
            raw = {self.spec.outputs[0].name: raw}
        return {name: np.asarray(values, np.float64) for name, values in raw.items()}

    def shares(self, ends: dict[str, np.ndarray], starts: dict[str, np.ndarray], output: str,
               units: list[int | None], width: int) -> dict[str, np.ndarray]:
        """Each moving input's integrated gradient of output unit ``units[r]`` in row ``r``
        (rows with None: zero), by input name, shaped as the moved values."""
        moving = self.moved
        rows, steps = len(units), self.steps
        pick = np.zeros((rows, width), np.float32)
        for r, unit in enumerate(units):
            if unit is not None:
                pick[r, unit] = 1.0
        totals = {name: np.zeros(ends[key].shape, np.float64) for name, key in moving.items()}
        per_call = max(1, BATCH // steps)
        for first in range(0, rows, per_call):
            chunk = slice(first, min(rows, first + per_call))
            count = chunk.stop - chunk.start
            path = {}
            for key, values in ends.items():
                end = values[chunk]
                repeated = np.repeat(end, steps, axis=0)
                if key in moving.values():
                    start = np.repeat(starts[key][chunk], steps, axis=0)
                    alpha = np.tile(self.alphas, count).reshape(-1, *([1] * (end.ndim - 1)))
                    repeated = (start + alpha * (repeated - start)).astype(np.float32)
                path[key] = repeated
            weights = {output: np.repeat(pick[chunk], steps, axis=0)}
            gradients = self.gradient(path, list(moving.values()), weights)
            for name, key in moving.items():
                grad = np.asarray(gradients[key], np.float64).reshape(count, steps, *ends[key].shape[1:])
                mean = np.tensordot(self.weights, grad, axes=([0], [1]))
                totals[name][chunk] = mean * (ends[key][chunk] - starts[key][chunk])
        return totals


def input_gradient(network: Any) -> Callable[[dict[str, np.ndarray], list[str], dict[str, np.ndarray]],
                                               dict[str, np.ndarray]]:
    """``gradient(inputs, wrt, weights)``: the gradient of the sum over outputs of
    ``outputs[name] * weights[name]`` with respect to the inputs named in ``wrt``, on this
    backend (inference mode: dropout off)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_gradient(network)
    if backend == "tensorflow":
        return _tensorflow_gradient(network)
    return _torch_gradient(network)


def _weighted(outputs: dict[str, Any], weights: dict[str, Any]) -> Any:
    import keras

    return sum(keras.ops.sum(outputs[name] * weight) for name, weight in weights.items())


def _jax_gradient(network: Any) -> Callable:
    import jax

    def objective(moving: dict, fixed: dict, weights: dict, trainable: list, frozen: list) -> Any:
        outputs, _ = network.stateless_call(trainable, frozen, {**fixed, **moving}, training=False)
        return _weighted(outputs, weights)

    grad = jax.jit(jax.grad(objective))

    def gradient(inputs: dict, wrt: list[str], weights: dict) -> dict:
        moving = {name: inputs[name] for name in wrt}
        fixed = {name: value for name, value in inputs.items() if name not in moving}
        return grad(moving, fixed, weights, [v.value for v in network.trainable_variables],
                    [v.value for v in network.non_trainable_variables])

    return gradient


def _tensorflow_gradient(network: Any) -> Callable:
    import tensorflow as tf

    def gradient(inputs: dict, wrt: list[str], weights: dict) -> dict:
        tensors = {name: tf.convert_to_tensor(value) for name, value in inputs.items()}
        with tf.GradientTape() as tape:
            for name in wrt:
                tape.watch(tensors[name])
            total = _weighted(network(tensors, training=False), weights)
        found = tape.gradient(total, {name: tensors[name] for name in wrt})
        return {name: value.numpy() for name, value in found.items()}

    return gradient


def _torch_gradient(network: Any) -> Callable:
    import keras
    import torch

    def gradient(inputs: dict, wrt: list[str], weights: dict) -> dict:
        tensors = {name: keras.ops.convert_to_tensor(value) for name, value in inputs.items()}
        for name in wrt:
            tensors[name].requires_grad_(True)
        total = _weighted(network(tensors, training=False),
                          {name: keras.ops.convert_to_tensor(value) for name, value in weights.items()})
        found = torch.autograd.grad(total, [tensors[name] for name in wrt])
        return {name: value.detach().cpu().numpy() for name, value in zip(wrt, found, strict=True)}

    return gradient



def chosen_rows(source: Any, rows: list[int], columns: list[str]) -> Table:
    """Rows of ``source`` by their 0-based number across all its files, in the order asked,
    as one table that still names where each came from."""
    if not rows:
        raise DataError("rows: found none; expected 0-based row numbers such as 0,5,9")
    wanted = np.asarray(rows, np.int64)
    if (wanted < 0).any():
        raise DataError(f"rows: found {int(wanted[wanted < 0][0])}; expected row numbers from 0")
    pieces, taken, counts, seen = [], [], [], 0
    for file_index, _, table in source.batches(columns):
        while len(counts) <= file_index:
            counts.append(0)
        inside = np.flatnonzero((wanted >= seen) & (wanted < seen + table.num_rows))
        if inside.size:
            local = wanted[inside] - seen
            pieces.append((inside, table.arrow.take(local)))
            taken.append((file_index, counts[file_index] + local))
        counts[file_index] += table.num_rows
        seen += table.num_rows
    if (wanted >= seen).any():
        raise DataError(f"{source.name}: rows: found {int(wanted[wanted >= seen][0])}; the data has {seen} "
                        f"rows, numbered 0 to {seen - 1}")
    found = source.gathered([piece for _, piece in pieces], taken, counts)
    order = np.argsort(np.concatenate([inside for inside, _ in pieces]), kind="stable")
    return found.take(order)
