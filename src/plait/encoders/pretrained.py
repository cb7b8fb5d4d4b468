"""Pretrained encoders (``pip install plait[pretrained]``): keras-hub backbones that embed a
text or an image column before the model.

``encoder: {kind: pretrained, preset: NAME_OR_DIR}`` on a ``text`` input loads a BERT-family
backbone (BERT, DistilBERT, RoBERTa, ...) and its tokenizer; on an ``image`` input, an image
backbone (ResNet, EfficientNet, MobileNet, ...) and its preset's image preprocessing. The
preset is a keras-hub preset name or handle, or a local directory in keras-hub format or in
Hugging Face format (``config.json``, ``model.safetensors``, ``tokenizer.json``).

A frozen encoder is preprocessing: ``encode`` runs the backbone over each row once, in
batches, and the model's input is the pooled vector. Training, streamed parts and their
on-disk cache keep those vectors, so an epoch costs only the layers above them, and the
Keras model holds nothing but plain Keras layers (``plait code`` writes it, a bundle loads
it in safe mode). Predicting runs the backbone again, loaded once per process. Text is
tokenised with the ``tokenizers`` package, from ``tokenizer.json`` where there is one, or
from the WordPiece vocabulary (``vocab.txt``, or a keras-hub BERT preset's), so no
TensorFlow text op is ever run.

The fitted state records the preset, the sizes, and a fingerprint: the sha256 of the
backbone's weights and the tokenizer (or the image preprocessing); a bundle refuses to
predict with another checkpoint.

An input type lets its encoder take its methods over with ``handed_to_encoder``: when the
encoder says it ``embeds_column``, the input's ``fit``, ``encode``, ``input_shape`` and the
rest are the encoder's, called with the input first.

>>> PretrainedTextEncoder(preset="models/all-MiniLM-L6-v2").pooling
'mean'
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
    """An input type's ``input_dtype``: float32 (the embedding) when its encoder embeds the
    column, and otherwise its own (a string, or a property)."""
    def dtype(self: Any) -> str:
        if getattr(self.encoder, "embeds_column", False):
            return "float32"
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

    @model_validator(mode="after")
    def _frozen_only(self) -> PretrainedSettings:
        if self.trainable:
            raise ValueError("trainable: true (fine-tuning the backbone inside the model) is not available "
                             "yet; use trainable: false, which embeds each row once with the frozen backbone")
        if self.learning_rate is not None:
            raise ValueError("learning_rate applies to a trainable encoder; a frozen one (trainable: false) "
                             "has no weights to train")
        return self

    def preprocessing(self) -> dict[str, Any]:
        """A frozen backbone's outputs are the encoded array: all of its keys shape them."""
        return self.model_dump(mode="json")

    def source(self) -> str:
        """The preset as the state records it: a directory's absolute path, or the name."""
        return resolve(self.preset)[0]


