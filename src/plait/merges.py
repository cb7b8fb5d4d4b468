"""Merge nodes: how the branches named by a node become one tensor.

Each strategy is a config class with its own parameters and one method, ``merge``, that
builds the merged tensor from the branch tensors, as Keras's merge layers each override
one ``_merge_function``. The base class owns what all merges share: the node's name, the
branches it reads, the projection to a common width, and the check that element-wise
merges get equal shapes. A new strategy is one class here (or in its own module) and one
line in the registry.

``modality_dropout`` on any node switches off, per training row, the branches of optional
inputs the node merges (``ModalityDropout``), so the model learns to predict when they are
missing. ``attention`` and ``gated`` fuse the branches with learned weights rather than a
fixed operation.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from plait.encoders.transformer import Blocks, Heads, attention_blocks, check_heads, pool
from plait.errors import ConfigError
from plait.schema import Name, Rate, Strict, Units


class Merge(Strict):
    """One merge node: ``strategy`` over the branches or earlier nodes named in ``inputs``
    (all inputs when omitted), each first projected to ``project`` units when given.

    ``modality_dropout`` (0 ≤ p < 1): in training, each row loses each branch of an
    optional input (``optional: true``) that this node merges directly, with probability
    p, exactly as if the value were missing. Other branches, and earlier merge nodes, are
    never dropped; a node with p > 0 that merges no optional input is a config error.

    >>> Add(name="both", inputs=["a", "b"], project=16).strategy
    'add'
    >>> Concat(modality_dropout=0.3).modality_dropout
    0.3
    """

    name: Name = "merged"
    strategy: str
    inputs: list[Name] | None = Field(default=None, min_length=1)
    project: Units | None = None
    modality_dropout: Rate = 0.0

    elementwise: ClassVar[bool] = True
    """Whether the branches must have equal shapes (after any projection)."""

    def build(self, branches: dict[str, Any], path: str = "merge", optional: Collection[str] = ()) -> Any:
        """The merged tensor of ``branches`` (branch name → tensor); ``path`` names this node
        in the config, for errors; ``optional`` names the optional inputs of the model (the
        branches ``modality_dropout`` may drop)."""
        from keras import layers

        if self.modality_dropout:
            branches = self.drop_modalities(branches, path, optional)
        if self.project:
            branches = {
                source: layers.Dense(self.project, name=f"{self.name}_project_{source}")(tensor)
                for source, tensor in branches.items()
            }
        if self.elementwise:
            self.check_shapes(branches, path)
        return self.merge_branches(branches)

    def merge_branches(self, branches: dict[str, Any]) -> Any:
        """The merged tensor of the named branches; a strategy with layers of its own per
        branch overrides this, to name them after the branch."""
        return self.merge(list(branches.values()))

    def drop_modalities(self, branches: dict[str, Any], path: str,
                        optional: Collection[str]) -> dict[str, Any]:
        """The branches with each optional input's wrapped in ``ModalityDropout``."""
        from plait.layers.modality import ModalityDropout

        dropped = [source for source in branches if source in optional]
        if not dropped:
            raise ConfigError(
                f"{path}.modality_dropout: found {self.modality_dropout}, but none of this node's "
                f"branches {list(branches)} is an optional input; modality dropout drops only the "
                "branches of inputs with optional: true (their missing values are what it "
                "imitates): set optional: true on one of them, or leave modality_dropout out"
            )
        return {source: ModalityDropout(self.modality_dropout, name=f"{self.name}_drop_{source}")(tensor)
                if source in dropped else tensor for source, tensor in branches.items()}

    def check_shapes(self, branches: dict[str, Any], path: str) -> None:
        shapes = {source: tuple(tensor.shape[1:]) for source, tensor in branches.items()}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{source} has {list(shape)}" for source, shape in shapes.items())
            raise ConfigError(
                f"{path}.strategy: found {self.strategy!r}, which needs branches of equal "
                f"shape; {listed}. Set {path}.project to a width to project every branch "
                "to it, or give the branches' last layers the same size"
            )

    def merge(self, tensors: list[Any]) -> Any:
        """The merged tensor; its last layer is named after the node."""
        raise NotImplementedError


class Concat(Merge):
    """Side by side along the last axis; branch widths may differ.

    >>> Concat().elementwise
    False
    """

    strategy: Literal["concat"] = "concat"
    elementwise: ClassVar[bool] = False

    def merge(self, tensors: list[Any]) -> Any:
        from keras import layers

        return layers.Concatenate(name=self.name)(tensors)


class Add(Merge):
    """Element-wise sum.

    >>> Add(name="summed").strategy
    'add'
    """

    strategy: Literal["add"] = "add"

    def merge(self, tensors: list[Any]) -> Any:
        from keras import layers

        return layers.Add(name=self.name)(tensors)


