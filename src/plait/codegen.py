"""``plait code``: a config, or a trained bundle, as a plain Keras functional-API script.

The script is written from the Keras model plait itself builds, so it has exactly plait's
layers, shapes and parameters; it reads like hand-written code: one ``keras.Input`` per
input, a variable per branch, the merge, the head, the outputs, ``keras.Model`` and
``compile``, each layer call with only its non-default arguments and its plait name.
Preprocessing is not part of it: the model takes arrays encoded as plait encodes them.

>>> from plait.spec import load_spec
>>> spec = load_spec({"inputs": [{"name": "a", "type": "vector", "size": 3, "layers": [4]},
...                              {"name": "b", "type": "number"}],
...                   "outputs": [{"name": "y", "type": "binary"}]})
>>> print([line for line in generate(spec).splitlines() if "layers.Dense(4" in line][0])
a_features = layers.Dense(4, activation="relu", name="a_dense_1")(a)
"""

from __future__ import annotations

import inspect
import keyword
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plait.errors import PlaitError
from plait.layers import is_custom
from plait.spec import Spec

RESERVED = {"keras", "layers", "model", "os", "WEIGHTS", "build_member"}
WIDTH = 99
SKIPPED_KEYS = {"name", "build_config", "compile_config"}
ALWAYS_SHOWN = {"pool_size"}  # a reader should not have to know the pooling layers' default
WINDOW_KEYS = {"kernel_size", "strides", "pool_size", "dilation_rate"}  # (3,) reads better as 3


class CodegenError(PlaitError):
    """The model holds something plait code cannot write as plain Keras."""


def generate(spec: Spec, states: dict[str, Any] | None = None, *, weights: str | Path | None = None,
             source: str | None = None, model: Any = None) -> str:
    """The Python source of a script that builds (and, given ``weights``, loads) the model.

    ``states`` are fitted preprocessing states; without them the sizes are the config's
    own (declared or default: the same as ``plait describe`` without data). ``weights`` is
    a ``.keras`` file whose weights the script loads; ``source`` names the config or
    bundle in the script's docstring. ``model`` is the Keras model plait built from these
    (a fitted model's, or a loaded bundle's); without it, it is built here.
    """
    from plait.backend import precision
    from plait.graph import build, members
    from plait.model import placeholder_states

    fitted = states is not None
    states = states if fitted else placeholder_states(spec)
    model = model if model is not None else build(spec, states)
    with precision(spec.train.precision):  # a layer's dtype is written only where it differs from it
        return _Writer(spec, states, members(model)[0]).script(fitted, weights, source)


def generate_for(target: Path, data: Path | None = None) -> str:
    """The script for a config file (sizes fitted on ``data`` when given) or a bundle directory
    (its fitted sizes, and its trained weights)."""
    from plait.model import Model, fitted_states
    from plait.spec import load_spec

    if not target.exists():
        raise PlaitError(f"{target}: no such config file or bundle directory")
    if target.is_dir():
        from plait.bundle import verify

        verify(target)  # a folder that is no bundle is told so before Keras is imported
        model = Model.load(target)
        return generate(model.spec, model.states_, weights=(target / "model.keras").resolve(),
                        source=f"the trained bundle {target}", model=model.keras_model)
    spec = load_spec(target)
    states = None
    if data is not None:
        states = fitted_states(spec, data)
    return generate(spec, states, source=f"the config {target}" + (f", fitted on {data}" if data else ""))


