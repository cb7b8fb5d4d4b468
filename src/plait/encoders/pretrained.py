"""Pretrained encoders (``pip install plait[pretrained]``): keras-hub backbones that embed a
text or an image column, frozen before the model, or fine-tuned inside it.

``encoder: {kind: pretrained, preset: NAME_OR_DIR}`` on a ``text`` input loads a BERT-family
backbone (BERT, DistilBERT, RoBERTa, ...) and its tokenizer; on an ``image`` input, an image
backbone (ResNet, EfficientNet, MobileNet, ...) and its preset's image preprocessing. The
preset is a keras-hub preset name or handle, or a local directory in keras-hub format or in
Hugging Face format (``config.json``, ``model.safetensors``, ``tokenizer.json``).

A frozen encoder (``trainable: false``, the default) is preprocessing: ``encode`` runs the
backbone over each row once, in batches, and the model's input is the pooled vector.
Training, streamed parts and their on-disk cache keep those vectors, so an epoch costs only
the layers above them, and the Keras model holds nothing but plain Keras layers (``plait
code`` writes it, a bundle loads it in safe mode). Predicting runs the backbone again,
loaded once per process.

A trainable text encoder (``trainable: true``) fine-tunes the backbone with the model:
``encode`` only tokenises, into token ids and a padding mask of ``length`` tokens packed in
one int32 array (rows × 2 × length), and the backbone is a layer of the Keras model
(``plait.layers.TextBackbone``), pooled there, so every epoch runs it forward and backward.
Its ``learning_rate`` (by default the model's) is its own: the optimizer scales the steps
of the backbone's weights (``plait.layers.rates``). The bundle's model.keras holds the
fine-tuned weights; predicting needs only the preset's tokenizer. Image backbones are
frozen only.

Text is tokenised with the ``tokenizers`` package, from ``tokenizer.json`` where there is
one, or from the WordPiece vocabulary (``vocab.txt``, or a keras-hub BERT preset's), so no
TensorFlow text op is ever run.

The fitted state records the preset, the sizes, and a fingerprint: the sha256 of the
backbone's weights and the tokenizer (or the image preprocessing), of the tokenizer alone
for a trainable encoder; a bundle refuses to predict with another checkpoint.

An input type lets its encoder take its methods over with ``handed_to_encoder``: when the
encoder says it ``embeds_column``, the input's ``fit``, ``encode``, ``input_shape`` and the
rest are the encoder's, called with the input first.

>>> PretrainedTextEncoder(preset="models/all-MiniLM-L6-v2").pooling
'mean'
>>> PretrainedTextEncoder(preset="models/all-MiniLM-L6-v2", trainable=True, learning_rate=2e-5).array_dtype
'int32'
>>> PretrainedImageEncoder(preset="resnet_18_imagenet").pooling
'average'
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow.compute as pc
from pydantic import Field, model_validator

from plait.encoders.base import Encoder
from plait.errors import ConfigError, PlaitError
from plait.features.base import Encoded
from plait.schema import FittedState, Strict

EXTRA = "pip install 'plait[pretrained]'"
BUCKETS = (16, 32, 64, 128, 256, 512)
"""Token lengths a batch is padded to (the shortest that holds its longest row), so the
backbone is compiled for a few shapes only and short texts cost little."""
WORD_LEVEL_KEYS = ("vocabulary_size", "min_frequency", "embedding_dim", "lowercase")
"""Text input keys of the word-level encoders, which a pretrained tokenizer replaces."""
PLACEHOLDER_LENGTH = 128
"""Tokens per row of a trainable text encoder described before fitting, without ``length``
(fitting infers it from the training texts)."""


# -- taking an input type's methods over ------------------------------------------------------


def handed_to_encoder(*methods: Callable) -> tuple[Callable, ...]:
    """Input-type methods that an encoder embedding the column itself takes over: each calls
    the encoder's method of the same name, with the input first, when the input's encoder
    has ``embeds_column``, and the input's own method otherwise.

    >>> class Plain:
    ...     encoder = None
    ...     def size(self) -> int:
    ...         return 3
    ...     (size,) = handed_to_encoder(size)
    >>> Plain().size()
    3
    """
    def hand(method: Callable) -> Callable:
        @functools.wraps(method)
        def either(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self.encoder, "embeds_column", False):
                return getattr(self.encoder, method.__name__)(self, *args, **kwargs)
            return method(self, *args, **kwargs)
        return either
    return tuple(hand(method) for method in methods)


def dtype_handed_to_encoder(own: str | property) -> property:
    """An input type's ``input_dtype``: the encoder's ``array_dtype`` (float32 for an
    embedding, int32 for token ids) when it embeds the column, and otherwise its own (a
    string, or a property)."""
    def dtype(self: Any) -> str:
        if getattr(self.encoder, "embeds_column", False):
            return self.encoder.array_dtype
        return own.fget(self) if isinstance(own, property) else own
    return property(dtype)


# -- the config -------------------------------------------------------------------------------


class PretrainedSettings(Strict):
    """Keys shared by the pretrained text and image encoders."""

    kind: Literal["pretrained"] = "pretrained"
    preset: str = Field(min_length=1)
    trainable: bool = False
    learning_rate: float | None = Field(default=None, gt=0.0, le=10.0)
    batch_size: int = Field(default=32, gt=0, le=4096)

    embeds_column: ClassVar[bool] = True
    frozen_only: ClassVar[str | None] = None
    """Why this kind of backbone cannot be fine-tuned (None: it can)."""

    @model_validator(mode="after")
    def _training_keys(self) -> PretrainedSettings:
        if self.trainable and self.frozen_only is not None:
            raise ValueError(f"trainable: true is not available here: {self.frozen_only}; use trainable: "
                             "false, which embeds each row once with the frozen backbone")
        if self.learning_rate is not None and not self.trainable:
            raise ValueError("learning_rate applies to a trainable encoder; a frozen one (trainable: false) "
                             "has no weights to train")
        if self.trainable and self.batch_size != type(self).model_fields["batch_size"].default:
            raise ValueError("batch_size applies to a frozen encoder, which embeds the rows before the "
                             "model; a trainable one runs inside the model, in batches of train.batch_size")
        return self

    @property
    def array_dtype(self) -> str:
        """The dtype of the input's encoded array: the embedding's."""
        return "float32"

    def preprocessing(self) -> dict[str, Any]:
        """A frozen backbone's outputs are the encoded array: all of its keys shape them."""
        return self.model_dump(mode="json")

    def source(self) -> str:
        """The preset as the state records it: a directory's absolute path, or the name."""
        return resolve(self.preset)[0]

    def layer_rates(self, name: str) -> dict[str, float]:
        """The learning rate of the backbone layer of input ``name``, when it has its own.

        >>> PretrainedTextEncoder(preset="p", trainable=True, learning_rate=1e-5).layer_rates("review")
        {'review_backbone': 1e-05}
        """
        return {f"{name}_backbone": self.learning_rate} if self.learning_rate is not None else {}


