"""``image``: file paths (relative to the data file), encoded bytes, or pixel lists."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BeforeValidator, Field

from plait.data import Table, refused
from plait.encoders.pretrained import PretrainedImageEncoder, handed_to_encoder
from plait.errors import DataError
from plait.evidence import Column, is_string
from plait.features.base import Encoded, Example, InputType, Recognised, same_values, shares_by
from plait.schema import FittedState, StateClass, Strict, Units

INLINE_DECODES = 8
"""Up to this many images (a request's) are decoded in the calling thread."""
IMAGE_PATH = r"\.(png|jpe?g|gif|bmp|webp|tiff?)$"
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


class ConvEncoder(Strict):
    """A stack of 2-D convolutions, one per entry of ``filters``, each followed by max
    pooling of ``pool`` (none when null), then ``pooling``: ``flatten``, ``average`` or
    ``max`` over the remaining grid.

    >>> ConvEncoder(filters=[16, 32]).filters
    [16, 32]
    """

    kind: Literal["cnn"] = "cnn"
    filters: list[Units] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(default=3, gt=0, le=31)
    pool: int | None = Field(default=2, gt=1)
    padding: Literal["valid", "same"] = "valid"
    pooling: Literal["flatten", "average", "max"] = "flatten"
    batch_norm: bool = False

    def apply(self, x: Any, name: str) -> Any:
        from keras import layers

        for index, filters in enumerate(self.filters, start=1):
            x = layers.Conv2D(filters, self.kernel_size, padding=self.padding,
                              activation=None if self.batch_norm else "relu",
                              name=f"{name}_conv_{index}")(x)
            if self.batch_norm:
                x = layers.BatchNormalization(name=f"{name}_norm_{index}")(x)
                x = layers.Activation("relu", name=f"{name}_relu_{index}")(x)
            if self.pool:
                x = layers.MaxPooling2D(self.pool, name=f"{name}_pool_{index}")(x)
        if self.pooling == "average":
            return layers.GlobalAveragePooling2D(name=f"{name}_average")(x)
        if self.pooling == "max":
            return layers.GlobalMaxPooling2D(name=f"{name}_max")(x)
        return layers.Flatten(name=f"{name}_flatten")(x)


ImageEncoder = Annotated[
    Annotated[Union[ConvEncoder, PretrainedImageEncoder], Field(discriminator="kind")],  # noqa: UP007
    BeforeValidator(lambda value: {"kind": "cnn", **value} if isinstance(value, dict) else value),
]
"""An image ``encoder``: convolutions (``kind: cnn``, the default) or a pretrained backbone."""


REGIONS = 8
"""Regions per side of an image's attribution grid."""


class ImageInput(InputType):
    """Images resized to ``size`` [height, width] with ``channels`` 1 (grey) or 3 (RGB),
    pixel values scaled to [0, 1].

    The column holds file paths (relative ones resolve against the data file's folder),
    encoded image bytes, or lists of height × width × channels pixel values in 0–255.
    Images over ``max_pixels`` are refused before decoding (decompression bombs).

    In a request, an image is base64 text (or a ``data:`` URL): a path is never opened.

    >>> ImageInput(name="photo", size=[64, 64]).input_shape(None)
    (64, 64, 3)
    """

    type: Literal["image"] = "image"
    size: list[Units] = Field(default_factory=lambda: [64, 64], min_length=2, max_length=2)
    channels: Literal[1, 3] = 3
    max_pixels: int = Field(default=40_000_000, gt=0)
    encoder: ImageEncoder = Field(default_factory=ConvEncoder)

    State: ClassVar[StateClass] = FittedState
    accepts: ClassVar[str] = "base64 image data (PNG, JPEG, ...) or a data: URL, or null"
    widget: ClassVar[str] = "file"
    recognise_order: ClassVar[int] = 30

    def fit(self, table: Table) -> FittedState:
        self.column_kind(table)
        return FittedState()

    def column_kind(self, table: Any) -> str:
        column = table.column(self.source, self.describe_use())
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return "path"
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return "bytes"
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return "pixels"
        raise table.wrong_type(self.source, column, "image file paths, image bytes, or lists of pixel values")

    def encode(self, table: Table, state: FittedState) -> Encoded:
        kind = self.column_kind(table)
        column = table.column(self.source, self.describe_use())
        missing = pc.is_null(column).to_numpy(zero_copy_only=False)
        if kind == "pixels":
            return Encoded(self.from_pixels(table, column, missing), missing)
        items = column.to_pylist()

        def load(row: int) -> np.ndarray:
            if items[row] is None:
                return np.zeros(self.input_shape(state), np.float32)
            return self.decode(items[row], kind, table, row)

        if len(items) <= INLINE_DECODES:  # starting threads costs more than a few decodes
            images = [load(row) for row in range(len(items))]
        else:
            with ThreadPoolExecutor(max_workers=4) as pool:
                images = list(pool.map(load, range(len(items)), chunksize=64))
        stacked = np.stack(images) if images else np.zeros((0, *self.input_shape(state)), np.float32)
        return Encoded(stacked, missing)

    def from_pixels(self, table: Any, column: pa.ChunkedArray, missing: np.ndarray) -> np.ndarray:
        height, width = self.size
        expected = height * width * self.channels
        flat = pc.list_flatten(column.combine_chunks()).cast(pa.float32()).to_numpy(zero_copy_only=False)
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        wrong = ~missing & (lengths != expected)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise table.bad_value(self.source, row, f"{lengths[row]} pixel values",
                                  f"{expected} ({height}×{width}×{self.channels})")
        out = np.zeros((len(lengths), height, width, self.channels), np.float32)
        out[~missing] = flat.reshape(-1, height, width, self.channels) / 255.0
        return out

    def decode(self, item: Any, kind: str, table: Any, row: int) -> np.ndarray:
        from PIL import Image

        if kind == "path":
            path = Path(item)
            path = path if path.is_absolute() else table.base_dir / path
            if not path.is_file():
                raise table.error(row, self.source, f"image file {str(path)!r} not found")
            source: Any = path
        else:
            source = io.BytesIO(item)
        mode = "L" if self.channels == 1 else "RGB"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(source) as image:
                    pixels = image.size[0] * image.size[1]
                    if pixels > self.max_pixels:
                        raise table.error(row, self.source, f"found an image of {image.size[0]}×"
                                          f"{image.size[1]} pixels; expected at most {self.max_pixels} "
                                          "(max_pixels)")
                    image.draft(mode, (self.size[1], self.size[0]))
                    image = image.convert(mode).resize((self.size[1], self.size[0]))
                    array = np.asarray(image, np.float32) / 255.0
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as error:
            raise table.error(row, self.source, f"cannot decode the image: {error}; expected a PNG, JPEG "
                              "or other image Pillow reads") from None
        return array.reshape(self.input_shape(None))

    def request_column(self, values: list[Any], field: str) -> pa.Array:
        """Base64 text or ``data:`` URLs, decoded to image bytes."""
        decoded = []
        for row, value in enumerate(values):
            try:
                decoded.append(None if value is None else image_bytes(value))
            except (ValueError, TypeError, binascii.Error):
                raise refused(row, field, value, self.accepts) from None
        return pa.array(decoded, pa.binary())

    def field_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "contentEncoding": "base64"}, {"type": "null"}]}

    def schema_details(self, state: FittedState) -> dict[str, Any]:
        return {"size": list(self.size), "channels": self.channels, "max_pixels": self.max_pixels}

    def input_shape(self, state: Any) -> tuple[int, ...]:
        return (self.size[0], self.size[1], self.channels)

    def placeholder_state(self) -> FittedState:
        return FittedState()

    def encoding_layers(self, x: Any, state: FittedState) -> Any:
        return self.encoder.apply(x, self.name)

    def neutral(self, state: FittedState) -> np.ndarray:
        """A blank image."""
        return np.zeros(self.input_shape(state))

    def describe_array(self, state: FittedState, fitted: bool) -> str:
        return "pixels scaled to [0, 1]"

    def attributed(self, shares: np.ndarray, values: np.ndarray, table: Table,
                   state: FittedState) -> dict | None:
        """The shares of the pixels (all channels) summed over a grid of up to 8 × 8 regions,
        rows from the top; and the image as the model saw it (``picture``: a PNG, base64), for
        drawing the grid over it.

        >>> image = ImageInput(name="photo", size=[4, 4], channels=1)
        >>> shares = np.zeros((4, 4, 1)); shares[0, 0, 0] = 1.0
        >>> image.attributed(shares, np.zeros((4, 4, 1)), None, None)["grid"][0]
        [1.0, 0.0, 0.0, 0.0]
        """
        if getattr(self.encoder, "embeds_column", False):
            return None
        per_pixel = shares.sum(axis=-1)
        tops, lefts = (region_edges(length) for length in per_pixel.shape)
        grid = [[float(per_pixel[tops[i]:tops[i + 1], lefts[j]:lefts[j + 1]].sum())
                 for j in range(len(lefts) - 1)] for i in range(len(tops) - 1)]
        places = [f"region {top},{left}" for top in range(len(grid)) for left in range(len(grid[0]))]
        return {**shares_by("regions", places, np.ravel(grid)), "grid": grid, "picture": png_base64(values)}

    @classmethod
    def examples(cls) -> list[Example]:
        """PNG images: bytes in a file, base64 text (or a ``data:`` URL) in a request."""
        from PIL import Image

        images = []
        for shade in (0, 90, 180, 255):
            buffer = io.BytesIO()
            Image.new("RGB", (6, 4), (shade, 255 - shade, shade // 2)).save(buffer, format="PNG")
            images.append(buffer.getvalue())
        sent: list[Any] = [base64.b64encode(image).decode("ascii") for image in images]
        sent[1] = "data:image/png;base64," + sent[1]
        file = pa.array(images[:2] + [None] + images[2:], pa.binary())
        return [same_values({"type": "image", "size": [4, 4], "encoder": {"filters": [2]}}, "a", file,
                            sent[:2] + [None] + sent[2:])]

    @classmethod
    def recognise(cls, column: Column) -> Recognised | None:
        """Paths ending in an image extension (90% of them), or bytes of PNG, JPEG, GIF, BMP,
        WebP or TIFF images."""
        kind = column.values.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            heads = [value[:4] for value in column.values[:100].to_pylist()]
            if sum(head.startswith(IMAGE_MAGIC) for head in heads) < 0.9 * len(heads):
                return None
            keys, seen = image_keys(io.BytesIO(column.values[0].as_py()), Path("."))
            return Recognised({"type": "image", **keys},
                              f"{column.count:,} encoded images; {seen}{column.gaps}")
        if not is_string(kind):
            return None
        strings = column.values.cast(pa.string())
        paths = pc.match_substring_regex(pc.utf8_lower(strings), IMAGE_PATH)
        if pc.mean(paths.cast(pa.float64())).as_py() < 0.9:
            return None
        keys, seen = image_keys(strings[0].as_py(), column.base_dir)
        return Recognised({"type": "image", **keys},
                          f"{column.count:,} image file paths; {seen}{column.gaps}")

    # -- pretrained encoders: `encoder: {kind: pretrained}` embeds the image itself, before the
    # model (plait.encoders.pretrained); these methods are then the encoder's -----------------
    (fit, encode, load_state, placeholder_state, input_shape, encoding_layers, neutral, schema_details,
     describe_array) = handed_to_encoder(fit, encode, InputType.load_state, placeholder_state, input_shape,
                                         encoding_layers, neutral, schema_details, describe_array)


def region_edges(length: int) -> list[int]:
    """Where the attribution regions along a side of ``length`` pixels start and end: up to
    ``REGIONS`` of them, as even as whole pixels allow.

    >>> region_edges(12)
    [0, 2, 3, 4, 6, 8, 9, 10, 12]
    """
    return np.linspace(0, length, min(REGIONS, length) + 1).round().astype(int).tolist()


def png_base64(pixels: np.ndarray) -> str:
    """Pixels in [0, 1] (height × width × channels) as a base64 PNG."""
    from PIL import Image

    scaled = np.clip(np.asarray(pixels, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(scaled[..., 0] if scaled.shape[-1] == 1 else scaled).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_bytes(value: Any) -> bytes:
    """Base64 text, or a ``data:image/...;base64,`` URL, decoded to bytes."""
    if not isinstance(value, str):
        raise ValueError
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError
    data = base64.b64decode(value, validate=True)
    if not data:
        raise ValueError
    return data


def image_keys(source: Any, base_dir: Path) -> tuple[dict, str]:
    """``size`` and ``channels`` from the first image: its own size up to 64×64, grey or colour."""
    from PIL import Image

    if isinstance(source, str):
        path = Path(source) if Path(source).is_absolute() else base_dir / source
        if not path.is_file():
            return {}, f"the first, {source!r}, is not found; check the paths"
        source = path
    try:
        with Image.open(source) as image:
            width, height, mode = *image.size, image.mode
    except (OSError, SyntaxError, ValueError):
        return {}, "the first cannot be decoded"
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    size = [height, width] if height <= 64 and width <= 64 else [64, 64]
    shade = "grey" if channels == 1 else "colour"
    resized = "" if size == [height, width] else ", resized to 64×64"
    return {"size": size, "channels": channels}, f"the first is {width}×{height} {shade}{resized}"


