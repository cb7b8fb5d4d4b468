"""The config: validated with pydantic, cross-checked, and read from YAML or a dict.

Every mistake becomes one ``ConfigError`` whose lines each name the path in the config
(``inputs[2].encoder.units``), the value found, and what is allowed.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from plait.distributed import Distribution
from plait.encoders import SEQUENCE_ENCODERS
from plait.errors import ConfigError
from plait.merges import Concat, Merge
from plait.registry import INPUT_TYPES, MERGES, OUTPUT_TYPES
from plait.schema import Activation, Rate, Strict, Units
from plait.tuning.space import Tune

InputSpec = Annotated[Union[tuple(INPUT_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
OutputSpec = Annotated[Union[tuple(OUTPUT_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
MergeSpec = Annotated[Union[tuple(MERGES.values())], Field(discriminator="strategy")]  # noqa: UP007
DEFAULT_STRATEGY = "concat"


class Head(Strict):
    """Dense layers after the main merge, shared by the outputs that read it."""

    layers: list[Units] = []
    activation: Activation = "relu"
    dropout: Rate = 0.0
    batch_norm: bool = False


class EarlyStopping(Strict):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; keep the best weights.

    ``mode`` ``auto`` minimises losses and errors (names with loss, mae, mse, error) and
    maximises the rest (accuracy, auc).

    >>> EarlyStopping(monitor="val_recommended_auc").direction
    'max'
    """

    patience: int = Field(default=3, ge=1)
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = Field(default=0.0, ge=0.0)

    @property
    def direction(self) -> str:
        if self.mode != "auto":
            return self.mode
        lowered = ("loss", "mae", "mse", "error", "crossentropy")
        return "min" if any(word in self.monitor for word in lowered) else "max"


