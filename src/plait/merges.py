"""Merge strategies: how the branches named by a merge node become one tensor.

The base class owns what all merges share (projection to a common width, the check that
element-wise merges get equal shapes); each strategy only says which Keras layer it is.
"""

from __future__ import annotations

from typing import Any, ClassVar

from plait.errors import ConfigError


class Merge:
    """Combines named branch tensors into one, through a Keras merge layer named ``name``."""

    strategy: ClassVar[str]
    elementwise: ClassVar[bool] = True

    def __init__(self, name: str, project: int | None = None, path: str = "merge") -> None:
        self.name = name
        self.project = project
        self.path = path

    def __call__(self, branches: dict[str, Any]) -> Any:
        from keras import layers

        if self.project:
            branches = {
                source: layers.Dense(self.project, name=f"{self.name}_project_{source}")(tensor)
                for source, tensor in branches.items()
            }
        if self.elementwise:
            self.check_shapes(branches)
        return self.layer()(list(branches.values()))

    def check_shapes(self, branches: dict[str, Any]) -> None:
        shapes = {source: tuple(tensor.shape[1:]) for source, tensor in branches.items()}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{source} has {list(shape)}" for source, shape in shapes.items())
            raise ConfigError(
                f"{self.path}.strategy: found {self.strategy!r}, which needs branches of equal "
                f"shape; {listed}. Set {self.path}.project to a width to project every branch "
                "to it, or give the branches' last layers the same size"
            )

    def layer(self) -> Any:
        raise NotImplementedError


class Concat(Merge):
    """Side by side along the last axis; branch widths may differ.

    >>> Concat("merged").elementwise
    False
    """

    strategy = "concat"
    elementwise = False

    def layer(self) -> Any:
        from keras import layers

        return layers.Concatenate(name=self.name)


class Add(Merge):
    """Element-wise sum.

    >>> Add("summed").strategy
    'add'
    """

    strategy = "add"

    def layer(self) -> Any:
        from keras import layers

        return layers.Add(name=self.name)


class Average(Merge):
    """Element-wise mean.

    >>> Average("mean").strategy
    'average'
    """

    strategy = "average"

    def layer(self) -> Any:
        from keras import layers

        return layers.Average(name=self.name)


class Multiply(Merge):
    """Element-wise product, for gating one view by another.

    >>> Multiply("product").strategy
    'multiply'
    """

    strategy = "multiply"

    def layer(self) -> Any:
        from keras import layers

        return layers.Multiply(name=self.name)


class Maximum(Merge):
    """Element-wise maximum.

    >>> Maximum("strongest").strategy
    'maximum'
    """

    strategy = "maximum"

    def layer(self) -> Any:
        from keras import layers

        return layers.Maximum(name=self.name)
