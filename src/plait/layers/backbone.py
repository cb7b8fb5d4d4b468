"""A pretrained text backbone inside the model, fine-tuned with it: ``encoder: {kind:
pretrained, trainable: true}`` on a text input.

Written with ``keras`` and ``keras.ops`` only: ``plait code`` copies this class into the
scripts it writes, which make the backbone itself with keras-hub.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="plait")
class TextBackbone(keras.layers.Layer):
    """Runs ``backbone`` (a keras-hub BERT-family ``Backbone``, or any Keras model that reads
    ``token_ids`` and a ``padding_mask``) over token ids and their padding mask, and pools its
    last hidden states to one vector per row: the mean over the tokens (padding left out) or
    the first token's (``cls``); ``normalize`` scales it to unit length.

    The ids and the mask come packed in one integer array ``(batch, 2, length)``, ids first,
    so that each config input stays one model input, as every other input is.

    Layers of the backbone that only its other outputs read (BERT's pooled output) are
    frozen.

    >>> import numpy as np
    >>> ids = keras.Input((None,), dtype="int32", name="token_ids")
    >>> mask = keras.Input((None,), dtype="int32", name="padding_mask")
    >>> table = keras.initializers.Constant([[0.0], [10.0], [20.0], [30.0]])
    >>> steps = keras.layers.Embedding(4, 1, embeddings_initializer=table)(ids)
    >>> backbone = keras.Model({"token_ids": ids, "padding_mask": mask}, steps)
    >>> packed = np.array([[[1, 3, 0], [1, 1, 0]]], "int32")  # ids 1 and 3, then padding
    >>> keras.ops.convert_to_numpy(TextBackbone(backbone)(packed)).tolist()
    [[20.0]]
    """

    unread = ("pooled_dense",)
    """keras-hub BERT's layer for its pooled output, which is not read."""

    def __init__(self, backbone: keras.Model, pooling: str = "mean", normalize: bool = False,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"TextBackbone pooling: found {pooling!r}; expected 'mean' or 'cls'")
        for layer in backbone.layers:
            if layer.name in self.unread:  # no gradient reaches it, which Keras would warn about
                layer.trainable = False
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        ids, mask = inputs[:, 0], inputs[:, 1]
        features = {"token_ids": ids, "padding_mask": mask}
        if "segment_ids" in self.backbone.input:  # BERT's: every token is in the first segment
            features["segment_ids"] = keras.ops.zeros_like(ids)
        hidden = self.backbone(features)
        if isinstance(hidden, dict):
            hidden = hidden["sequence_output"]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = keras.ops.expand_dims(keras.ops.cast(mask, hidden.dtype), -1)
            counts = keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
            pooled = keras.ops.sum(hidden * weights, axis=1) / counts
        if self.normalize:
            pooled = pooled / keras.ops.maximum(keras.ops.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "pooling": self.pooling, "normalize": self.normalize}

    @classmethod
    def from_config(cls, config: dict) -> keras.layers.Layer:
        backbone = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**{**config, "backbone": backbone})