class Average(Merge):
    """Element-wise mean.

    >>> Average(name="mean").strategy
    'average'
    """

    strategy: Literal["average"] = "average"

    def merge(self, tensors: list[Any]) -> Any:
        from keras import layers

        return layers.Average(name=self.name)(tensors)


class Multiply(Merge):
    """Element-wise product, for gating one view by another.

    >>> Multiply(name="product").strategy
    'multiply'
    """

    strategy: Literal["multiply"] = "multiply"

    def merge(self, tensors: list[Any]) -> Any:
        from keras import layers

        return layers.Multiply(name=self.name)(tensors)


class Maximum(Merge):
    """Element-wise maximum.

    >>> Maximum(name="strongest").strategy
    'maximum'
    """

    strategy: Literal["maximum"] = "maximum"

    def merge(self, tensors: list[Any]) -> Any:
        from keras import layers

        return layers.Maximum(name=self.name)(tensors)


class Fusion(Merge):
    """A merge that projects every branch to ``units`` itself, so ``project`` is not taken."""

    units: Units = 32
    elementwise: ClassVar[bool] = False

    @model_validator(mode="after")
    def _no_projection(self) -> Fusion:
        if self.project is not None:
            raise ValueError(f"project: found {self.project}; a {self.strategy} merge projects every "
                             "branch to its own units: set units instead")
        return self

    def merge(self, tensors: list[Any]) -> Any:
        return self.merge_branches({f"branch_{index}": t for index, t in enumerate(tensors, start=1)})

    def tokens(self, branches: dict[str, Any], activation: str | None = None) -> dict[str, Any]:
        """Each branch flattened (when it has several axes) and projected to ``units``."""
        from keras import layers

        projected = {}
        for source, tensor in branches.items():
            if len(tensor.shape) > 2:
                tensor = layers.Flatten(name=f"{self.name}_flatten_{source}")(tensor)
            projected[source] = layers.Dense(self.units, activation=activation,
                                             name=f"{self.name}_token_{source}")(tensor)
        return projected

    def stacked(self, tokens: dict[str, Any]) -> Any:
        """The tokens as one sequence, ``(batch, branches, units)``, in the branches' order."""
        from keras import layers

        rows = [layers.Reshape((1, self.units), name=f"{self.name}_row_{source}")(token)
                for source, token in tokens.items()]
        return layers.Concatenate(axis=1, name=f"{self.name}_tokens")(rows)


class Attention(Fusion):
    """Fusion by self-attention over the branches (the FT-Transformer idea applied to
    modalities): each branch projected to one token of ``units``, ``blocks`` transformer
    blocks of ``heads``-head self-attention and a feed-forward layer of ``feed_forward``
    units (twice ``units`` when not given) over the tokens, then their average (``pooling:
    mean``) or the first branch's token (``pooling: first``, which has read all others).
    Each branch has its own projection, so no position vector is needed to tell the
    tokens apart.

    >>> Attention(name="fused", units=16, heads=2).blocks
    2
    """

    strategy: Literal["attention"] = "attention"
    blocks: int = Blocks
    heads: int = Heads
    feed_forward: Units | None = None
    dropout: Rate = 0.1
    pooling: Literal["mean", "first"] = "mean"

    @model_validator(mode="after")
    def _heads_divide_units(self) -> Attention:
        return check_heads(self)

    def merge_branches(self, branches: dict[str, Any]) -> Any:
        x = self.stacked(self.tokens(branches))
        x = attention_blocks(x, self.name, blocks=self.blocks, heads=self.heads, units=self.units,
                             feed_forward=self.feed_forward or 2 * self.units, dropout=self.dropout)
        return pool(x, self.pooling, self.name)


class Gated(Fusion):
    """Fusion by a learned, per-row weighting of the branches: each branch projected to
    ``units`` (tanh, so no branch can outweigh the others by scale alone), a softmax over
    the branches computed from all of them (the layer ``<name>_gate``, whose weights
    ``plait explain`` reports), and the weighted sum of the projections.

    >>> Gated(name="mixed", units=8).gate_layer
    'mixed_gate'
    """

    strategy: Literal["gated"] = "gated"

    @property
    def gate_layer(self) -> str:
        """The name of the softmax layer giving each row's weight per branch, in the order
        of the node's sources."""
        return f"{self.name}_gate"

    def merge_branches(self, branches: dict[str, Any]) -> Any:
        from keras import layers

        tokens = self.tokens(branches, activation="tanh")
        joined = layers.Concatenate(name=f"{self.name}_joined")(list(tokens.values()))
        logits = layers.Dense(len(tokens), name=f"{self.name}_gate_logits")(joined)
        weights = layers.Softmax(name=self.gate_layer)(logits)
        # (batch, branches) · (batch, branches, units) over the branches: the weighted sum
        return layers.Dot(axes=1, name=self.name)([weights, self.stacked(tokens)])
