"""``image``: file paths (relative to the data file), encoded bytes, or pixel lists."""

from __future__ import annotations

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plait.errors import DataError
from plait.features.base import Encoded, InputType
from plait.schema import Strict, Units


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


class ImageInput(InputType):
    """Images resized to ``size`` [height, width] with ``channels`` 1 (grey) or 3 (RGB),
    pixel values scaled to [0, 1].

    The column holds file paths (relative ones resolve against the data file's folder),
    encoded image bytes, or lists of height × width × channels pixel values in 0–255.
    Images over ``max_pixels`` are refused before decoding (decompression bombs).

    >>> ImageInput(name="photo", size=[64, 64]).input_shape({})
    (64, 64, 3)
    """

    type: Literal["image"] = "image"
    size: list[Units] = Field(default_factory=lambda: [64, 64], min_length=2, max_length=2)
    channels: Literal[1, 3] = 3
    max_pixels: int = Field(default=40_000_000, gt=0)
    encoder: ConvEncoder = Field(default_factory=ConvEncoder)

    def fit(self, table: Any) -> dict:
        self.column_kind(table)
        return {}

    def column_kind(self, table: Any) -> str:
        column = table.column(self.source, self.describe_use())
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return "path"
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return "bytes"
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return "pixels"
        raise DataError(f"{table.source}, column {self.source!r}: found values of type {kind}; "
                        "expected image file paths, image bytes, or lists of pixel values")

    def encode(self, table: Any, state: dict) -> Encoded:
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

        where = f"{table.at(row)}, column {self.source!r}"
        if kind == "path":
            path = Path(item)
            path = path if path.is_absolute() else table.base_dir / path
            if not path.is_file():
                raise DataError(f"{where}: image file {str(path)!r} not found")
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
                        raise DataError(f"{where}: found an image of {image.size[0]}×{image.size[1]} "
                                        f"pixels; expected at most {self.max_pixels} (max_pixels)")
                    image.draft(mode, (self.size[1], self.size[0]))
                    image = image.convert(mode).resize((self.size[1], self.size[0]))
                    array = np.asarray(image, np.float32) / 255.0
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as error:
            raise DataError(f"{where}: cannot decode the image: {error}; "
                            "expected a PNG, JPEG or other image Pillow reads") from None
        return array.reshape(self.input_shape({}))

    def input_shape(self, state: dict) -> tuple[int, ...]:
        return (self.size[0], self.size[1], self.channels)

    def placeholder_state(self) -> dict:
        return {}

    def encoding_layers(self, x: Any, state: dict) -> Any:
        return self.encoder.apply(x, self.name)