@dataclass
class _Writer:
    """Walks plait's Keras model in plait's own order and writes each layer call."""

    spec: Spec
    states: dict[str, Any]
    model: Any
    names: dict[int, str] = field(default_factory=dict)  # id(tensor) -> variable holding it
    holders: dict[str, Any] = field(default_factory=dict)  # variable -> tensor it holds now
    streams: dict[str, str] = field(default_factory=dict)  # stream -> its variable
    claimed: set[str] = field(default_factory=set)
    last_use: dict[int, int] = field(default_factory=dict)  # id(tensor) -> last reader's position
    position: int = 0  # the layer being written, counted from 1
    fitted: bool = False
    written: dict[str, str] = field(default_factory=dict)  # layer name -> the call its encoder writes
    imports: list[str] = field(default_factory=list)  # modules those calls need
    width: int = WIDTH  # of a line, less the indent of an ensemble's member function

    def script(self, fitted: bool, weights: str | Path | None, source: str | None) -> str:
        self.fitted = fitted
        self.encoders_code()
        order = self.order()
        self.last_use = self.uses(order)
        for name in self.public_names():
            self.claimed.add(_identifier(name))
        ensemble = self.spec.train.ensemble > 1
        if ensemble:
            self.width = WIDTH - 4
        body = [line for owner_layers in order for line in self.section(*owner_layers)]
        if ensemble:
            body = self.member_function(body) + self.ensemble_footer(weights)
        else:
            body += self.footer(weights)
        return "\n".join(self.header(fitted, weights, source) + body) + "\n"

    def encoders_code(self) -> None:
        """The layer calls that inputs' encoders write themselves (a fine-tuned pretrained
        backbone, made from its preset), and the modules they import."""
        for s in self.spec.inputs:
            own = getattr(getattr(s, "encoder", None), "written_layers", None)
            if own is not None:
                imports, calls = own(s.name, self.states[s.name])
                self.imports += [line for line in imports if line not in self.imports]
                self.written.update(calls)

    # -- order -------------------------------------------------------------------------

    def public_names(self) -> list[str]:
        names = [s.name for s in self.spec.inputs] + [s.mask_name for s in self.spec.inputs if s.optional]
        names += [n.name for n in self.spec.merge_nodes] + [out.name for out in self.spec.outputs]
        return names

    def order(self) -> list[tuple[str, str, list[Any]]]:
        """Sections (kind, owner, layers) in the order plait's graph builds them; each
        section's layers in the model's topological order."""
        from plait.graph import layer_groups

        groups = layer_groups(self.spec, self.model)
        inputs = [layer for layer in self.model.layers if _is_input(layer)]
        by_name = {layer.name: layer for layer in inputs}
        wanted = []
        for s in self.spec.inputs:
            wanted += [s.name] + ([s.mask_name] if s.optional else [])
        sections = [("inputs", "", [by_name[name] for name in wanted if name in by_name])]
        for s in self.spec.inputs:
            sections.append(("branch", s.name, _non_input(groups.get(s.name, []))))
        for node in self.spec.merge_nodes:
            sections.append(("merge", node.name, groups.get(node.name, [])))
        head_done = False
        for out in self.spec.outputs:
            if out.reads is None and not head_done:
                sections.append(("head", "head", groups.get("head", [])))
                head_done = True
            sections.append(("output", out.name, groups.get(out.name, [])))
        placed = [layer for _, _, layers in sections for layer in layers]
        if len(placed) != len(self.model.layers) or not _topological(placed):
            return [("layers", "", list(self.model.layers))]
        return [section for section in sections if section[2]]

    def uses(self, order: list[tuple[str, str, list[Any]]]) -> dict[int, int]:
        """For each tensor, the position of the last layer that reads it (outputs: the end)."""
        last: dict[int, int] = {}
        position = 0
        for _, _, layers in order:
            for layer in layers:
                position += 1
                for tensor in _arguments(layer)[1]:
                    last[id(tensor)] = position
        for tensor in self.model.outputs:
            last[id(tensor)] = position + 1
        self.position = 0
        return last

    # -- sections ----------------------------------------------------------------------

    def section(self, kind: str, owner: str, layers: list[Any]) -> list[str]:
        lines = ["", f"# {self.title(kind, owner)}"]
        for layer in layers:
            self.position += 1
            if _is_input(layer):
                lines += self.input_line(layer)
                continue
            call, tensors, form = _arguments(layer)
            inputs = [self.names[id(t)] for t in tensors]
            written = {"list": f"[{', '.join(inputs)}]", "positional": ", ".join(inputs)}
            argument = written.get(form, inputs[0])
            variable = self.assign(layer, kind, owner, tensors)
            call = self.written.get(layer.name) or _layer_call(layer)
            lines += _wrap(f"{variable} = ", call, argument, form == "list", self.width)
        return lines

    def title(self, kind: str, owner: str) -> str:
        if kind == "inputs":
            return "Inputs: one per config input, fed with arrays encoded as plait encodes them."
        if kind == "branch":
            spec = next(s for s in self.spec.inputs if s.name == owner)
            return f"Branch of input {owner!r} ({spec.type})."
        if kind == "merge":
            node = next(n for n in self.spec.merge_nodes if n.name == owner)
            sources = ", ".join(self.spec.node_sources(node))
            return f"Merge node {owner!r}: {node.strategy} of {sources}."
        if kind == "head":
            return "Head: the shared layers after the merge."
        if kind == "output":
            out = next(o for o in self.spec.outputs if o.name == owner)
            reads = out.reads or ("the head" if self.spec.head.layers else self.spec.main_node.name)
            return f"Output {owner!r} ({out.type}), reading {reads}.{self.output_note(out)}"
        return "Layers."

    def output_note(self, out: Any) -> str:
        """What the output's units hold, from its fitted state (nothing before fitting)."""
        if not self.fitted:
            return ""
        return f"\n# It predicts {out.describe_units(self.states[out.name])}."

    def input_line(self, layer: Any) -> list[str]:
        tensor = layer.output
        variable = _identifier(layer.name)
        self.claimed.add(variable)
        self.bind(variable, tensor)
        shape = tuple(tensor.shape[1:])
        dtype = "" if tensor.dtype == "float32" else f", dtype={_literal(tensor.dtype)}"
        line = f"{variable} = keras.Input(shape={_literal(shape)}{dtype}, name={_literal(layer.name)})"
        return [f"# {self.input_note(layer.name)}", line]

    def input_note(self, name: str) -> str:
        for s in self.spec.inputs:
            if name == s.name:
                return f"{name}: {s.describe_array(self.states[s.name], self.fitted)}"
            if s.optional and name == s.mask_name:
                return f"{name}: 1.0 where {s.name} is present, 0.0 where it is missing"
        return name

    def assign(self, layer: Any, kind: str, owner: str, tensors: list[Any]) -> str:
        """The variable for this layer's output: its stream's variable when that may be
        overwritten (hand-written style: ``x = layer(x)``), else the layer's own name."""
        stream = {"branch": f"{owner}_features", "merge": owner, "head": "head",
                  "output": owner}.get(kind, layer.name)
        if kind == "merge" and layer.name != owner:  # a projection before the merge layer
            stream = layer.name
        if stream not in self.streams:
            self.streams[stream] = self.fresh(_identifier(stream), stream in self.public_names())
        variable = self.streams[stream]
        if not self.free(variable):
            variable = self.fresh(_identifier(layer.name), False)
        self.bind(variable, layer.output)
        return variable

    def fresh(self, wanted: str, public: bool) -> str:
        if public or wanted not in self.claimed:
            self.claimed.add(wanted)
            return wanted
        number = 2
        while f"{wanted}_{number}" in self.claimed:
            number += 1
        self.claimed.add(f"{wanted}_{number}")
        return f"{wanted}_{number}"

    def free(self, variable: str) -> bool:
        """Whether the tensor this variable holds is no longer needed after this layer."""
        held = self.holders.get(variable)
        return held is None or self.last_use.get(id(held), 0) <= self.position

    def bind(self, variable: str, tensor: Any) -> None:
        self.holders[variable] = tensor
        self.names[id(tensor)] = variable

    # -- header and footer -------------------------------------------------------------

    def header(self, fitted: bool, weights: str | Path | None, source: str | None) -> list[str]:
        described = (source or "a plait config").replace("\\", "/").replace('"', "'")
        sizes = ("Sizes come from the fitted preprocessing." if fitted else
                 "Sizes that depend on data (vocabularies, category counts, inferred lengths) "
                 "are the config's declared or default values; `plait code CONFIG --data FILE` "
                 "fits them.")
        paragraphs = [
            f"Keras functional-API model for {described}, written by `plait code`.",
            "It builds the same network as plait: the same layers, names, shapes and "
            "parameters. Preprocessing is not part of this script: each input takes the array "
            "plait's encoder makes from its column (scaled numbers, category and token "
            "indices, pixels in [0, 1]), as the comments on the inputs say. " + sizes,
        ]
        if weights is not None:
            paragraphs.append("The trained weights are loaded from the bundle's model.keras "
                              "(WEIGHTS below).")
        doc = "\n\n".join(_fill(text, 88) for text in paragraphs)
        lines = ['"""' + doc, '"""', "", "import os", "",
                 "# plait runs Keras on JAX unless KERAS_BACKEND says otherwise.",
                 'os.environ.setdefault("KERAS_BACKEND", "jax")', "",
                 "import keras  # noqa: E402",
                 "from keras import layers  # noqa: E402",
                 *(f"{line}  # noqa: E402" for line in self.imports)]
        if self.spec.train.precision != "float32":
            lines += ["", "# train.precision: the layers compute in 16 bits, the outputs in float32.",
                      f"keras.mixed_precision.set_dtype_policy({_literal(self.spec.train.precision)})"]
        if weights is not None:
            lines += ["", f"WEIGHTS = {_literal(str(weights))}"]
        return lines + self.custom_layers()

    def custom_layers(self) -> list[str]:
        """The source of each of plait's own layers the model uses, so the script needs
        only Keras (and keras-hub for a pretrained backbone), and of the optimizer mixin
        when layers learn at rates of their own."""
        from plait.graph import OPTIMIZERS, layer_rates
        from plait.layers.rates import LayerRates

        objects = [*self.model.layers, *(out.keras_loss() for out in self.spec.outputs)]
        used = list(dict.fromkeys(type(item) for item in objects if is_custom(type(item))))
        rates = layer_rates(self.spec)
        if not used and not rates:
            return []
        lines = ["", "", "# plait's own layers used below, written out so that this script needs no plait."]
        for cls in used:
            lines += ["", "", *inspect.getsource(cls).rstrip().splitlines()]
        if rates:
            base = OPTIMIZERS[self.spec.train.optimizer]
            lines += ["", "", *inspect.getsource(LayerRates).rstrip().splitlines(), "", "",
                      f"class {base}WithLayerRates(LayerRates, keras.optimizers.{base}):",
                      f'    """{base} whose chosen variables learn at a rate of their own."""']
        return lines + [""]

    def footer(self, weights: str | Path | None) -> list[str]:
        lines = self.model_lines(_literal(self.model.name))
        if weights is not None:
            lines += ["", "# The trained weights saved by `plait train`; the layers above match them "
                      "one to one.", "model.load_weights(WEIGHTS)"]
        lines += [""] + self.optimizer_lines() + self.compile_lines()
        train = self.spec.train
        lines += ["", "# Train on encoded arrays as plait does: x maps each input name above to its "
                  "array,", "# y each output name to its encoded targets.",
                  f"# model.fit(x, y, epochs={train.epochs}, batch_size={train.batch_size})"]
        return lines + self.main_lines()

    def model_lines(self, name: str) -> list[str]:
        inputs = {name: self.names[id(self.model.input[name])] for name in self._input_names()}
        outputs = {out.name: self.names[id(self.model.output[out.name])] for out in self.spec.outputs}
        lines = ["", "model = keras.Model("]
        lines += _mapping_lines("    inputs=", inputs, self.width)
        lines += _mapping_lines("    outputs=", outputs, self.width)
        return lines + [f"    name={name},", ")"]

    @staticmethod
    def main_lines() -> list[str]:
        return ["", 'if __name__ == "__main__":', "    model.summary()"]

    def member_function(self, body: list[str]) -> list[str]:
        """An ensemble's network as a function that builds one member."""
        inner = "\n".join(body + self.model_lines("name")).splitlines()
        return ["", "", "def build_member(name: str) -> keras.Model:",
                '    """One network of the ensemble: plait trains each on its own."""',
                *(f"    {line}" if line else "" for line in inner[1:]), "    return model"]

    def ensemble_footer(self, weights: str | Path | None) -> list[str]:
        train = self.spec.train
        lines = ["", "", f"# train.ensemble: {train.ensemble} members, each trained on its own; "
                 "the model averages their outputs.",
                 f'members = [build_member(f"member_{{index}}") for index in range({train.ensemble})]',
                 "inputs = {", "    name: keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)",
                 "    for name, tensor in members[0].input.items()", "}",
                 "results = [member(inputs) for member in members]", "outputs = {",
                 '    name: layers.Average(name=f"{name}_average", dtype="float32")(',
                 "        [result[name] for result in results])", "    for name in members[0].output", "}",
                 'model = keras.Model(inputs=inputs, outputs=outputs, name="plait")']
        if weights is not None:
            lines += ["", "# The trained weights saved by `plait train`; the members above match them "
                      "one to one.", "model.load_weights(WEIGHTS)"]
        compiled = self.optimizer_lines("member") + self.compile_lines("member")
        lines += ["", "# Each member is compiled and trained on its own, as plait does: seeded with "
                  "train.seed plus", "# its number (its batch order too). x maps each input name above "
                  "to its array, y each", "# output name to its encoded targets.",
                  "for index, member in enumerate(members):",
                  *(f"    {line}" if line else "" for line in compiled),
                  f"    # keras.utils.set_random_seed({train.seed} + index)",
                  f"    # member.fit(x, y, epochs={train.epochs}, batch_size={train.batch_size})"]
        return lines + self.main_lines()

    def _input_names(self) -> list[str]:
        names = []
        for s in self.spec.inputs:
            names += [s.name] + ([s.mask_name] if s.optional else [])
        return names

    def optimizer_lines(self, model: str = "model") -> list[str]:
        """The optimizer, made before ``compile`` when layers learn at rates of their own."""
        from plait.graph import OPTIMIZERS, layer_rates

        train = self.spec.train
        rates = layer_rates(self.spec)
        if not rates:
            return []
        base, rate = OPTIMIZERS[train.optimizer], train.learning_rate
        lines = ["# These layers learn at rates of their own: their steps are scaled, as plait does.",
                 f"optimizer = {base}WithLayerRates(learning_rate={rate!r})"]
        for name, own in rates.items():
            lines += ["optimizer.scale_learning_rate(",
                      f"    {model}.get_layer({_literal(name)}).trainable_variables, {own!r} / {rate!r})"]
        return lines + [""]

    def compile_lines(self, model: str = "model") -> list[str]:
        from plait.graph import OPTIMIZERS, layer_rates

        train = self.spec.train
        optimizer = f"keras.optimizers.{OPTIMIZERS[train.optimizer]}(learning_rate={train.learning_rate!r})"
        if layer_rates(self.spec):
            optimizer = "optimizer"
        losses = {out.name: _object(out.keras_loss(), "losses") for out in self.spec.outputs}
        weights = {out.name: repr(float(out.weight)) for out in self.spec.outputs}
        metrics = {out.name: [_object(metric, "metrics") for metric in out.keras_metrics()]
                   for out in self.spec.outputs}
        lines = [f"{model}.compile(", f"    optimizer={optimizer},"]
        for key, value in (("loss", losses), ("loss_weights", weights), ("metrics", metrics)):
            lines += _mapping_lines(f"    {key}=", value, self.width)
        return lines + [")"]