class PretrainedTextEncoder(PretrainedSettings, Encoder):
    """A pretrained BERT-family backbone: each text is tokenised by the preset's tokenizer
    (cut at the input's ``length`` tokens), and the last hidden states are pooled to one
    vector: ``mean`` over the tokens (padding left out) or the first token's (``cls``);
    ``normalize`` scales it to unit length. A missing text is embedded as an empty one.

    Frozen, each row is embedded once before the model, ``batch_size`` rows at a time, at
    most ``length`` tokens (by default the preset's own limit). Trainable, the backbone is
    fine-tuned inside the model at ``learning_rate`` (by default the model's), on ``length``
    tokens per row (by default the 95th percentile of the training texts' token counts, at
    most the preset's limit).
    """

    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False

    @property
    def array_dtype(self) -> str:
        """The dtype of the input's encoded array: token ids when trainable, else the embedding's."""
        return "int32" if self.trainable else "float32"

    def preprocessing(self) -> dict[str, Any]:
        """A trainable backbone pools inside the model: its pooling and learning rate change
        only the model, and the encoded tokens are the same."""
        kept = super().preprocessing()
        if self.trainable:
            for key in ("pooling", "normalize", "learning_rate"):
                del kept[key]
        return kept

    def apply(self, x: Any, name: str) -> Any:
        raise ConfigError(f"input {name!r}: encoder kind 'pretrained' embeds text (or images); this input "
                          "type takes one of the other encoder kinds")

    # -- the text input's methods, taken over ----------------------------------------------

    def fit(self, spec: Any, table: Any) -> PretrainedTextState:
        text = table.strings(spec.source, spec.describe_use())
        if not self.trainable or spec.length is not None:
            return self.placeholder_state(spec)
        facts, tokens = self.backbone_facts(spec), loaded_tokenizer(self.source(), spec.name)
        counts = [len(ids) for ids in tokens.token_ids(pc.fill_null(text, "").to_pylist(),
                                                          facts.default_length)]
        length = int(np.ceil(np.percentile(counts, 95))) if counts else facts.default_length
        return self.token_state(spec, facts, tokens, max(length, 1))

    def placeholder_state(self, spec: Any) -> PretrainedTextState:
        facts = self.backbone_facts(spec)
        if self.trainable:
            return self.token_state(spec, facts, loaded_tokenizer(self.source(), spec.name),
                                    spec.length or min(facts.default_length, PLACEHOLDER_LENGTH))
        model = loaded_text(self.source(), spec.name)
        state = PretrainedTextState(
            preset=self.source(), fingerprint=model.fingerprint, architecture=facts.architecture,
            tokenizer=model.tokens.source, lowercase=model.tokens.lowercase,
            strip_accents=model.tokens.strip_accents, hidden=facts.hidden,
            length=self.checked_length(spec, facts, spec.length or facts.default_length),
            pooling=self.pooling, normalize=self.normalize, empty=[0.0] * facts.hidden)
        empty = model.embed([""], state, self.batch_size)[0]
        return state.model_copy(update={"empty": empty[0].tolist()})

    def token_state(self, spec: Any, facts: TextFacts, tokens: TextTokenizer,
                    length: int) -> PretrainedTextState:
        """A trainable encoder's state: the tokenizer's, and the backbone's sizes."""
        return PretrainedTextState(
            preset=self.source(), fingerprint=tokens.fingerprint, architecture=facts.architecture,
            tokenizer=tokens.source, lowercase=tokens.lowercase, strip_accents=tokens.strip_accents,
            hidden=facts.hidden, length=self.checked_length(spec, facts, length), trainable=True,
            pad_id=tokens.pad_id, pooling=None, normalize=None, empty=[])

    def backbone_facts(self, spec: Any) -> TextFacts:
        """The backbone's sizes (the input's word-level keys refused first: they have no use)."""
        # values other than the defaults: a saved spec writes every key out, defaults included
        given = [key for key in WORD_LEVEL_KEYS if getattr(spec, key) != type(spec).model_fields[key].default]
        if given:
            raise ConfigError(f"input {spec.name!r}: {', '.join(given)} applies to word-level text encoders; "
                              "a pretrained encoder uses its preset's own tokenizer and embeddings")
        if self.trainable:
            return text_facts(load_text_backbone(self.source(), spec.name, weights=False), self.source())
        return loaded_text(self.source(), spec.name).facts

    def checked_length(self, spec: Any, facts: TextFacts, length: int) -> int:
        if length > facts.max_length:
            raise ConfigError(f"input {spec.name!r}: length: found {length}; expected at most "
                              f"{facts.max_length}, the longest input of preset {self.preset!r}")
        return length

    def load_state(self, spec: Any, raw: Any) -> PretrainedTextState:
        state = PretrainedTextState.model_validate(raw)
        if state.trainable:
            keras_hub()  # registers the backbone classes that model.keras names
        return state

    def encode(self, spec: Any, table: Any, state: PretrainedTextState) -> Encoded:
        text = table.strings(spec.source, spec.describe_use())
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        if state.trainable:
            tokens = loaded_tokenizer(state.preset, spec.name, state.fingerprint)
            packed, unknown = tokens.packed(pc.fill_null(text, "").to_pylist(), state.length)
            return Encoded(packed, missing, unknown)
        values = text.to_pylist()
        model = loaded_text(state.preset, spec.name, state.fingerprint)
        present = [value for value, absent in zip(values, missing, strict=True) if not absent]
        vectors, unknown = model.embed(present, state, self.batch_size)
        out = np.empty((len(values), state.hidden), np.float32)
        out[missing] = np.asarray(state.empty, np.float32)
        out[~missing] = vectors
        return Encoded(out, missing, unknown)

    def input_shape(self, spec: Any, state: PretrainedTextState) -> tuple[int, ...]:
        return (2, state.length) if state.trainable else (state.hidden,)

    def encoding_layers(self, spec: Any, x: Any, state: PretrainedTextState) -> Any:
        if not state.trainable:
            return x
        from plait.layers import TextBackbone

        # a fresh copy from the preset: the one cached for frozen embedding must stay as it is
        backbone = load_text_backbone(state.preset, spec.name)
        return TextBackbone(backbone, pooling=self.pooling, normalize=self.normalize,
                            name=f"{spec.name}_backbone")(x)

    def neutral(self, spec: Any, state: PretrainedTextState) -> np.ndarray:
        """An empty text: its embedding, or its token ids and mask (what a missing one gets)."""
        if state.trainable:
            tokens = loaded_tokenizer(state.preset, spec.name, state.fingerprint)
            return tokens.packed([""], state.length)[0][0]
        return np.asarray(state.empty, np.float64)

    def schema_details(self, spec: Any, state: PretrainedTextState) -> dict[str, Any]:
        return {"length": state.length, "preset": state.preset, "pooling": state.pooling or self.pooling}

    def describe_array(self, spec: Any, state: PretrainedTextState, fitted: bool) -> str:
        # a frozen encoder's vectors were pooled as its state says; a trainable one pools in the model
        pooling, normalize = ((self.pooling, self.normalize) if state.trainable
                              else (state.pooling, state.normalize))
        pooled = "mean over the tokens (padding left out)" if pooling == "mean" else "first ([CLS]) token"
        unit = ", scaled to unit length" if normalize else ""
        if state.trainable:
            rate = (f"at learning rate {self.learning_rate}" if self.learning_rate
                    else "at the model's learning rate")
            summary = (f"{state.length} token ids of the tokenizer of keras-hub preset {state.preset!r} "
                       f"(padding: id {state.pad_id}), and below them the padding mask (1: a token, 0: "
                       f"padding); a missing text is an empty one. The layer {spec.name}_backbone fine-tunes "
                       f"the pretrained {state.architecture} on them, {rate}, and pools its last hidden "
                       f"states: the {pooled}{unit}. plait makes the arrays before the model, as this "
                       "code does:")
            return commented(summary, tokens_code(spec.name, state))
        summary = (f"{state.hidden} numbers: the {pooled} of the last hidden states of the pretrained "
                   f"{state.architecture} (keras-hub preset {state.preset!r}, frozen), at most "
                   f"{state.length} tokens{unit}; a missing text is embedded as an empty one. plait "
                   "computes them before the model, as this code does:")
        return commented(summary, text_code(spec.name, state))

    def written_layers(self, name: str, state: PretrainedTextState) -> tuple[list[str], dict[str, str]]:
        """For ``plait code``: the imports and the layer calls this encoder writes itself (a
        trainable backbone, made from its preset with keras-hub)."""
        if not state.trainable:
            return [], {}
        options = "" if self.pooling == "mean" else f", pooling={json.dumps(self.pooling)}"
        options += ", normalize=True" if self.normalize else ""
        call = (f"TextBackbone(keras_hub.models.Backbone.from_preset({json.dumps(state.preset)}){options}, "
                f"name={json.dumps(name + '_backbone')})")
        return ["import keras_hub"], {f"{name}_backbone": call}


