"""Training on a Parquet file several times larger than the memory the process may use.

Writes a synthetic table (a 256-number vector, a number and a category per row, a binary
target that depends on them) in row groups, then trains on it twice in child processes
whose memory is capped by a cgroup (v1 ``memory.limit_in_bytes``, or v2 ``memory.max``;
the kernel kills a child that goes over it): once read whole into memory (the baseline,
which the cap stops), once streamed through plait's on-disk cache. Prints the file size,
the cap, each child's outcome, peak resident memory and wall time; a second streamed run
shows the cache being reused. Where no cgroup can be made (it needs root), the children
run uncapped and the output says so.

    python benchmarks/streaming.py            # a 4.6 GiB file under a 1.5 GiB cap
    python benchmarks/streaming.py --quick    # a small file under a small cap
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import child_outcome

WIDTH = 256
CHILD = r"""
import json, resource, sys, time
data, cache, stream = sys.argv[1], sys.argv[2], sys.argv[3]
import plait
spec = {"inputs": [{"name": "v", "type": "vector", "size": WIDTH, "layers": [32]},
                   {"name": "x", "type": "number"}, {"name": "c", "type": "category"}],
        "head": {"layers": [32]}, "outputs": [{"name": "y", "type": "binary"}],
        "train": {"epochs": 1, "batch_size": 4096, "stream": stream, "validation_split": 0.05,
                  "part_rows": 65536, "fit_rows": 50000, "cache_dir": cache}}
started = time.perf_counter()
outcome = "trained"
try:
    model = plait.Model(spec, verbose=0).fit(data)
    accuracy = model.metrics_["validation"]["y"]["accuracy"]
except MemoryError:
    outcome, accuracy = "MemoryError", None
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started,
                  "peak_rss": peak, "accuracy": accuracy}))
""".replace("WIDTH", str(WIDTH))


def write_table(path: Path, rows: int, chunk: int = 50_000, width: int = WIDTH) -> None:
    """Rows of a ``width``-number vector, a number, a category and a label depending on all
    three, written a chunk at a time (row groups of ``chunk`` rows), so making the file needs
    little memory itself."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=width).astype(np.float32)
    writer = None
    for start in range(0, rows, chunk):
        count = min(chunk, rows - start)
        vectors = rng.normal(size=(count, width)).astype(np.float32)
        x = rng.normal(size=count)
        category = rng.choice(np.array(["red", "green", "blue", "grey"]), count)
        score = vectors @ direction / np.sqrt(width) + x + (category == "red")
        table = pa.table({
            "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), width),
            "x": x, "c": category, "y": (score > 0.5).astype(np.int8),
        })
        writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table, row_group_size=chunk)
    writer.close()


def memory_cgroup(cap: int) -> Path | None:
    """A fresh cgroup limited to ``cap`` bytes, or None where none can be made."""
    name = f"plait-bench-{os.getpid()}"
    for root, limit in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
                        (Path("/sys/fs/cgroup"), "memory.max")):
        try:
            group = root / name
            group.mkdir()
            (group / limit).write_text(str(cap))
            swap = group / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
            return group
        except OSError:
            continue
    return None


def train_capped(group: Path | None, data: Path, cache: Path, stream: str) -> dict:
    def enter() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(cache), stream],
                          capture_output=True, text=True, preexec_fn=enter,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    return child_outcome(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small file under a small cap")
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    arguments = parser.parse_args()
    cap = 3 << 29  # 1.5 GiB
    rows = 200_000 if arguments.quick else 4_700_000
    group = memory_cgroup(cap)
    with tempfile.TemporaryDirectory(prefix="plait-stream-") as folder:
        data, cache = Path(folder) / "big.parquet", Path(folder) / "cache"
        write_table(data, rows)
        size = data.stat().st_size
        arrow = rows * (WIDTH * 4 + 8 + 8 + 1)
        results = {"rows": rows, "file_bytes": size, "arrow_bytes_estimate": arrow,
                   "cap_bytes": cap if group else None,
                   "in_memory": train_capped(group, data, cache, "never"),
                   "streamed_first": train_capped(group, data, cache, "always"),
                   "streamed_cached": train_capped(group, data, cache, "always")}
    if group is not None:
        group.rmdir()
    show(results)
    if arguments.out:
        arguments.out.write_text(json.dumps(results, indent=1) + "\n")


def show(results: dict) -> None:
    gib = 1 << 30
    cap = results["cap_bytes"]
    print(f"file: {results['rows']:,} rows, {results['file_bytes'] / gib:.2f} GiB on disk")
    print(f"memory cap (cgroup): {cap / gib:.2f} GiB, the file is {results['file_bytes'] / cap:.1f}x the cap"
          if cap else "memory cap: none (no cgroup could be made here; run as root to cap)")
    print(f"{'run':<16}{'outcome':<14}{'seconds':>9}{'peak RSS GiB':>14}{'accuracy':>10}")
    for name in ("in_memory", "streamed_first", "streamed_cached"):
        run = results[name]
        seconds = f"{run['seconds']:.1f}" if "seconds" in run else "-"
        peak = f"{run['peak_rss'] / gib:.2f}" if "peak_rss" in run else "-"
        accuracy = f"{run['accuracy']:.3f}" if run.get("accuracy") is not None else "-"
        print(f"{name:<16}{run['outcome']:<14}{seconds:>9}{peak:>14}{accuracy:>10}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