# -- layers -----------------------------------------------------------------------------


def _is_input(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _non_input(layers: list[Any]) -> list[Any]:
    return [layer for layer in layers if not _is_input(layer)]


def _arguments(layer: Any) -> tuple[Any, list[Any], str]:
    """The node calling this layer, the tensors it reads, and how they were passed: ``one``
    tensor, a ``list`` of them (merge layers), or several ``positional`` ones (attention's
    query and value)."""
    import keras

    if _is_input(layer):
        return None, [], "one"
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise CodegenError(f"layer {layer.name!r} is called {len(nodes)} times; plait code writes "
                           "layers called once")
    node = nodes[0]
    args, kwargs = node.arguments.args, node.arguments.kwargs
    several = len(args) > 1 and all(isinstance(arg, keras.KerasTensor) for arg in args)
    if not args or (len(args) > 1 and not several) or set(kwargs) - {"mask", "training"}:
        raise CodegenError(f"layer {layer.name!r} is called with arguments plait code cannot write")
    if several:
        return node, list(args), "positional"
    first = args[0]
    listed = isinstance(first, (list, tuple))
    return node, list(first) if listed else [first], "list" if listed else "one"


def _topological(layers: list[Any]) -> bool:
    seen: set[int] = set()
    for layer in layers:
        if any(id(t) not in seen for t in _arguments(layer)[1]):
            return False
        seen.add(id(layer.output))
    return True


def _layer_call(layer: Any, named: bool = True) -> str:
    """``layers.Class(required, non_default=..., name=...)`` for a built-in Keras layer."""
    import keras

    cls = type(layer)
    custom = is_custom(cls)
    if getattr(keras.layers, cls.__name__, None) is not cls and not custom:
        raise CodegenError(f"layer {layer.name!r} is a {cls.__module__}.{cls.__name__}, neither a "
                           "built-in Keras layer nor one of plait's own (plait.layers)")
    config = layer.get_config()
    if cls.__name__ == "Bidirectional":
        arguments = [_layer_call(layer.forward_layer, named=False)]
        skip = {"layer", "backward_layer"}
        default = cls(keras.layers.LSTM(1)).get_config()
    else:
        arguments, skip, default = _required(cls, config)
    first = [name for name in inspect.signature(cls.__init__).parameters if name != "self"][0]
    for key, value in config.items():
        shown = key in ALWAYS_SHOWN and key not in skip
        if not shown and (key in SKIPPED_KEYS or key in skip or (key in default and default[key] == value)):
            continue
        written = _argument(key, value)
        arguments.append(written if shown and key == first and not arguments else f"{key}={written}")
    if named:
        arguments.append(f"name={_literal(layer.name)}")
    return f"{'' if custom else 'layers.'}{cls.__name__}({', '.join(arguments)})"


def _required(cls: type, config: dict) -> tuple[list[str], set[str], dict]:
    """Positional arguments for the constructor's required parameters (and any parameter a
    default instance cannot do without), the keys they cover, and a default instance's
    config to compare the rest with."""
    parameters = [p for name, p in inspect.signature(cls.__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
    given = {name: config[name] for name in required}
    try:
        default = cls(**given).get_config()
    except (TypeError, ValueError):
        extra = {p.name: config[p.name] for p in parameters
                 if p.default is None and config.get(p.name) is not None}
        try:
            default = cls(**given, **extra).get_config()
        except (TypeError, ValueError) as error:
            raise CodegenError(f"cannot write a {cls.__name__} layer: {error}") from None
        written = [_argument(n, given[n]) for n in required]
        written += [f"{k}={_argument(k, v)}" for k, v in extra.items()]
        return written, set(given) | set(extra), default
    return [_argument(name, given[name]) for name in required], set(given), default


def _argument(key: str, value: Any) -> str:
    """A layer argument's source; a one-element window (kernel, pool, strides) as its number,
    a dtype policy as its name."""
    if key in WINDOW_KEYS and isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if key == "dtype" and isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = value["config"]["name"]
    return _literal(value)


def _object(value: Any, module: str) -> str:
    """A loss or metric: a string stays a string; an object becomes its constructor call."""
    if isinstance(value, str):
        return _literal(value)
    if is_custom(type(value)):
        # plait's own class, written into the script: built from its whole config
        arguments = ", ".join(f"{key}={_literal(item)}" for key, item in value.get_config().items())
        return f"{type(value).__name__}({arguments})"
    name = getattr(value, "name", None)
    return f"keras.{module}.{type(value).__name__}(" + (f"name={_literal(name)}" if name else "") + ")"


def _literal(value: Any) -> str:
    """Python source for a config value, strings in double quotes."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        items = ", ".join(_literal(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        if "class_name" in value and "module" in value:
            return f"keras.saving.deserialize_keras_object({_mapping_literal(value)})"
        return _mapping_literal(value)
    return repr(value)


def _mapping_literal(value: dict) -> str:
    return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"


def _mapping_lines(prefix: str, value: dict[str, str | list[str]], width: int = WIDTH) -> list[str]:
    """``prefix{key: value, ...},`` for values that are already source text (a list: its
    items' source): one line, or one entry a line, or one list item a line, as width allows."""
    def written(item: str | list[str]) -> str:
        return "[" + ", ".join(item) + "]" if isinstance(item, list) else item

    entries = [f"{_literal(k)}: {written(v)}" for k, v in value.items()]
    line = prefix + "{" + ", ".join(entries) + "},"
    if len(line) <= width:
        return [line]
    indent = " " * (len(prefix) - len(prefix.lstrip()) + 4)
    lines = [prefix + "{"]
    for (key, item), entry in zip(value.items(), entries, strict=True):
        if len(f"{indent}{entry},") <= width or not isinstance(item, list):
            lines.append(f"{indent}{entry},")
        else:
            lines += [f"{indent}{_literal(key)}: [", *(f"{indent}    {part}," for part in item),
                      f"{indent}],"]
    return lines + [indent[:-4] + "},"]


def _fill(text: str, width: int) -> str:
    """``textwrap.fill`` that never breaks a line inside a `code span`."""
    import re
    import textwrap

    glued = re.sub(r"`[^`]*`", lambda span: span.group().replace(" ", "\0"), text)
    return textwrap.fill(glued, width).replace("\0", " ")


def _identifier(name: str) -> str:
    return f"{name}_" if keyword.iskeyword(name) or name in RESERVED else name


def _wrap(prefix: str, call: str, argument: str, listed: bool, width: int = WIDTH) -> list[str]:
    """``prefix call(argument)`` on one line; when too long, a list of tensors goes on its own
    line, and a layer's arguments go on theirs: the layer, then what it is applied to."""
    line = f"{prefix}{call}({argument})"
    if len(line) <= width:
        return [line]
    after_call = [f"{prefix}{call}(", f"    {argument}", ")"]
    opening = call.index("(")
    inside_call = [prefix + call[:opening + 1], f"    {call[opening + 1:-1]}", f")({argument})"]
    preferred, other = (after_call, inside_call) if listed else (inside_call, after_call)
    return preferred if max(map(len, preferred)) <= width or max(map(len, other)) > width else other