class PretrainedTextEncoder(PretrainedSettings, Encoder):
    """A pretrained BERT-family backbone: each text is tokenised by the preset's tokenizer
    (cut at the input's ``length`` tokens, by default the preset's own limit), and the last
    hidden states are pooled to one vector: ``mean`` over the tokens (padding left out) or
    the first token's (``cls``); ``normalize`` scales it to unit length. ``batch_size`` rows
    go through the backbone at a time. A missing text is embedded as an empty one.
    """

    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False

    def apply(self, x: Any, name: str) -> Any:
        raise ConfigError(f"input {name!r}: encoder kind 'pretrained' embeds text (or images); this input "
                          "type takes one of the other encoder kinds")

    # -- the text input's methods, taken over ----------------------------------------------

    def fit(self, spec: Any, table: Any) -> PretrainedTextState:
        table.strings(spec.source, spec.describe_use())
        return self.placeholder_state(spec)

    def placeholder_state(self, spec: Any) -> PretrainedTextState:
        # values other than the defaults: a saved spec writes every key out, defaults included
        given = [key for key in WORD_LEVEL_KEYS if getattr(spec, key) != type(spec).model_fields[key].default]
        if given:
            raise ConfigError(f"input {spec.name!r}: {', '.join(given)} applies to word-level text encoders; "
                              "a pretrained encoder uses its preset's own tokenizer and embeddings")
        model = loaded_text(self.source(), spec.name)
        length = spec.length or model.default_length
        if length > model.max_length:
            raise ConfigError(f"input {spec.name!r}: length: found {length}; expected at most "
                              f"{model.max_length}, the longest input of preset {self.preset!r}")
        state = PretrainedTextState(
            preset=self.source(), fingerprint=model.fingerprint, architecture=model.architecture,
            tokenizer=model.tokenizer_source, lowercase=model.lowercase, strip_accents=model.strip_accents,
            hidden=model.hidden, length=length, pooling=self.pooling, normalize=self.normalize,
            empty=[0.0] * model.hidden)
        empty = model.embed([""], state, self.batch_size)[0]
        return state.model_copy(update={"empty": empty[0].tolist()})

    def load_state(self, spec: Any, raw: Any) -> PretrainedTextState:
        return PretrainedTextState.model_validate(raw)

    def encode(self, spec: Any, table: Any, state: PretrainedTextState) -> Encoded:
        text = table.strings(spec.source, spec.describe_use())
        missing = pc.is_null(text).to_numpy(zero_copy_only=False)
        values = text.to_pylist()
        model = loaded_text(state.preset, spec.name, state.fingerprint)
        present = [value for value, absent in zip(values, missing, strict=True) if not absent]
        vectors, unknown = model.embed(present, state, self.batch_size)
        out = np.empty((len(values), state.hidden), np.float32)
        out[missing] = np.asarray(state.empty, np.float32)
        out[~missing] = vectors
        return Encoded(out, missing, unknown)

    def input_shape(self, spec: Any, state: PretrainedTextState) -> tuple[int, ...]:
        return (state.hidden,)

    def encoding_layers(self, spec: Any, x: Any, state: PretrainedTextState) -> Any:
        return x

    def neutral(self, spec: Any, state: PretrainedTextState) -> np.ndarray:
        """The embedding of an empty text (what a missing one gets)."""
        return np.asarray(state.empty, np.float64)

    def schema_details(self, spec: Any, state: PretrainedTextState) -> dict[str, Any]:
        return {"length": state.length, "preset": state.preset, "pooling": state.pooling}

    def describe_array(self, spec: Any, state: PretrainedTextState, fitted: bool) -> str:
        pooled = ("mean over the tokens (padding left out)" if state.pooling == "mean"
                  else "first ([CLS]) token")
        unit = ", scaled to unit length" if state.normalize else ""
        summary = (f"{state.hidden} numbers: the {pooled} of the last hidden states of the pretrained "
                   f"{state.architecture} (keras-hub preset {state.preset!r}, frozen), at most "
                   f"{state.length} tokens{unit}; a missing text is embedded as an empty one. plait "
                   "computes them before the model, as this code does:")
        return commented(summary, text_code(spec.name, state))


class PretrainedTextState(FittedState):
    """The preset (a directory's absolute path, or a keras-hub name), the fingerprint of its
    weights and tokenizer, the backbone class, where the tokenizer came from, the embedding
    size, the tokens per row, the pooling, and the embedding of an empty text. ``lowercase``
    and ``strip_accents`` are those of a tokenizer made from a WordPiece vocabulary."""

    preset: str
    fingerprint: str
    architecture: str
    tokenizer: Literal["tokenizer.json", "vocab.txt", "keras-hub"]
    lowercase: bool | None = None
    strip_accents: bool | None = None
    hidden: int = Field(gt=0)
    length: int = Field(gt=0)
    pooling: Literal["mean", "cls"]
    normalize: bool
    empty: list[float]


class PretrainedImageEncoder(PretrainedSettings):
    """A pretrained image backbone: each image is decoded at the preset's image size (the
    input's ``size`` when the preset has none), in RGB, scaled and offset as the preset's image
    converter does, and its last feature map pooled (``average`` or ``max``) to one vector.
    A missing image is embedded as a black one.
    """

    pooling: Literal["average", "max"] = "average"

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


