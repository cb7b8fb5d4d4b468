"""Export a bundle's network for runtimes without plait or Keras: ONNX, TensorFlow SavedModel
or LiteRT (``.tflite``).

What is exported is the Keras network alone: it takes the *encoded* inputs (what
``Model.encode`` returns, one array per model input) and returns the raw outputs (what
``Model.raw_outputs`` returns: a probability for a binary output, one per label for a
category, the standardised value for a number). Reading files, encoding and decoding stay
with plait, so a JSON description is written beside the network, naming each input (dtype,
shape with ``null`` for the batch, how plait encodes it) and each output (shape, what its
values mean). It is ``<out>.inputs.json`` for a file, ``inputs.json`` inside a SavedModel
folder.

How each format is written with Keras 3.15:

- ``onnx``: ``keras_model.export(format="onnx")``, which on JAX converts with ``jax2onnx``
  (no TensorFlow). plait then renames the outputs, which Keras leaves named after their
  last operation (``sigmoid_out_0``), after the plait outputs, and rewrites each image
  max-pooling into a form ONNX Runtime runs. JAX backend only: on TensorFlow, Keras would
  need ``tf2onnx``, which the ``export`` extra leaves out.
- ``saved_model``: ``keras_model.export(format="tf_saved_model")``; on JAX through
  ``jax2tf`` (the network as one ``XlaCallModule`` op). Signature ``serving_default``.
- ``litert``: ``keras_model.export(format="litert")``, which Keras runs on TensorFlow only.
  On JAX, a child process loads the bundle on Keras's TensorFlow backend and exports it
  there (converting JAX's SavedModel instead fails: the TFLite converter refuses the
  gathers of a recurrent or bag encoder on a batch of unknown size, and the seed variables
  of dropout and recurrent layers).

Everything is written under a temporary name beside ``out`` and renamed into place.

>>> description_path(Path("exports/model.onnx"), "onnx").as_posix()
'exports/model.onnx.inputs.json'
>>> description_path(Path("exports/model"), "saved_model").as_posix()
'exports/model/inputs.json'
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plait.errors import PlaitError

FORMATS = ("onnx", "saved_model", "litert")
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
"""The file name ending each single-file format requires (Keras's LiteRT exporter demands
``.tflite``; ``.onnx`` keeps the sidecar and description names readable)."""
NEEDS = {"onnx": ["jax2onnx", "onnx"], "saved_model": ["tensorflow"], "litert": ["tensorflow"]}
BACKENDS = {"onnx": ("jax",), "saved_model": ("jax", "tensorflow"), "litert": ("jax", "tensorflow")}
INSTALL = 'pip install "plait[export]"'


def export(bundle_dir: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Write the network of the bundle at ``bundle_dir`` to ``out`` in format ``fmt``
    (``onnx``, ``saved_model`` or ``litert``) and its description beside it; returns the
    paths written. A wrong format, out path, backend or missing package is a PlaitError
    raised before anything is loaded or written."""
    from plait.model import Model

    out = Path(out)
    check_request(fmt, out)
    model = Model.load(bundle_dir)
    outputs = first_call(model.keras_model_)
    description = describe(model, fmt, outputs)
    with staging(out) as folder:
        WRITERS[fmt](model, Path(bundle_dir), folder / out.name)
        described = description_path(folder / out.name, fmt)
        described.write_bytes(json_bytes(description))
        return place(folder, out, fmt)


# -- checks, before the bundle loads ----------------------------------------------------------


def check_request(fmt: str, out: Path) -> None:
    if fmt not in FORMATS:
        raise PlaitError(f"--format: found {fmt!r}; expected one of {', '.join(FORMATS)}")
    suffix = SUFFIXES.get(fmt)
    if suffix and out.suffix.lower() != suffix:
        raise PlaitError(f"--out {out}: found extension {out.suffix!r}; a {fmt} file ends with {suffix}")
    if suffix and out.is_dir():
        raise PlaitError(f"--out {out}: is a folder; expected a {suffix} file")
    if not suffix and out.exists() and not is_saved_model(out):
        raise PlaitError(f"--out {out}: exists and is not a SavedModel folder; refusing to replace it")
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise PlaitError(f"exporting to {fmt} needs {', '.join(missing)}: {INSTALL}")
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if backend not in BACKENDS[fmt]:
        raise PlaitError(f"exporting to {fmt} runs Keras on {' or '.join(BACKENDS[fmt])}; found "
                         f"KERAS_BACKEND={backend} (unset it to use JAX)")


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def description_path(written: Path, fmt: str) -> Path:
    """Where the description of the network written at ``written`` goes."""
    if fmt == "saved_model":
        return written / "inputs.json"
    return written.with_name(f"{written.name}.inputs.json")


