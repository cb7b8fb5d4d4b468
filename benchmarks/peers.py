"""Peers: Ludwig on the same reviews split, in a virtual environment of its own that this
benchmark creates under runs/bench/ (its releases need Python 3.12 or newer, taken from
pyenv when the running Python is older). Any failure to install or run is recorded with
its error, never left out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import WORK

HERE = Path(__file__).resolve().parent
VENV = WORK / "ludwig-venv"


def interpreter() -> str:
    """A Python of version 3.12 or newer: this one, or the newest pyenv holds."""
    if sys.version_info >= (3, 12):
        return sys.executable
    versions = sorted((Path.home() / ".pyenv" / "versions").glob("3.1[2-9]*/bin/python"),
                      key=lambda path: [int(part) for part in path.parent.parent.name.split(".")[:2]])
    if not versions:
        raise RuntimeError("no Python 3.12 or newer found (Ludwig needs one; looked in ~/.pyenv/versions)")
    return str(versions[-1])


def tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def install() -> Path:
    python = VENV / "bin" / "python"
    if (VENV / ".installed").is_file():
        return python
    steps = [[interpreter(), "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
             [str(python), "-m", "pip", "install", "--quiet", "ludwig"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"{' '.join(step[-3:])} failed: {tail(done.stderr or done.stdout)}")
    (VENV / ".installed").touch()
    return python


def run(split: Path, epochs: int) -> dict[str, Any]:
    try:
        python = install()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return {"ludwig": {"error": f"could not be installed: {error}"}}
    command = [str(python), str(HERE / "ludwig_reviews.py"), str(split), str(WORK / "ludwig-out"),
               str(epochs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"ludwig": {"error": "did not finish within an hour"}}
    if done.returncode:
        return {"ludwig": {"error": f"exit status {done.returncode}: {tail(done.stderr or done.stdout)}"}}
    return {"ludwig": json.loads(done.stdout.strip().splitlines()[-1])}