class Train(Strict):
    """How to train. ``validation_split`` is stratified on the first classification output.

    Data larger than memory is streamed: read in record batches of ``part_rows`` rows,
    encoded once into an on-disk cache (``cache_dir``, by default ``$PLAIT_CACHE_DIR`` or
    ``~/.cache/plait``) that every epoch and every later run on the same data reuses. With
    ``stream: auto`` that happens for a folder of files and for a file over
    ``stream_above_mb`` megabytes. A streamed run fits preprocessing on a uniform sample of
    ``fit_rows`` training rows, and its validation split is random rather than stratified.
    Unless the config gives them, ``part_rows`` and ``fit_rows`` are sized to ``memory_mb``.
    """

    epochs: int = Field(default=10, gt=0, le=100000)
    batch_size: int = Field(default=256, gt=0, le=1_000_000)
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    validation_split: float = Field(default=0.1, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None
    seed: int = Field(default=0, ge=0)
    stream: Literal["auto", "always", "never"] = "auto"
    stream_above_mb: float = Field(default=512.0, gt=0.0)
    part_rows: int = Field(default=65_536, gt=0)
    fit_rows: int = Field(default=200_000, gt=0)
    memory_mb: float | None = Field(default=None, gt=0)
    """What a streamed run's data may take (``plait.memory``): ``part_rows`` and ``fit_rows``
    that the config leaves out are sized to it, up to their defaults. None: half of the memory
    available when the run starts (the lesser of ``MemAvailable`` and the cgroup's room)."""
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    """Keras's dtype policy while the model is built and trained: ``mixed_*`` computes in 16
    bits and keeps the weights and the outputs in float32 (``mixed_float16`` scales the loss)."""
    cache_dir: str | None = None
    track: Literal["mlflow"] | None = None
    """Log the run to MLflow (``plait.mlflow``), as ``plait train --track mlflow`` does."""
    distribution: Distribution | None = None
    """Devices to train on, and large embedding tables split across them
    (``plait.distributed``); ``plait train --devices`` sets ``devices``."""
    ensemble: int = Field(default=1, ge=1, le=32)
    """How many copies of the network to train, one after another, each from its own random
    start (seed ``seed + k``) with its own batch order and early stopping; the saved model
    averages their outputs (probabilities, or values). A deep ensemble: it costs that many
    times the training and prediction time, and usually predicts better than any member."""

    model_keys: ClassVar[frozenset[str]] = frozenset(
        {"epochs", "batch_size", "learning_rate", "optimizer", "early_stopping", "track", "precision",
         "distribution", "ensemble"})
    """Keys that change training but not the fitted preprocessing or the encoded data."""

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value


class Spec(Strict):
    """A whole model: inputs, merge node(s), head, outputs, training.

    ``merge: []`` declares no merge at all: each output then reads one input branch with
    ``from`` (independent predictions from separate inputs).

    >>> spec = Spec.model_validate({
    ...     "inputs": [{"name": "age", "type": "number"}, {"name": "city", "type": "category"}],
    ...     "outputs": [{"name": "bought", "type": "binary"}],
    ... })
    >>> [node.name for node in spec.merge_nodes]
    ['merged']
    """

    inputs: list[InputSpec] = Field(min_length=1)
    merge: MergeSpec | list[MergeSpec] = Field(default_factory=Concat)
    head: Head = Field(default_factory=Head)
    outputs: list[OutputSpec] = Field(min_length=1)
    train: Train = Field(default_factory=Train)
    tune: Tune | None = None
    """What ``plait tune`` searches (``plait.tuning.space``); training ignores it."""

    @field_validator("merge", mode="before")
    @classmethod
    def _default_strategy(cls, value: Any) -> Any:
        """A node without ``strategy`` concatenates."""
        def completed(node: Any) -> Any:
            return {"strategy": DEFAULT_STRATEGY, **node} if isinstance(node, dict) else node

        return [completed(node) for node in value] if isinstance(value, list) else completed(value)

    @property
    def merge_nodes(self) -> list[Merge]:
        return list(self.merge) if isinstance(self.merge, list) else [self.merge]

    @property
    def main_node(self) -> Merge:
        return self.merge_nodes[-1]

    def merge_path(self, index: int) -> str:
        return f"merge[{index}]" if isinstance(self.merge, list) else "merge"

    def node_sources(self, node: Merge) -> list[str]:
        return list(node.inputs) if node.inputs else [spec.name for spec in self.inputs]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def preprocessing(self) -> dict:
        """The part of the config the fitted states and encoded data depend on: two specs
        that agree on it fit and encode the same data the same way.

        >>> one = Spec.model_validate({"inputs": [{"name": "t", "type": "text"}],
        ...                            "outputs": [{"name": "y", "type": "binary"}]})
        >>> other = one.model_copy(update={"head": Head(layers=[32]), "train": Train(learning_rate=0.01)})
        >>> one.preprocessing() == other.preprocessing()
        True
        """
        return {"inputs": [spec.preprocessing() for spec in self.inputs],
                "outputs": [out.model_dump(mode="json", by_alias=True) for out in self.outputs],
                "train": self.train.model_dump(mode="json", exclude=set(Train.model_keys))}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_spec(source: str | Path | dict | Spec) -> Spec:
    """A validated Spec from a YAML/JSON file, a dict, or a Spec."""
    if isinstance(source, Spec):
        return source
    where = "config"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = read_config_file(Path(source))
    if not isinstance(source, dict):
        raise ConfigError(f"{where}: found a {type(source).__name__}; expected a mapping with "
                          "'inputs' and 'outputs'")
    try:
        spec = Spec.model_validate(source)
    except ValidationError as error:
        raise ConfigError(f"{where}: invalid config\n" + format_errors(error, source)) from None
    check_references(spec, where)
    return spec


def read_config_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


def format_errors(error: ValidationError, raw: dict) -> str:
    lines = []
    for item in error.errors(include_url=False):
        located = config_path(item["loc"], raw)
        if located is None:
            continue
        path, model = located
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_keys(model))) if model else "see the config reference"
            lines.append(f"  {path}: unknown key; allowed keys here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {path}: missing; this key is required")
        elif item["type"] == "value_error":
            lines.append(f"  {path}: {item.get('ctx', {}).get('error', item['msg'])}")
        elif item["type"] == "union_tag_invalid" and item["loc"][0] == "merge":
            strategies = ", ".join(map(repr, MERGES))
            strategies = " or ".join(strategies.rsplit(", ", 1))
            found = _show(item["ctx"].get("tag"))
            lines.append(f"  {path}.strategy: found {found}; expected one of {strategies}")
        elif item["type"] == "union_tag_invalid" and path.endswith("encoder"):
            kinds = " or ".join(", ".join(map(repr, SEQUENCE_ENCODERS)).rsplit(", ", 1))
            lines.append(f"  {path}.kind: found {_show(item['ctx'].get('tag'))}; expected one of {kinds}")
        elif item["type"] == "union_tag_invalid":
            tags = item.get("ctx", {}).get("expected_tags")
            lines.append(f"  {path}.type: found {_show(item['ctx'].get('tag'))}; expected one of {tags}")
        elif item["type"] == "union_tag_not_found":
            kinds = INPUT_TYPES if item["loc"][0] == "inputs" else OUTPUT_TYPES
            lines.append(f"  {path}.type: missing; expected one of {', '.join(map(repr, kinds))}")
        else:
            found = item.get("input")
            lines.append(f"  {path}: found {_show(found)}; {_expected(item)}")
    return "\n".join(dict.fromkeys(lines))