class PretrainedTextState(FittedState):
    """The preset (a directory's absolute path, or a keras-hub name), the fingerprint of its
    weights and tokenizer (of the tokenizer alone when trainable), the backbone class, where
    the tokenizer came from, the embedding size, the tokens per row, the pooling, and the
    embedding of an empty text. ``lowercase`` and ``strip_accents`` are those of a tokenizer
    made from a WordPiece vocabulary. A ``trainable`` encoder's state has the id that pads
    tokens, and neither pooling nor embedding: the model pools, by its config."""

    preset: str
    fingerprint: str
    architecture: str
    tokenizer: Literal["tokenizer.json", "vocab.txt", "keras-hub"]
    lowercase: bool | None = None
    strip_accents: bool | None = None
    hidden: int = Field(gt=0)
    length: int = Field(gt=0)
    trainable: bool = False
    pad_id: int = Field(default=0, ge=0)
    pooling: Literal["mean", "cls"] | None
    normalize: bool | None
    empty: list[float]


class PretrainedImageEncoder(PretrainedSettings):
    """A pretrained image backbone, frozen: each image is decoded at the preset's image size
    (the input's ``size`` when the preset has none), in RGB, scaled and offset as the preset's
    image converter does, and its last feature map pooled (``average`` or ``max``) to one
    vector. A missing image is embedded as a black one.
    """

    pooling: Literal["average", "max"] = "average"

    frozen_only: ClassVar[str | None] = "image backbones are frozen only (text inputs can fine-tune theirs)"

    # -- the image input's methods, taken over ---------------------------------------------

    def fit(self, spec: Any, table: Any) -> PretrainedImageState:
        spec.column_kind(table)
        return self.placeholder_state(spec)

    def placeholder_state(self, spec: Any) -> PretrainedImageState:
        model = loaded_image(self.source(), spec.name)
        size = list(model.image_size or spec.size)
        state = PretrainedImageState(
            preset=self.source(), fingerprint=model.fingerprint, architecture=model.architecture,
            features=1, size=size, scale=model.scale, offset=model.offset, pooling=self.pooling, blank=[0.0])
        blank = model.features(np.zeros((1, *size, 3), np.float32), state, self.batch_size)
        return state.model_copy(update={"features": blank.shape[1], "blank": blank[0].tolist()})

    def load_state(self, spec: Any, raw: Any) -> PretrainedImageState:
        return PretrainedImageState.model_validate(raw)

    def encode(self, spec: Any, table: Any, state: PretrainedImageState) -> Encoded:
        # The images are decoded by the image input itself, with its default encoder (the
        # convolutions, which take nothing over), at the preset's size, or at the declared
        # size for pixel lists, whose length that size fixes.
        pixels_input = spec.model_copy(update={
            "encoder": type(spec).model_fields["encoder"].default_factory(),
            "size": list(spec.size) if spec.column_kind(table) == "pixels" else state.size})
        decoded = pixels_input.encode(table, None)
        images = resized(decoded.values, state.size) * 255.0
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        model = loaded_image(state.preset, spec.name, state.fingerprint)
        out = model.features(images, state, self.batch_size)
        out[decoded.missing] = np.asarray(state.blank, np.float32)
        return Encoded(out, decoded.missing)

    def input_shape(self, spec: Any, state: PretrainedImageState) -> tuple[int, ...]:
        return (state.features,)

    def encoding_layers(self, spec: Any, x: Any, state: PretrainedImageState) -> Any:
        return x

    def neutral(self, spec: Any, state: PretrainedImageState) -> np.ndarray:
        """The features of a black image (what a missing one gets)."""
        return np.asarray(state.blank, np.float64)

    def schema_details(self, spec: Any, state: PretrainedImageState) -> dict[str, Any]:
        return {"size": list(state.size), "channels": spec.channels, "max_pixels": spec.max_pixels,
                "preset": state.preset}

    def describe_array(self, spec: Any, state: PretrainedImageState, fitted: bool) -> str:
        summary = (f"{state.features} numbers: the {state.pooling} over the last feature map of the "
                   f"pretrained {state.architecture} (keras-hub preset {state.preset!r}, frozen), of the "
                   f"image resized to {state.size[0]}×{state.size[1]} RGB with the preset's scale and "
                   "offset; a missing image is a black one. plait computes them before the model, as this "
                   "code does:")
        return commented(summary, image_code(spec.name, state))