# -- the description ----------------------------------------------------------------------------


def first_call(keras_model: Any) -> dict[str, np.ndarray]:
    """Call the network once on one row of zeros, by output name. Keras exports only a model
    that has been called, and a loaded one has not; the outputs give their shapes."""
    zeros = {tensor.name: np.zeros((1, *tensor.shape[1:]), tensor.dtype) for tensor in keras_model.inputs}
    outputs = keras_model(zeros, training=False)
    return {name: np.asarray(values) for name, values in outputs.items()}


def describe(model: Any, fmt: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    import keras

    import plait

    signature = {"signature": "serving_default"} if fmt != "onnx" else {}
    return {
        "format": fmt, **signature, "plait": plait.__version__, "keras": keras.__version__,
        "note": "inputs are encoded as plait encodes them (plait.Model.encode gives them); "
                "outputs are the network's raw values (plait.Model.raw_outputs)",
        "inputs": describe_inputs(model),
        "outputs": [describe_output(out, model.states_[out.name], outputs[out.name])
                    for out in model.spec.outputs],
    }


def describe_inputs(model: Any) -> list[dict[str, Any]]:
    tensors = {tensor.name: tensor for tensor in model.keras_model_.inputs}
    described = []
    for spec in model.spec.inputs:
        encoding = spec.describe_array(model.states_[spec.name], True)
        described.append(input_entry(tensors[spec.name], spec.type, encoding))
        if spec.optional:
            described.append(input_entry(tensors[spec.mask_name], "mask",
                                         f"1.0 where {spec.name} is present, 0.0 where it is missing"))
    return described


def input_entry(tensor: Any, kind: str, encoding: str) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": str(tensor.dtype), "shape": [None, *tensor.shape[1:]],
            "type": kind, "encoding": encoding}


def describe_output(out: Any, state: Any, values: np.ndarray) -> dict[str, Any]:
    entry = {"name": out.name, "dtype": str(values.dtype), "shape": [None, *values.shape[1:]],
             "type": out.type, "meaning": out.describe_units(state)}
    # What decoding needs beyond the meaning: the labels (or a vector's dimension names) in
    # unit order, the decision threshold(s), the temperature the probabilities are calibrated
    # with, the half-width of the conformal intervals.
    for field in ("labels", "names", "threshold", "thresholds", "temperature", "interval_half_width"):
        if hasattr(state, field):
            entry[field] = getattr(state, field)
    return entry


def json_bytes(value: Any) -> bytes:
    import json

    return (json.dumps(value, indent=2) + "\n").encode("utf-8")


# -- the writers -------------------------------------------------------------------------------


