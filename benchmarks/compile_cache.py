"""A fresh ``plait predict`` with an empty compilation cache, then the same command again.

    python benchmarks/compile_cache.py BUNDLE DATA [--runs 2]

Each run is a new process with the same empty-at-first ``PLAIT_CACHE_DIR`` (so JAX's
persistent compilation cache, ``<cache>/xla``, starts empty and is then reused); prints each
run's wall time, the programs the cache holds after it, and second / first. The first
run's time includes compiling; later runs load the compiled programs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(bundle: Path, data: Path, cache: Path, out: Path) -> float:
    env = {**os.environ, "PLAIT_CACHE_DIR": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # plait's own cache folder, not one chosen outside
    started = time.perf_counter()
    command = [sys.executable, "-m", "plait", "predict", str(bundle), "--data", str(data), "--out", str(out)]
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cache, times = Path(folder) / "cache", []
        for run in range(arguments.runs):
            out = Path(folder) / f"predictions-{run}.csv"
            seconds = run_once(arguments.bundle, arguments.data, cache, out)
            times.append(seconds)
            programs = len(list((cache / "xla").glob("*-cache")))
            print(f"run {run + 1}: {seconds:.1f} s, {programs} compiled programs in the cache")
    print(f"second / first: {times[1] / times[0]:.2f}")


if __name__ == "__main__":
    main()