def config_path(loc: tuple, raw: Any) -> tuple[str, type[BaseModel] | None] | None:
    """The dotted path of a pydantic location without union tags, and the model owning its
    last key; None for an error from a union member that does not match the value's shape."""
    path, node, annotation, owner, default = "", raw, Spec, None, None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            annotation = _element(annotation)
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        model = _model(annotation, node, default)
        if model is None or part not in model.model_fields and part not in _aliases(model):
            if part.startswith("list[") and not isinstance(node, list):
                return None
            if (part in _MODEL_TAGS or part.startswith("tagged-union[")) and isinstance(node, list):
                return None
            if part in _TAGS or part in _MODEL_TAGS or part.startswith(("list[", "tagged-union[")):
                continue
        owner = model
        path += f".{part}" if path else part
        annotation, default = _field_annotation(model, part), _field_default(model, part)
        node = node.get(part) if isinstance(node, dict) else None
    return path or "config", owner


_MODEL_TAGS = {"EarlyStopping", "Head", "Train"}
_TAGS = set(INPUT_TYPES) | set(OUTPUT_TYPES) | set(MERGES) | set(SEQUENCE_ENCODERS)


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias for field in model.model_fields.values() if field.alias}


def _field_default(model: type[BaseModel] | None, key: str) -> Any:
    """The default value of a field, for telling which member of a union a key-less block is."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None or field.default_factory is None:
        return None if field is None else field.default
    return field.default_factory()


def _field_annotation(model: type[BaseModel] | None, key: str) -> Any:
    if model is None:
        return None
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def _element(annotation: Any) -> Any:
    """The element annotation of a list annotation (inside Optional or Union)."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    for argument in typing.get_args(annotation):
        if typing.get_origin(argument) is list:
            return typing.get_args(argument)[0]
    return None


def _model(annotation: Any, value: Any, default: Any = None) -> type[BaseModel] | None:
    """The model class an annotation means for this value (a block that leaves out its tag
    is the member its field's ``default`` is)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _model(arguments[0], value, default)
    models = [a for a in arguments if isinstance(a, type) and issubclass(a, BaseModel)]
    for key in ("type", "strategy", "kind"):
        tagged = {m.model_fields[key].default: m for m in models if key in m.model_fields}
        fallback = getattr(default, key, DEFAULT_STRATEGY if key == "strategy" else None)
        tag = value.get(key, fallback) if isinstance(value, dict) else None
        if tag in tagged:
            return tagged[tag]
    if len(models) == 1:
        return models[0]
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected(item: dict) -> str:
    message = item["msg"]
    context = item.get("ctx") or {}
    if item["type"] == "literal_error":
        return f"expected one of {context.get('expected')}"
    if item["type"] == "string_pattern_mismatch":
        return "expected a name of letters, digits and underscores, not starting with a digit"
    return "expected: " + message[0].lower() + message[1:]


def check_references(spec: Spec, where: str = "config") -> None:
    """What pydantic cannot see: unique names, merges and outputs naming things that exist,
    inputs that reach an output, targets that are not also inputs."""
    problems = _duplicate_names(spec) + _mask_names(spec) + _merge_references(spec)
    problems += _output_references(spec) + _unmerged(spec)
    problems += _leaks(spec) + _unreached(spec)
    if problems:
        raise ConfigError(f"{where}: invalid config\n" + "\n".join(f"  {p}" for p in problems))


def _duplicate_names(spec: Spec) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    named = [(f"inputs[{i}].name", s.name) for i, s in enumerate(spec.inputs)]
    named += [(f"{spec.merge_path(i)}.name", n.name) for i, n in enumerate(spec.merge_nodes)]
    named += [(f"outputs[{i}].name", s.name) for i, s in enumerate(spec.outputs)]
    for path, name in named:
        if name in seen:
            problems.append(f"{path}: found {name!r}, already the name of {seen[name]}; "
                            "expected a name used once across inputs, merge nodes and outputs")
        seen.setdefault(name, path)
    return problems


def _merge_references(spec: Spec) -> list[str]:
    problems = []
    known = [s.name for s in spec.inputs]
    nodes = spec.merge_nodes
    for index, node in enumerate(nodes):
        path = spec.merge_path(index)
        if node.inputs is None and len(nodes) > 1:
            problems.append(f"{path}.inputs: missing; expected the names this node merges "
                            "when there are several merge nodes")
        for position, source in enumerate(node.inputs or []):
            if source not in known:
                problems.append(f"{path}.inputs[{position}]: found {source!r}; expected an "
                                f"input or an earlier merge node: {known}")
        sources = spec.node_sources(node)
        if len(sources) < 2 and (node.inputs is not None or len(spec.inputs) > 1):
            article = "an" if node.strategy[0] in "aeiou" else "a"
            problems.append(f"{path}.inputs: found {sources}; {article} {node.strategy} merge needs at "
                            "least two branches (a single branch needs no merge: let the "
                            "output read it with 'from')" + _reduce_hint(spec, node, sources))
        if len(set(sources)) != len(sources):
            problems.append(f"{path}.inputs: found {sources}; each branch may be named once")
        known.append(node.name)
    return problems


def _reduce_hint(spec: Spec, node: Merge, sources: list[str]) -> str:
    """Averaging one vector is averaging its elements: that is the input's ``reduce``."""
    vectors = {s.name: i for i, s in enumerate(spec.inputs) if s.type == "vector"}
    if node.strategy not in ("average", "maximum") or len(sources) != 1 or sources[0] not in vectors:
        return ""
    how = "mean" if node.strategy == "average" else "max"
    return (f"; to take the {how} of the elements of vector input {sources[0]!r}, set "
            f"inputs[{vectors[sources[0]]}].reduce: {how}")