class PretrainedImageState(FittedState):
    """The preset, the fingerprint of its weights and image preprocessing, the backbone
    class, the number of features, the image size, the preset's per-channel scale and offset
    (applied to pixel values 0–255), the pooling, and the features of a black image."""

    preset: str
    fingerprint: str
    architecture: str
    features: int = Field(gt=0)
    size: list[int] = Field(min_length=2, max_length=2)
    scale: list[float] | None
    offset: list[float] | None
    pooling: Literal["average", "max"]
    blank: list[float]


def commented(summary: str, code: list[str]) -> str:
    """``describe_array``'s text: the summary, wrapped, then the code, as further comment lines
    (the script writes the first line after ``# ``) indented to read as a block.

    >>> print("# " + commented("made by:", ["x = 1", "", "y = 2"]))
    # made by:
    #     x = 1
    #
    #     y = 2
    """
    import textwrap

    wrapped = textwrap.wrap(summary, 95)
    return "\n# ".join(wrapped) + "".join(f"\n#     {line}" if line else "\n#" for line in code)


# -- presets ----------------------------------------------------------------------------------


def resolve(preset: str) -> tuple[str, Path | None]:
    """The preset as recorded (a directory's absolute path, or the name or handle as given)
    and its local directory (None for a name keras-hub resolves).

    >>> resolve("bert_tiny_en_uncased")
    ('bert_tiny_en_uncased', None)
    """
    if "://" in preset:
        return preset, None
    path = Path(preset).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not (path / "config.json").is_file():
            raise ConfigError(f"preset {preset!r}: the directory has no config.json; expected a keras-hub "
                              "preset directory, or a Hugging Face one (config.json, model.safetensors, "
                              "tokenizer.json)")
        return str(path), path
    if path.exists() or os.sep in preset or preset.startswith((".", "~")):
        raise ConfigError(f"preset {preset!r}: no such directory; expected a keras-hub preset name or a "
                          "preset directory")
    return preset, None


