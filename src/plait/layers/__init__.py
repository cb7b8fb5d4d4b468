"""plait's own Keras layers, for what no built-in layer does.

Each is one module here and one line below. A layer is registered with
``@keras.saving.register_keras_serializable(package="plait")`` and has ``get_config``, so a
saved model loads in safe mode once ``plait.layers`` is imported. Its class may use only
``keras`` (``keras.layers``, ``keras.ops``), written out in full: ``plait code`` copies the
class's source into the scripts it writes, which then need nothing but Keras.
"""

from __future__ import annotations

from plait.layers.bag import WeightedBag
from plait.layers.modality import ModalityDropout
from plait.layers.position import FirstStep, PositionEmbedding

CUSTOM_LAYERS: tuple[type, ...] = (PositionEmbedding, FirstStep, ModalityDropout, WeightedBag)
"""Every layer class of this package, registered with Keras when this module is imported."""


def is_custom(cls: type) -> bool:
    """Whether ``cls`` is one of plait's own layers.

    >>> import keras
    >>> is_custom(keras.layers.Dense)
    False
    """
    return cls in CUSTOM_LAYERS
