"""From a spec and fitted states to a plain Keras functional model, compiled."""

from __future__ import annotations

import re
from typing import Any

from plait.errors import ConfigError
from plait.spec import Head, Spec

OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def build(spec: Spec, states: dict[str, Any]) -> Any:
    """One ``keras.Input`` per input, a branch each, the merge nodes, the head, the outputs.

    An ``optional`` input also gets a presence-mask input that multiplies its branch. The
    layers are made under ``train.precision``'s dtype policy (the outputs stay float32).
    With ``train.ensemble`` above 1, that many such networks (``member_0``, ``member_1``, ...)
    are fed the same inputs and each output is their average (see ``ensemble``).
    """
    if spec.train.ensemble == 1:
        return build_member(spec, states, None)
    return ensemble([build_member(spec, states, index) for index in range(spec.train.ensemble)])


def build_member(spec: Spec, states: dict[str, Any], index: int | None) -> Any:
    """The network alone: the whole model (``index`` None), or member ``index`` of an ensemble."""
    from plait.backend import precision

    with precision(spec.train.precision):
        return _build(spec, states, "plait" if index is None else member_name(index))


def member_name(index: int) -> str:
    return f"member_{index}"


def ensemble(networks: list[Any]) -> Any:
    """One model that feeds every network the same inputs and averages each output
    (probabilities or values) over them, in float32.

    >>> import keras
    >>> def network(name, bias):
    ...     x = keras.Input(shape=(1,), name="x")
    ...     dense = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=
    ...                                keras.initializers.Constant(bias), name="y_dense")
    ...     return keras.Model({"x": x}, {"y": dense(x)}, name=name)
    >>> both = ensemble([network("member_0", 1.0), network("member_1", 3.0)])
    >>> both.predict({"x": keras.ops.zeros((1, 1))}, verbose=0)["y"].tolist()
    [[2.0]]
    >>> [network.name for network in members(both)]
    ['member_0', 'member_1']
    """
    import keras

    first = networks[0]
    inputs = {name: keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=name)
              for name, tensor in first.input.items()}
    results = [network(inputs) for network in networks]
    outputs = {name: keras.layers.Average(name=f"{name}_average", dtype="float32")(
        [result[name] for result in results]) for name in first.output}
    return keras.Model(inputs=inputs, outputs=outputs, name="plait")


def members(model: Any) -> list[Any]:
    """The networks an ensemble averages, in order; a single network alone."""
    found = [layer for layer in model.layers if re.fullmatch(r"member_\d+", layer.name)]
    return sorted(found, key=lambda layer: int(layer.name.split("_")[1])) or [model]


def _build(spec: Spec, states: dict[str, Any], model_name: str) -> Any:
    import keras

    from plait.layers.scaled import scale_inputs

    inputs = {
        s.name: keras.Input(shape=s.input_shape(states[s.name]), dtype=s.input_dtype, name=s.name)
        for s in spec.inputs
    }
    masks = {s.name: keras.Input(shape=(1,), name=s.mask_name) for s in spec.inputs if s.optional}
    tensors = {s.name: s.branch(inputs[s.name], states[s.name]) for s in spec.inputs}
    for name, mask in masks.items():
        tensors[name] = keras.layers.Multiply(name=f"{name}_masked")([tensors[name], mask])
    inputs.update({mask.name: mask for mask in masks.values()})
    inputs.update(scale_inputs())  # none, unless plait.attribution is building its copy
    for index, node in enumerate(spec.merge_nodes):
        sources = spec.node_sources(node)
        if len(sources) == 1:
            tensors[node.name] = tensors[sources[0]]
            continue
        branches = {source: tensors[source] for source in sources}
        tensors[node.name] = node.build(branches, spec.merge_path(index), optional=set(masks))
    trunk = None
    outputs = {}
    for out in spec.outputs:
        if out.reads is not None:
            x = tensors[out.reads]
        else:
            trunk = trunk if trunk is not None else head(spec.head, tensors[spec.main_node.name])
            x = trunk
        outputs[out.name] = out.head(x, states[out.name])
    try:
        return keras.Model(inputs=inputs, outputs=outputs, name=model_name)
    except ValueError as error:
        raise ConfigError(f"config: the model cannot be built: {error}") from None


def head(config: Head, x: Any) -> Any:
    from keras import layers

    for index, units in enumerate(config.layers, start=1):
        x = layers.Dense(units, activation=None if config.batch_norm else config.activation,
                         name=f"head_dense_{index}")(x)
        if config.batch_norm:
            x = layers.BatchNormalization(name=f"head_norm_{index}")(x)
            x = layers.Activation(config.activation, name=f"head_activation_{index}")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"head_dropout_{index}")(x)
    return x


def compile_model(model: Any, spec: Spec) -> Any:
    import keras

    optimizer_class = getattr(keras.optimizers, OPTIMIZERS[spec.train.optimizer])
    rates = layer_rates(spec)
    if rates:
        from plait.layers.rates import with_layer_rates

        optimizer_class = with_layer_rates(optimizer_class)
    optimizer = optimizer_class(learning_rate=spec.train.learning_rate)
    for name, rate in rates.items():
        for network in members(model):
            variables = network.get_layer(name).trainable_variables
            optimizer.scale_learning_rate(variables, rate / spec.train.learning_rate)
    model.compile(
        optimizer=optimizer,
        loss={out.name: out.keras_loss() for out in spec.outputs},
        loss_weights={out.name: out.weight for out in spec.outputs},
        metrics={out.name: out.keras_metrics() for out in spec.outputs},
    )
    return model


def layer_rates(spec: Spec) -> dict[str, float]:
    """Layers that learn at a rate of their own (a fine-tuned backbone), by name: their rate."""
    rates: dict[str, float] = {}
    for s in spec.inputs:
        own = getattr(getattr(s, "encoder", None), "layer_rates", None)
        if own is not None:
            rates.update(own(s.name))
    return rates


def layer_groups(spec: Spec, model: Any) -> dict[str, list[Any]]:
    """The model's layers grouped by the input branch, merge node, head or output that made
    them (each layer goes to the longest name its own name starts with)."""
    owners = [s.name for s in spec.inputs] + [n.name for n in spec.merge_nodes]
    owners += ["head"] + [out.name for out in spec.outputs]
    groups: dict[str, list[Any]] = {owner: [] for owner in owners}
    for layer in model.layers:
        matches = [o for o in owners if layer.name == o or layer.name.startswith(o + "_")]
        if matches:
            groups[max(matches, key=len)].append(layer)
    return {owner: layers for owner, layers in groups.items() if layers}