def write_onnx(model: Any, bundle_dir: Path, path: Path) -> None:
    # Two harmless notices while jax2onnx traces: onnx_ir skips a type annotation of each
    # input of unknown batch size; Keras's masked average pooling asks JAX for float64, and
    # JAX gives float32, the network's own dtype.
    with quieter("onnx_ir"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Explicitly requested dtype float64")
        model.keras_model_.export(str(path), format="onnx", verbose=False)
    import onnx

    # Large weights stay in the sidecar (``<file>.data``) jax2onnx wrote; only the graph changes.
    proto = onnx.load(str(path), load_external_data=False)
    name_outputs(proto.graph, [out.name for out in model.spec.outputs])
    pool_channels_first(proto.graph)
    onnx.save(proto, str(path))


def name_outputs(graph: Any, names: list[str]) -> None:
    """Give the ONNX outputs the plait output names (Keras leaves them named after their last
    operation, ``sigmoid_out_0``) through Identity nodes, which a runtime drops. They come in
    the order JAX flattens the network's output dict: by name."""
    from onnx import helper

    for value, name in zip(graph.output, sorted(names), strict=True):
        if value.name != name:
            graph.node.append(helper.make_node("Identity", [value.name], [name]))
            value.name = name


def pool_channels_first(graph: Any) -> None:
    """jax2onnx 0.17 writes a max pooling of channels-last images (Keras's layout) as one
    MaxPool over four "spatial" axes: batch, height, width and channels, with a window of 1
    on batch and channels. ONNX Runtime pools over at most three, and refuses it at run
    time; each such node becomes the same pooling on channels-first images."""
    nodes = []
    for node in graph.node:
        nodes.extend(channels_first(node, graph) if node.op_type == "MaxPool" else [node])
    del graph.node[:]
    graph.node.extend(nodes)


def channels_first(pool: Any, graph: Any) -> list[Any]:
    """``pool``, or when it pools over batch, image axes and channels: drop the two leading
    axes of 1 jax2onnx added, transpose to channels-first, pool over the image axes only,
    transpose back, restore the two axes."""
    from onnx import helper, numpy_helper

    settings = {a.name: list(helper.get_attribute_value(a)) for a in pool.attribute}
    kernel = settings["kernel_shape"]
    axes = len(kernel)
    strides, dilations = settings.get("strides", [1] * axes), settings.get("dilations", [1] * axes)
    pads = settings.get("pads", [0] * 2 * axes)
    edges = (0, axes - 1)  # the batch and the channels
    if (axes <= 3 or set(settings) - {"kernel_shape", "strides", "pads", "dilations"}
            or any(values[i] != 1 for values in (kernel, strides, dilations) for i in edges)
            or any(pads[i] or pads[axes + i] for i in edges)):
        return [pool]
    image = slice(1, axes - 1)
    pooling = {"kernel_shape": kernel[image], "strides": strides[image], "dilations": dilations[image],
               "pads": pads[:axes][image] + pads[axes:][image]}
    name = pool.name or pool.output[0]
    graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), f"{name}_lead"))
    first, last = [0, axes - 1, *range(1, axes - 1)], [0, *range(2, axes), 1]
    return [
        helper.make_node("Squeeze", [pool.input[0], f"{name}_lead"], [f"{name}_nhwc"]),
        helper.make_node("Transpose", [f"{name}_nhwc"], [f"{name}_nchw"], perm=first),
        helper.make_node("MaxPool", [f"{name}_nchw"], [f"{name}_pooled"], **pooling),
        helper.make_node("Transpose", [f"{name}_pooled"], [f"{name}_back"], perm=last),
        helper.make_node("Unsqueeze", [f"{name}_back", f"{name}_lead"], list(pool.output)),
    ]


def write_saved_model(model: Any, bundle_dir: Path, path: Path) -> None:
    model.keras_model_.export(str(path), format="tf_saved_model", verbose=False)


def write_litert(model: Any, bundle_dir: Path, path: Path) -> None:
    """Keras's LiteRT export, which runs on TensorFlow only: from JAX, the bundle is loaded
    again in a child process on Keras's TensorFlow backend (see the module's notes)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        model.keras_model_.export(str(path), format="litert", verbose=False)
        return
    command = [sys.executable, "-c", LITERT_CHILD, str(bundle_dir), str(path)]
    done = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise PlaitError(f"the LiteRT conversion on Keras's TensorFlow backend failed: "
                         f"{lines[-1] if lines else f'exit status {done.returncode}'}")


LITERT_CHILD = """
import sys
from pathlib import Path
from plait.export import first_call, write_litert
from plait.model import Model
model = Model.load(sys.argv[1])
first_call(model.keras_model_)
write_litert(model, Path(sys.argv[1]), Path(sys.argv[2]))
"""


WRITERS: dict[str, Callable[[Any, Path, Path], None]] = {
    "onnx": write_onnx, "saved_model": write_saved_model, "litert": write_litert,
}


# -- writing whole or not at all ---------------------------------------------------------------


@contextlib.contextmanager
def quieter(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` (same file system, so moving out of it is a rename),
    removed afterwards with whatever is left in it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def place(folder: Path, out: Path, fmt: str) -> list[Path]:
    """Rename what ``folder`` holds into place beside ``out``: the network first, its
    description last, so a description never names a network that is not there. A sidecar
    of an earlier export that this one does not have is removed."""
    if fmt == "saved_model":
        replace_folder(folder / out.name, out)
        return [out, description_path(out, fmt)]
    described = description_path(out, fmt)
    sidecar = out.with_name(f"{out.name}.data")
    names = [out.name] + ([sidecar.name] if (folder / sidecar.name).exists() else []) + [described.name]
    if sidecar.name not in names:
        sidecar.unlink(missing_ok=True)
    for name in names:
        (folder / name).replace(out.parent / name)
    return [out.parent / name for name in names]


def replace_folder(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an older folder there is moved aside first and back if the
    rename fails, so ``path`` is never left without a whole export."""
    if not path.exists():
        new.rename(path)
        return
    retired = path.with_name(f".{path.name}.old-{os.getpid()}")
    path.rename(retired)
    try:
        new.rename(path)
    except BaseException:
        retired.rename(path)
        raise
    shutil.rmtree(retired, ignore_errors=True)