def keras_hub() -> Any:
    """The keras_hub module, or an error naming the extra that brings it."""
    try:
        import keras_hub as module
    except ImportError:
        raise PlaitError(f"pretrained encoders need keras-hub: {EXTRA}") from None
    return module


def tokenizers() -> Any:
    """The tokenizers module, or an error naming the extra that brings it."""
    try:
        import tokenizers as module
    except ImportError:
        raise PlaitError(f"pretrained text encoders need tokenizers: {EXTRA}") from None
    return module


def load_backbone(preset: str, name: str, weights: bool = True) -> Any:
    """The preset's backbone, a new one at each call (``weights=False``: random weights)."""
    library = keras_hub()
    try:
        return library.models.Backbone.from_preset(preset, load_weights=weights)
    except Exception as error:  # noqa: BLE001 - keras-hub's loaders (and downloads) raise many kinds
        raise ConfigError(f"input {name!r}: the pretrained preset {preset!r} cannot be loaded: "
                          f"{error}") from None


def weights_digest(backbone: Any) -> Any:
    """A sha256 fed with the backbone's weights, in order."""
    from keras import ops

    digest = hashlib.sha256()
    for variable in backbone.weights:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(variable)).tobytes())
    return digest


_LOADED: dict[tuple[str, str], Any] = {}
_LOADING = threading.RLock()  # a loaded text backbone loads (and caches) its tokenizer first


def cached(kind: str, preset: str, load: Callable[[], Any]) -> Any:
    """The loaded preset, loaded once per process."""
    with _LOADING:
        if (kind, preset) not in _LOADED:
            _LOADED[kind, preset] = load()
        return _LOADED[kind, preset]


def checked(model: Any, preset: str, name: str, fingerprint: str | None) -> Any:
    if fingerprint and model.fingerprint != fingerprint:
        raise PlaitError(f"input {name!r}: the pretrained preset {preset!r} is not the checkpoint this model "
                         f"was trained with (fingerprint {model.fingerprint[:12]}, expected "
                         f"{fingerprint[:12]}); put that checkpoint back at that place")
    return model


def missing_directory(preset: str, name: str) -> None:
    if Path(preset).is_absolute() and not Path(preset).is_dir():
        raise PlaitError(f"input {name!r}: the pretrained preset directory {preset!r} is not found; this "
                         "model embeds its column with that checkpoint: put it back at that place")


# -- text -------------------------------------------------------------------------------------


@dataclass
class TextTokenizer:
    """A preset's tokenizer (a ``tokenizers.Tokenizer``), where it came from, and, for one made
    from a WordPiece vocabulary, whether it lowercases and strips accents; loaded once per
    process. Its fingerprint is the sha256 of its JSON form."""

    tokenizer: Any
    source: str
    lowercase: bool | None
    strip_accents: bool | None
    pad_id: int
    unknown_id: int | None
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token_ids(self, texts: Sequence[str], length: int) -> list[np.ndarray]:
        """Each text's token ids, special tokens included, cut at ``length``."""
        with self.lock:  # the truncation is the tokenizer's own state
            self.tokenizer.enable_truncation(max_length=length)
            self.tokenizer.no_padding()
            encodings = self.tokenizer.encode_batch(list(texts))
        return [np.asarray(encoding.ids, np.int32) for encoding in encodings]

    def packed(self, texts: Sequence[str], length: int) -> tuple[np.ndarray, int]:
        """The token ids of each text, padded to ``length``, and below them its padding mask
        (1: a token, 0: padding), as one int32 array (rows × 2 × length); and the number of
        unknown tokens met."""
        ids = self.token_ids(texts, length)
        counts = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        rows = np.repeat(np.arange(len(ids)), counts)
        steps = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.zeros((len(ids), 2, length), np.int32)
        out[:, 0] = self.pad_id
        out[rows, 0, steps] = flat
        out[rows, 1, steps] = 1
        unknown = int(np.count_nonzero(flat == self.unknown_id)) if self.unknown_id is not None else 0
        return out, unknown


@dataclass
class TextFacts:
    """What plait needs to know of a text backbone: its class, its hidden size, the longest
    input it reads, and the length a text is cut at by default."""

    architecture: str
    hidden: int
    max_length: int
    default_length: int


