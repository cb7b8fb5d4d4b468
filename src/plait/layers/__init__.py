"""plait's own Keras layers, for what no built-in layer does.

Each is one module here and one line below. A layer is registered with
``@keras.saving.register_keras_serializable(package="plait")`` and has ``get_config``, so a
saved model loads in safe mode once ``plait.layers`` is imported. Its class may use only
``keras`` (``keras.layers``, ``keras.ops``), written out in full: ``plait code`` copies the
class's source into the scripts it writes, which then need nothing but Keras.
"""

from __future__ import annotations

from plait.layers.backbone import TextBackbone
from plait.layers.bag import WeightedBag
from plait.layers.masked import MaskedLoss
from plait.layers.modality import ModalityDropout
from plait.layers.position import FirstStep, PositionEmbedding
from plait.layers.rates import OPTIMIZERS_WITH_RATES as OPTIMIZERS_WITH_RATES  # registered on import

CUSTOM_LAYERS: tuple[type, ...] = (PositionEmbedding, FirstStep, ModalityDropout, WeightedBag, TextBackbone)
"""Every layer class of this package, registered with Keras when this module is imported
(with the optimizers of ``plait.layers.rates``, ``OPTIMIZERS_WITH_RATES``)."""
CUSTOM_LOSSES: tuple[type, ...] = (MaskedLoss,)
"""plait's own losses, registered and copied into scripts the same way."""


def is_custom(cls: type) -> bool:
    """Whether ``cls`` is one of plait's own layers or losses.

    >>> import keras
    >>> is_custom(keras.layers.Dense)
    False
    """
    return cls in CUSTOM_LAYERS or cls in CUSTOM_LOSSES
