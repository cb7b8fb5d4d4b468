"""The one place where input types, output types and merge strategies are registered.

A new kind is one module plus one line here.
"""

from __future__ import annotations

from plait.features.binary import BinaryInput
from plait.features.category import CategoryInput
from plait.features.date import DateInput
from plait.features.image import ImageInput
from plait.features.number import NumberInput
from plait.features.sequence import SequenceInput
from plait.features.set import SetInput
from plait.features.text import TextInput
from plait.features.vector import VectorInput
from plait.merges import Add, Attention, Average, Concat, Gated, Maximum, Multiply
from plait.targets.binary import BinaryOutput
from plait.targets.category import CategoryOutput
from plait.targets.number import NumberOutput
from plait.targets.set import SetOutput
from plait.targets.vector import VectorOutput

INPUT_TYPES = {
    "number": NumberInput,
    "vector": VectorInput,
    "category": CategoryInput,
    "binary": BinaryInput,
    "text": TextInput,
    "image": ImageInput,
    "sequence": SequenceInput,
    "date": DateInput,
    "set": SetInput,
}

OUTPUT_TYPES = {
    "binary": BinaryOutput,
    "category": CategoryOutput,
    "number": NumberOutput,
    "set": SetOutput,
    "vector": VectorOutput,
}

MERGES = {merge.model_fields["strategy"].default: merge
          for merge in (Concat, Add, Average, Multiply, Maximum, Attention, Gated)}