@dataclass
class LoadedText:
    """A frozen text backbone with its tokenizer, loaded once per process."""

    backbone: Any
    tokens: TextTokenizer
    facts: TextFacts
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def embed(self, texts: Sequence[str], state: PretrainedTextState,
              batch_size: int) -> tuple[np.ndarray, int]:
        """The pooled embedding of each text, and the number of unknown tokens met."""
        out = np.zeros((len(texts), state.hidden), np.float32)
        if not texts:
            return out, 0
        tokens = self.tokens.token_ids(texts, state.length)
        counts = np.array([len(ids) for ids in tokens])
        order = np.argsort(counts, kind="stable")
        unknown = 0
        with self.lock:
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                width = next((b for b in BUCKETS if b >= counts[rows].max()), state.length)
                width = min(width, state.length)
                ids = np.full((batch_size, width), self.tokens.pad_id, np.int32)
                mask = np.zeros((batch_size, width), np.int32)
                for slot, row in enumerate(rows):
                    ids[slot, :counts[row]] = tokens[row]
                    mask[slot, :counts[row]] = 1
                if self.tokens.unknown_id is not None:
                    unknown += int(np.count_nonzero((ids == self.tokens.unknown_id) & (mask == 1)))
                hidden = self.hidden_states(ids, mask)
                out[rows] = pooled(hidden[:len(rows)], mask[:len(rows)], state.pooling or "mean")
        if state.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out, unknown

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inputs = {"token_ids": ids, "padding_mask": mask}
        if "segment_ids" in self.backbone.input:
            inputs["segment_ids"] = np.zeros_like(ids)
        result = self.backbone.predict_on_batch(inputs)
        if isinstance(result, dict):
            result = result["sequence_output"]
        return np.asarray(result, np.float32)


