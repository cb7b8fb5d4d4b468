"""What every encoder of a sequence shares: its ``kind`` and ``apply``."""

from __future__ import annotations

from typing import Any, ClassVar

from plait.schema import Strict


class Encoder(Strict):
    """Reads a sequence of vectors (embedded words, time steps), ``(batch, steps,
    features)``, and gives one vector per row. Subclasses set ``kind`` (a Literal) and
    implement ``apply``; each is one small class, registered in ``plait.encoders``."""

    kind: str

    uses_mask: ClassVar[bool] = False
    """Whether it reads the padding mask of embedded words (text inputs then ask their
    embedding for one)."""

    def apply(self, x: Any, name: str) -> Any:
        """The encoded tensor; every layer's name starts with ``name``."""
        raise NotImplementedError
