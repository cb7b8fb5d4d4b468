"""The bundle: one directory that is whole or absent.

``spec.yaml``, ``state.json`` (fitted preprocessing), ``model.keras``, ``metrics.json``,
``history.json`` and ``MANIFEST.json`` (sha256 of each file, plait and Keras versions); when
made, ``importance.json`` and ``attributions.json`` (``plait explain``), ``report.html`` and
the ``plots/`` it shows.
Written under a temporary name beside the target and renamed into place, also when files
are added later (``update``). This module only reads and writes the files; ``Model.load``
builds a model from them (Keras's ``safe_mode=True``; nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plait.errors import BundleError, PlaitError

FILES = ("spec.yaml", "state.json", "model.keras", "metrics.json", "history.json")
FORMAT = 1


def save(path: Path, files: dict[str, bytes], write_model: Callable[[Path], Any]) -> Path:
    """Write a bundle of ``files`` (name → contents) and the Keras model (``write_model``
    writes it to the path it is given) under a temporary name, then rename it into place."""
    import keras

    import plait

    if path.exists() and not (path / "MANIFEST.json").exists() and any(path.iterdir()):
        raise BundleError(f"{path}: exists and is not a plait bundle; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        _write_files(partial, files)
        write_model(partial / "model.keras")
        manifest = {
            "format": FORMAT,
            "plait": plait.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "files": _checksums(partial),
        }
        write_json(partial / "MANIFEST.json", manifest)
        _replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def json_bytes(value: Any) -> bytes:
    """``value`` as the indented JSON text a bundle holds."""
    return (json.dumps(value, indent=2, default=_plain) + "\n").encode("utf-8")


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
        write_json(partial / "MANIFEST.json", {**manifest, "files": _checksums(partial)})
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


@dataclass
class Contents:
    """What a verified bundle holds, parsed: the config text, the fitted state, metrics,
    history, importance (when measured), the manifest, and the path of ``model.keras``."""

    path: Path
    spec_text: str
    state: dict
    metrics: dict
    history: dict
    importance: dict | None
    manifest: dict
    attributions: dict | None = None

    @property
    def keras_file(self) -> Path:
        return self.path / "model.keras"


def read(path: Path) -> Contents:
    """The contents of the bundle at ``path``, once every checksum matches."""
    manifest = verify(path)
    importance, attributions = (_read_json(path / name) if name in manifest["files"] else None
                                for name in ("importance.json", "attributions.json"))
    return Contents(path, (path / "spec.yaml").read_text(encoding="utf-8"), _read_json(path / "state.json"),
                    _read_json(path / "metrics.json"), _read_json(path / "history.json"), importance,
                    manifest, attributions)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: not valid JSON: {error}") from None


def verify(path: Path) -> dict:
    """The manifest, once every file is present and its checksum matches."""
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    manifest_path = path / "MANIFEST.json"
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a plait bundle (no MANIFEST.json); expected a directory "
                          "written by 'plait train' or Model.save")
    manifest = _read_json(manifest_path)
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


def write_json(path: Path, value: Any) -> None:
    path.write_bytes(json_bytes(value))


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