def pooled(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """One vector per row: the mean of the unmasked steps, or the first step.

    >>> pooled(np.array([[[1.0], [3.0], [9.0]]]), np.array([[1, 1, 0]]), "mean")
    array([[2.]])
    """
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def loaded_text(preset: str, name: str, fingerprint: str | None = None) -> LoadedText:
    missing_directory(preset, name)
    model = cached("text", preset, lambda: load_text(preset, name))
    return checked(model, preset, name, fingerprint)


def load_text(preset: str, name: str) -> LoadedText:
    tokens = loaded_tokenizer(preset, name)
    backbone = load_text_backbone(preset, name)
    digest = weights_digest(backbone)
    digest.update(tokens.tokenizer.to_str().encode("utf-8"))
    return LoadedText(backbone, tokens, text_facts(backbone, preset), digest.hexdigest())


def loaded_tokenizer(preset: str, name: str, fingerprint: str | None = None) -> TextTokenizer:
    missing_directory(preset, name)
    tokens = cached("tokenizer", preset, lambda: load_tokenizer(preset, name))
    return checked(tokens, preset, name, fingerprint)


def load_tokenizer(preset: str, name: str) -> TextTokenizer:
    directory = Path(preset) if Path(preset).is_absolute() else None
    tokenizer, source, lowercase, strip_accents = text_tokenizer(preset, directory, name)
    pad_id = special_id(tokenizer, ("[PAD]", "<pad>")) or 0
    unknown_id = special_id(tokenizer, ("[UNK]", "<unk>"))
    fingerprint = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()
    return TextTokenizer(tokenizer, source, lowercase, strip_accents, pad_id, unknown_id, fingerprint)


def load_text_backbone(preset: str, name: str, weights: bool = True) -> Any:
    """A new text backbone from the preset (random weights with ``weights=False``)."""
    backbone = load_backbone(preset, name, weights)
    if "token_ids" not in backbone.input or "padding_mask" not in backbone.input:
        raise ConfigError(f"input {name!r}: preset {preset!r} holds a {type(backbone).__name__}, which does "
                          "not read token ids and a padding mask; expected a BERT-family text backbone")
    return backbone


def text_facts(backbone: Any, preset: str) -> TextFacts:
    """The backbone's facts; the default length is the preset's limit, or what a sentence-
    transformers folder's ``sentence_bert_config.json`` sets, and at most 512."""
    max_length = int(getattr(backbone, "max_sequence_length", 512) or 512)
    default_length = min(max_length, 512)
    settings = Path(preset, "sentence_bert_config.json") if Path(preset).is_absolute() else None
    if settings is not None and settings.is_file():
        default_length = min(max_length, int(json.loads(settings.read_text()).get("max_seq_length")
                                             or default_length))
    return TextFacts(type(backbone).__name__, int(backbone.hidden_dim), max_length, default_length)


def special_id(tokenizer: Any, tokens: tuple[str, ...]) -> int | None:
    """The id of the first of ``tokens`` the tokenizer knows."""
    return next((tokenizer.token_to_id(t) for t in tokens if tokenizer.token_to_id(t) is not None), None)


def text_tokenizer(preset: str, directory: Path | None,
                   name: str) -> tuple[Any, str, bool | None, bool | None]:
    """The preset's tokenizer as a ``tokenizers.Tokenizer``; where it came from: a Hugging
    Face ``tokenizer.json``, a ``vocab.txt``, or a keras-hub WordPiece vocabulary; and, for
    a vocabulary, whether it lowercases and strips accents."""
    library = tokenizers()
    if directory is not None:
        hugging = directory / "tokenizer.json"
        if hugging.is_file() and "registered_name" not in json.loads(hugging.read_text(encoding="utf-8")):
            return library.Tokenizer.from_file(str(hugging)), "tokenizer.json", None, None
        vocabulary = directory / "vocab.txt"
        if vocabulary.is_file():
            settings_file = directory / "tokenizer_config.json"
            settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
            words = vocabulary.read_text(encoding="utf-8").splitlines()
            lowercase, strip = bool(settings.get("do_lower_case", True)), settings.get("strip_accents")
            return wordpiece(words, lowercase, strip), "vocab.txt", lowercase, strip
    hub = keras_hub()
    try:
        found = hub.tokenizers.Tokenizer.from_preset(preset)
    except Exception as error:  # noqa: BLE001 - keras-hub's loaders (and downloads) raise many kinds
        raise ConfigError(f"input {name!r}: preset {preset!r} has no tokenizer plait can read: {error}; "
                          "expected a Hugging Face tokenizer.json, a vocab.txt, or a keras-hub WordPiece "
                          "tokenizer") from None
    words = getattr(found, "vocabulary", None)
    if not isinstance(words, list) or getattr(found, "suffix_indicator", None) is None:
        raise ConfigError(f"input {name!r}: preset {preset!r} has a {type(found).__name__}; plait reads "
                          "WordPiece (BERT-family) keras-hub tokenizers, or a Hugging Face tokenizer.json")
    lowercase, strip = bool(found.lowercase), found.strip_accents or None
    return (wordpiece(words, lowercase, strip, found.oov_token, found.suffix_indicator), "keras-hub",
            lowercase, strip)


def wordpiece(words: list[str], lowercase: bool, strip_accents: bool | None, unknown: str = "[UNK]",
              prefix: str = "##") -> Any:
    """A BERT WordPiece tokenizer over ``words``: BERT's normalisation and splitting, and
    ``[CLS] ... [SEP]`` around each text."""
    library = tokenizers()
    ids = {word: index for index, word in enumerate(words)}
    tokenizer = library.Tokenizer(library.models.WordPiece(ids, unk_token=unknown,
                                                           continuing_subword_prefix=prefix))
    tokenizer.normalizer = library.normalizers.BertNormalizer(lowercase=lowercase,
                                                              strip_accents=strip_accents)
    tokenizer.pre_tokenizer = library.pre_tokenizers.BertPreTokenizer()
    special = [token for token in ("[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]", unknown) if token in ids]
    tokenizer.add_special_tokens(list(dict.fromkeys(special)))
    if "[SEP]" in ids and "[CLS]" in ids:
        tokenizer.post_processor = library.processors.BertProcessing(("[SEP]", ids["[SEP]"]),
                                                                     ("[CLS]", ids["[CLS]"]))
    return tokenizer


def tokenizer_code(name: str, state: PretrainedTextState) -> list[str]:
    """Python that makes the preset's tokenizer, cutting at the state's length, as plait
    does; it needs ``tokenizers`` (and keras-hub for a keras-hub vocabulary)."""
    tokenizer = f"{name}_tokenizer"
    if state.tokenizer == "tokenizer.json":
        made = [f"{tokenizer} = tokenizers.Tokenizer.from_file(",
                f"    {str(Path(state.preset, 'tokenizer.json'))!r})"]
    else:
        vocabulary = (f"keras_hub.tokenizers.Tokenizer.from_preset({state.preset!r}).vocabulary"
                      if state.tokenizer == "keras-hub" else
                      f"open({str(Path(state.preset, 'vocab.txt'))!r}).read().splitlines()")
        made = ["# The preset's WordPiece vocabulary, with BERT's normalisation and splitting:",
                f"{name}_ids = {{word: i for i, word in enumerate({vocabulary})}}",
                f"{tokenizer} = tokenizers.Tokenizer(",
                f"    tokenizers.models.WordPiece({name}_ids, unk_token='[UNK]'))",
                f"{tokenizer}.normalizer = tokenizers.normalizers.BertNormalizer(",
                f"    lowercase={state.lowercase}, strip_accents={state.strip_accents})",
                f"{tokenizer}.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()",
                f"{tokenizer}.post_processor = tokenizers.processors.BertProcessing(",
                f"    ('[SEP]', {name}_ids['[SEP]']), ('[CLS]', {name}_ids['[CLS]']))"]
    return [*made, f"{tokenizer}.enable_truncation(max_length={state.length})", f"{tokenizer}.no_padding()"]


def text_code(name: str, state: PretrainedTextState) -> list[str]:
    """Python that makes this input's arrays with keras-hub and tokenizers, as plait does; its
    names start with the input's, so the code of several inputs can stand side by side."""
    tokenizer, backbone = f"{name}_tokenizer", f"{name}_backbone"
    pool = ("hidden[:, 0]" if state.pooling == "cls" else
            "(hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)")
    lines = ["import keras_hub", "import numpy as np", "import tokenizers", *tokenizer_code(name, state),
             f"{backbone} = keras_hub.models.Backbone.from_preset({state.preset!r})",
             "", f"def embed_{name}(texts):",
             f"    tokens = {tokenizer}.encode_batch([text or '' for text in texts])",
             "    longest = max(len(t.ids) for t in tokens)",
             "    ids = np.zeros((len(tokens), longest), 'int32')",
             "    mask = np.zeros((len(tokens), longest), 'int32')",
             "    for row, t in enumerate(tokens):",
             "        ids[row, :len(t.ids)], mask[row, :len(t.ids)] = t.ids, 1",
             "    inputs = {'token_ids': ids, 'padding_mask': mask}",
             f"    if 'segment_ids' in {backbone}.input:",
             "        inputs['segment_ids'] = np.zeros_like(ids)",
             f"    hidden = {backbone}.predict(inputs, verbose=0)",
             "    hidden = hidden['sequence_output'] if isinstance(hidden, dict) else hidden",
             f"    vectors = {pool}"]
    if state.normalize:
        lines.append("    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)")
    return lines + ["    return vectors.astype('float32')"]


def tokens_code(name: str, state: PretrainedTextState) -> list[str]:
    """Python that makes a trainable encoder's arrays (token ids over the padding mask) with
    tokenizers, as plait does; its names start with the input's."""
    hub = ["import keras_hub"] if state.tokenizer == "keras-hub" else []
    return [*hub, "import numpy as np", "import tokenizers", *tokenizer_code(name, state),
            "", f"def tokens_{name}(texts):",
            f"    tokens = {name}_tokenizer.encode_batch([text or '' for text in texts])",
            f"    packed = np.zeros((len(tokens), 2, {state.length}), 'int32')",
            f"    packed[:, 0] = {state.pad_id}",
            "    for row, t in enumerate(tokens):",
            "        packed[row, 0, :len(t.ids)], packed[row, 1, :len(t.ids)] = t.ids, 1",
            "    return packed"]


# -- images -----------------------------------------------------------------------------------


@dataclass
class LoadedImage:
    """An image backbone with its preset's image size, scale and offset, loaded once per process."""

    backbone: Any
    image_size: list[int] | None
    scale: list[float] | None
    offset: list[float] | None
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def architecture(self) -> str:
        return type(self.backbone).__name__

    def features(self, images: np.ndarray, state: PretrainedImageState, batch_size: int) -> np.ndarray:
        """The pooled last feature map of each image (pixel values 0–255, RGB)."""
        x = images.astype(np.float32)
        if state.scale is not None:
            x = x * np.asarray(state.scale, np.float32)
        if state.offset is not None:
            x = x + np.asarray(state.offset, np.float32)
        pieces = []
        with self.lock:
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                padded = np.zeros((batch_size, *batch.shape[1:]), np.float32)
                padded[:len(batch)] = batch
                result = np.asarray(self.backbone.predict_on_batch(padded), np.float32)[:len(batch)]
                if result.ndim == 4:
                    pool = result.mean if state.pooling == "average" else result.max
                    result = pool(axis=(1, 2))
                pieces.append(result.reshape(len(batch), -1))
        if not pieces:
            return np.zeros((0, state.features), np.float32)
        return np.concatenate(pieces)


def loaded_image(preset: str, name: str, fingerprint: str | None = None) -> LoadedImage:
    missing_directory(preset, name)
    model = cached("image", preset, lambda: load_image(preset, name))
    return checked(model, preset, name, fingerprint)


def load_image(preset: str, name: str) -> LoadedImage:
    backbone = load_backbone(preset, name)
    try:
        converter = keras_hub().layers.ImageConverter.from_preset(preset)
    except Exception:  # noqa: BLE001 - a preset without an image converter, in any of its formats
        converter = None
    image_size = scale = offset = None
    if converter is not None:
        size = getattr(converter, "image_size", None)
        image_size = [int(v) for v in size] if size else None
        scale, offset = per_channel(converter.scale), per_channel(converter.offset)
    digest = weights_digest(backbone)
    digest.update(json.dumps([image_size, scale, offset]).encode())
    return LoadedImage(backbone, image_size, scale, offset, digest.hexdigest())


def per_channel(value: Any) -> list[float] | None:
    """A converter's scale or offset as three numbers (None stays None).

    >>> per_channel(0.5), per_channel([1, 2, 3]), per_channel(None)
    ([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], None)
    """
    if value is None:
        return None
    return [float(v) for v in np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (3,))]