def load_backbone(preset: str, name: str) -> Any:
    library = keras_hub()
    try:
        return library.models.Backbone.from_preset(preset)
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
_LOADING = threading.Lock()


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
class LoadedText:
    """A text backbone with its tokenizer, loaded once per process."""

    backbone: Any
    tokenizer: Any
    tokenizer_source: str
    lowercase: bool | None
    strip_accents: bool | None
    pad_id: int
    unknown_id: int | None
    max_length: int
    default_length: int
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def architecture(self) -> str:
        return type(self.backbone).__name__

    @property
    def hidden(self) -> int:
        return int(self.backbone.hidden_dim)

    def embed(self, texts: Sequence[str], state: PretrainedTextState,
              batch_size: int) -> tuple[np.ndarray, int]:
        """The pooled embedding of each text, and the number of unknown tokens met."""
        out = np.zeros((len(texts), state.hidden), np.float32)
        if not texts:
            return out, 0
        with self.lock:
            self.tokenizer.enable_truncation(max_length=state.length)
            self.tokenizer.no_padding()
            encodings = self.tokenizer.encode_batch(list(texts))
            tokens = [np.asarray(encoding.ids, np.int32) for encoding in encodings]
            counts = np.array([len(ids) for ids in tokens])
            order = np.argsort(counts, kind="stable")
            unknown = 0
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                width = next((b for b in BUCKETS if b >= counts[rows].max()), state.length)
                width = min(width, state.length)
                ids = np.full((batch_size, width), self.pad_id, np.int32)
                mask = np.zeros((batch_size, width), np.int32)
                for slot, row in enumerate(rows):
                    ids[slot, :counts[row]] = tokens[row]
                    mask[slot, :counts[row]] = 1
                if self.unknown_id is not None:
                    unknown += int(np.count_nonzero((ids == self.unknown_id) & (mask == 1)))
                hidden = self.hidden_states(ids, mask)
                out[rows] = pooled(hidden[:len(rows)], mask[:len(rows)], state.pooling)
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
    directory = Path(preset) if Path(preset).is_absolute() else None
    tokenizer, source, lowercase, strip_accents = text_tokenizer(preset, directory, name)
    backbone = load_backbone(preset, name)
    if "token_ids" not in backbone.input or "padding_mask" not in backbone.input:
        raise ConfigError(f"input {name!r}: preset {preset!r} holds a {type(backbone).__name__}, which does "
                          "not read token ids and a padding mask; expected a BERT-family text backbone")
    max_length = int(getattr(backbone, "max_sequence_length", 512) or 512)
    default_length = min(max_length, 512)
    settings = directory / "sentence_bert_config.json" if directory else None
    if settings is not None and settings.is_file():
        default_length = min(max_length, int(json.loads(settings.read_text()).get("max_seq_length")
                                             or default_length))
    pad_id = special_id(tokenizer, ("[PAD]", "<pad>")) or 0
    unknown_id = special_id(tokenizer, ("[UNK]", "<unk>"))
    digest = weights_digest(backbone)
    digest.update(tokenizer.to_str().encode("utf-8"))
    return LoadedText(backbone, tokenizer, source, lowercase, strip_accents, pad_id, unknown_id, max_length,
                      default_length, digest.hexdigest())


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


def text_code(name: str, state: PretrainedTextState) -> list[str]:
    """Python that makes this input's arrays with keras-hub and tokenizers, as plait does; its
    names start with the input's, so the code of several inputs can stand side by side."""
    tokenizer, backbone = f"{name}_tokenizer", f"{name}_backbone"
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
    pool = ("hidden[:, 0]" if state.pooling == "cls" else
            "(hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)")
    lines = ["import keras_hub", "import numpy as np", "import tokenizers", *made,
             f"{tokenizer}.enable_truncation(max_length={state.length})",
             f"{tokenizer}.no_padding()",
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