def _mask_names(spec: Spec) -> list[str]:
    """An optional input's presence mask is declared by plait, never by the config."""
    masks = {s.mask_name: i for i, s in enumerate(spec.inputs) if s.optional}
    named = [(f"inputs[{i}].name", s.name) for i, s in enumerate(spec.inputs)]
    named += [(f"{spec.merge_path(i)}.name", n.name) for i, n in enumerate(spec.merge_nodes)]
    named += [(f"outputs[{i}].name", s.name) for i, s in enumerate(spec.outputs)]
    return [
        f"{path}: found {name!r}, the name of the presence mask that plait adds for "
        f"inputs[{masks[name]}] (optional: true); remove it or rename it: plait declares the "
        "mask input itself and fills it from the rows where that input is missing"
        for path, name in named
        if name in masks
    ]


def _unmerged(spec: Spec) -> list[str]:
    """With ``merge: []`` there is no trunk: every output must read a branch itself."""
    if spec.merge_nodes:
        return []
    return [
        f"outputs[{i}].from: missing; with merge: [] (no merge node) each output must read an "
        f"input with 'from': {[s.name for s in spec.inputs]}"
        for i, out in enumerate(spec.outputs)
        if out.reads is None
    ]


def _output_references(spec: Spec) -> list[str]:
    known = [s.name for s in spec.inputs] + [n.name for n in spec.merge_nodes]
    return [
        f"outputs[{i}].from: found {out.reads!r}; expected an input or a merge node: {known}"
        for i, out in enumerate(spec.outputs)
        if out.reads is not None and out.reads not in known
    ]


def _leaks(spec: Spec) -> list[str]:
    used = {column: f"inputs[{i}]" for i, s in enumerate(spec.inputs) for column in s.source_columns()}
    return [
        f"outputs[{i}].{'columns' if len(out.source_columns()) > 1 else 'column'}: found {column!r}, which "
        f"{used[column]} also reads; expected a target column that is not an input (it would leak the answer)"
        for i, out in enumerate(spec.outputs)
        for column in out.source_columns()
        if column in used
    ]


def _unreached(spec: Spec) -> list[str]:
    """Inputs and merge nodes that no output depends on."""
    if len(spec.inputs) == 1 and spec.merge_nodes == [Concat()]:
        return []
    feeds = {node.name: spec.node_sources(node) for node in spec.merge_nodes}
    reached: set[str] = set()
    main = spec.main_node.name if spec.merge_nodes else None
    pending = [name for name in (out.reads or main for out in spec.outputs) if name]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(feeds.get(name, []))
    problems = [
        f"inputs[{i}]: {s.name!r} feeds no output; expected it in a merge node's inputs or "
        "an output's 'from'"
        for i, s in enumerate(spec.inputs) if s.name not in reached
    ]
    implicit = "merge" not in spec.model_fields_set
    problems += [
        f"{spec.merge_path(i)}: node {n.name!r} feeds no output; expected an output to read it "
        "or a later node to merge it" + ("; every output reads 'from', so set merge: [] for a "
                                         "model without a merge" if implicit else "")
        for i, n in enumerate(spec.merge_nodes) if n.name not in reached
    ]
    return problems
