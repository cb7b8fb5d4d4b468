"""The bundle: one directory that is whole or absent.

``spec.yaml``, ``state.json`` (fitted preprocessing), ``model.keras``, ``metrics.json``,
``history.json`` and ``MANIFEST.json`` (sha256 of each file, plait and Keras versions); when
made, ``importance.json`` (``plait explain``), ``report.html`` and the ``plots/`` it shows.
Written under a temporary name beside the target and renamed into place, also when files
are added later (``update``). Loaded with Keras's ``safe_mode=True``; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from plait.errors import BundleError, PlaitError

FILES = ("spec.yaml", "state.json", "model.keras", "metrics.json", "history.json")
FORMAT = 1


def save(model: Any, path: Path, report: bool = False) -> Path:
    import keras

    import plait

    if path.exists() and not (path / "MANIFEST.json").exists() and any(path.iterdir()):
        raise BundleError(f"{path}: exists and is not a plait bundle; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        (partial / "spec.yaml").write_text(model.spec.to_yaml(), encoding="utf-8")
        state = {"format": FORMAT, "states": model.states_, "data": model.data_report_}
        _write_json(partial / "state.json", state)
        model.keras_model_.save(partial / "model.keras")
        _write_json(partial / "metrics.json", model.metrics_)
        _write_json(partial / "history.json", model.history_)
        if getattr(model, "importance_", None) is not None:
            _write_json(partial / "importance.json", model.importance_)
        if report:
            from plait.report import report_files

            _write_files(partial, report_files(model))
        manifest = {
            "format": FORMAT,
            "plait": plait.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "files": _checksums(partial),
        }
        _write_json(partial / "MANIFEST.json", manifest)
        _replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def update(path: Path, files: dict[str, bytes], drop: str | None = None) -> Path:
    """Add or replace ``files`` (name → contents) in a saved bundle, and their checksums in its
    manifest, leaving out the old files under the folder ``drop``; whole or not at all: the
    new bundle is assembled beside it (unchanged files hard-linked) and renamed into place."""
    manifest = verify(path)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for name in manifest["files"]:
            if name in files or (drop and name.startswith(drop.rstrip("/") + "/")):
                continue
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(path / name, partial / name)
        _write_files(partial, files)
        _write_json(partial / "MANIFEST.json", {**manifest, "files": _checksums(partial)})
        _replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder but the manifest, the required files first."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    names = [name for name in names if name != "MANIFEST.json"]
    ordered = [name for name in FILES if name in names] + [n for n in names if n not in FILES]
    return {name: _sha256(folder / name) for name in ordered}


def _replace(partial: Path, path: Path) -> None:
    if not path.exists():
        partial.rename(path)
        return
    retired = path.parent / f".{path.name}.old-{os.getpid()}"
    path.rename(retired)
    try:
        partial.rename(path)
    except BaseException:
        retired.rename(path)  # the old bundle goes back: whole, never absent after a failure
        raise
    shutil.rmtree(retired, ignore_errors=True)


def load(path: Path) -> Any:
    manifest = verify(path)  # before the backend loads, so a wrong path is reported at once

    from plait.graph import compile_model
    from plait.model import Model

    model = Model(path / "spec.yaml")
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    model.states_ = state["states"]
    model.data_report_ = state.get("data", {})
    model.metrics_ = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    model.history_ = json.loads((path / "history.json").read_text(encoding="utf-8"))
    model.manifest_ = manifest
    if "importance.json" in manifest["files"]:
        model.importance_ = json.loads((path / "importance.json").read_text(encoding="utf-8"))
    try:
        keras_model = _load_keras(path / "model.keras")
    except (ValueError, OSError, KeyError) as error:
        raise BundleError(f"{path / 'model.keras'}: cannot be loaded: {error}") from None
    model.keras_model_ = compile_model(keras_model, model.spec)
    return model


def _load_keras(file: Path) -> Any:
    """``keras.saving.load_model`` in safe mode. On JAX the variables are created inside a
    stateless scope, so their initializers (one compiled random op per weight shape, seconds
    in all) never run for values the file then replaces; any variable the file leaves out is
    initialized as usual."""
    import keras

    if keras.backend.backend() != "jax":
        return keras.saving.load_model(file, safe_mode=True, compile=False)
    from keras.src.backend.common import global_state, variables

    with keras.StatelessScope(initialize_variables=False) as scope:
        model = keras.saving.load_model(file, safe_mode=True, compile=False)
    for variable in model.variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)
    pending = global_state.get_global_attribute("uninitialized_variables") or []
    global_state.set_global_attribute("uninitialized_variables", [v for v in pending if v._value is None])
    variables.initialize_all_variables()
    return model


def verify(path: Path) -> dict:
    """The manifest, once every file is present and its checksum matches."""
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    manifest_path = path / "MANIFEST.json"
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a plait bundle (no MANIFEST.json); expected a directory "
                          "written by 'plait train' or Model.save")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{manifest_path}: not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: found bundle format {manifest.get('format')!r}; "
                          f"this plait reads format {FORMAT}")
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: {name} is missing; the bundle is incomplete")
        if _sha256(file) != digest:
            raise BundleError(f"{file}: its sha256 does not match MANIFEST.json; the file was "
                              "changed or damaged after saving")
    return manifest


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_plain) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise PlaitError(f"cannot write {type(value).__name__} to JSON")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
