"""Merge nodes: how the branches named by a node become one tensor.

Each strategy is a config class with its own parameters and one method, ``merge``, that
builds the merged tensor from the branch tensors, as Keras's merge layers each override
one ``_merge_function``. The base class owns what all merges share: the node's name, the
branches it reads, the projection to a common width, and the check that element-wise
merges get equal shapes. A new strategy is one class here (or in its own module) and one
line in the registry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from plait.errors import ConfigError
from plait.schema import Name, Strict, Units


class Merge(Strict):
    """One merge node: ``strategy`` over the branches or earlier nodes named in ``inputs``
    (all inputs when omitted), each first projected to ``project`` units when given.

    >>> Add(name="both", inputs=["a", "b"], project=16).strategy
    'add'
    """

    name: Name = "merged"
    strategy: str
    inputs: list[Name] | None = Field(default=None, min_length=1)
    project: Units | None = None

    elementwise: ClassVar[bool] = True
    """Whether the branches must have equal shapes (after any projection)."""

    def build(self, branches: dict[str, Any], path: str = "merge") -> Any:
        """The merged tensor of ``branches`` (branch name → tensor); ``path`` names this node
        in the config, for errors."""
        from keras import layers

        if self.project:
            branches = {
                source: layers.Dense(self.project, name=f"{self.name}_project_{source}")(tensor)
                for source, tensor in branches.items()
            }
        if self.elementwise:
            self.check_shapes(branches, path)
        return self.merge(list(branches.values()))

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
