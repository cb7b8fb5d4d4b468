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

    def preprocessing(self) -> dict[str, Any] | None:
        """What of this encoder's config the encoded arrays depend on: nothing for one that
        reads the input's ids or steps (the default); all of it for one that reads the raw
        values itself (a bag of words, a pretrained network whose outputs are cached)."""
        return None

    def apply(self, x: Any, name: str) -> Any:
        """The encoded tensor; every layer's name starts with ``name``."""
        raise NotImplementedError