def resized(images: np.ndarray, size: list[int]) -> np.ndarray:
    """Images (rows × height × width × channels, values in [0, 1]) at ``size``."""
    if list(images.shape[1:3]) == list(size):
        return images
    from PIL import Image

    out = np.empty((len(images), size[0], size[1], images.shape[3]), np.float32)
    for row, image in enumerate(images):
        channels = [Image.fromarray(image[..., c]).resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    for c in range(images.shape[3])]
        out[row] = np.stack([np.asarray(c, np.float32) for c in channels], axis=-1)
    return out


def image_code(name: str, state: PretrainedImageState) -> list[str]:
    """Python that makes this input's arrays with keras-hub and Pillow, as plait does (from
    image files; the names start with the input's)."""
    height, width = state.size
    pool = "mean" if state.pooling == "average" else "max"
    lines = ["import keras_hub", "import numpy as np", "from PIL import Image",
             f"{name}_backbone = keras_hub.models.Backbone.from_preset({state.preset!r})",
             "", f"def embed_{name}(paths):",
             f"    images = np.stack([np.asarray(Image.open(p).convert('RGB').resize(({width}, {height})),",
             "                                  'float32') for p in paths])"]
    if state.scale is not None:
        lines.append(f"    images = images * np.array({[round(v, 8) for v in state.scale]}, 'float32')")
    if state.offset is not None:
        lines.append(f"    images = images + np.array({[round(v, 8) for v in state.offset]}, 'float32')")
    return lines + [f"    maps = {name}_backbone.predict(images, verbose=0)",
                    f"    return maps.{pool}(axis=(1, 2)) if maps.ndim == 4 else maps"]
