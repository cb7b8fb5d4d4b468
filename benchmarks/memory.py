"""Memory by budget: streamed training runs whose peak resident memory is set by
``train.memory_mb``, not by the file.

Writes two Parquet files of the shape in issue #14 (a 128-number float32 vector, a number
and a category per row; a binary target that depends on them), then trains one epoch on
each, streamed, in a child process under a budget of ``--budget`` MiB, and prints each
child's peak resident memory (``VmHWM``) against the baseline: the same model trained in
memory on 2,048 rows by another child (the interpreter, Keras, JAX and the compiled model).
Every child compiles into its own empty compilation cache, so compiling counts alike.

Where a memory cgroup can be made (as root), the larger file is also trained under a 900 MiB
cap with the default budget (a share of the memory available) and with the sizes plait used
before (``part_rows: 65536, fit_rows: 200000``), the case of the issue.

    python benchmarks/memory.py              # 1.0 M and 4.8 M rows (0.5 and 2.6 GB)
    python benchmarks/memory.py --quick      # 50,000 and 200,000 rows
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

from common import child_outcome
from streaming import memory_cgroup, write_table

WIDTH = 128
MEBIBYTE = 1 << 20
CAP = 900 * MEBIBYTE
CHILD = r"""
import json, sys, time
spec, data = json.loads(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
import plait
model = plait.Model(spec, verbose=0).fit(data)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"outcome": "trained", "seconds": time.perf_counter() - started,
                  "peak_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "memory": model.data_report_.get("memory"),
                  "accuracy": model.metrics_["validation"]["y"]["accuracy"]}))
"""


def config(**train: object) -> dict:
    return {"inputs": [{"name": "v", "type": "vector", "size": WIDTH, "layers": [32]},
                       {"name": "x", "type": "number"}, {"name": "c", "type": "category"}],
            "head": {"layers": [32]}, "outputs": [{"name": "y", "type": "binary"}],
            "train": {"epochs": 1, "batch_size": 4096, "validation_split": 0.05, **train}}


def train(spec: dict, data: Path, folder: Path, group: Path | None = None) -> dict:
    """One training run in a child process (inside ``group``, a cgroup, when given)."""
    def enter() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    compiled = Path(tempfile.mkdtemp(prefix="xla-", dir=folder))
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": str(compiled)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(data)], capture_output=True,
                          text=True, env=environment, preexec_fn=enter if group else None)
    return child_outcome(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small files")
    parser.add_argument("--budget", type=float, default=256.0, help="train.memory_mb of the budget runs")
    parser.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    arguments = parser.parse_args()
    sizes = (50_000, 200_000) if arguments.quick else (1_000_000, 4_800_000)
    results: dict = {"budget_mb": arguments.budget, "runs": []}
    with tempfile.TemporaryDirectory(prefix="plait-memory-") as scratch:
        folder = Path(scratch)
        small = folder / "small.parquet"
        write_table(small, 2048, width=WIDTH)
        results["baseline"] = train(config(stream="never"), small, folder)
        for rows in sizes:
            data = folder / f"rows-{rows}.parquet"
            write_table(data, rows, width=WIDTH)
            run = train(config(stream="always", memory_mb=arguments.budget, cache_dir=str(folder / "cache")),
                        data, folder)
            results["runs"].append({"rows": rows, "file_bytes": data.stat().st_size, "budget": "given",
                                    **run})
        group = memory_cgroup(CAP)
        if group is not None:
            former = {"part_rows": 65_536, "fit_rows": 200_000}
            for name, sizing in (("default", {}), ("former sizes", former)):
                run = train(config(stream="always", cache_dir=str(folder / f"cache-{name}"), **sizing), data,
                            folder, group)
                results["runs"].append({"rows": rows, "file_bytes": data.stat().st_size, "budget": name,
                                        "cap_mb": CAP / MEBIBYTE, **run})
            group.rmdir()
    show(results)
    if arguments.out:
        arguments.out.write_text(json.dumps(results, indent=1) + "\n")


def show(results: dict) -> None:
    baseline = results["baseline"].get("peak_mb")
    print(f"baseline (the same model trained in memory on 2,048 rows): peak RSS {baseline:,.0f} MiB")
    print(f"{'rows':>10}{'file GiB':>10}  {'budget':<24}{'part_rows':>10}{'fit_rows':>10}{'outcome':>14}"
          f"{'seconds':>9}{'peak MiB':>10}{'above baseline':>16}")
    for run in results["runs"]:
        memory = run.get("memory") or {}
        budget = {"given": f"memory_mb {results['budget_mb']:g}",
                  "default": f"default ({memory.get('budget_mb', 0):,.0f}), cap {run.get('cap_mb', 0):,.0f}",
                  "former sizes": f"former sizes, cap {run.get('cap_mb', 0):,.0f}"}[run["budget"]]
        peak = run.get("peak_mb")
        print(f"{run['rows']:>10,}{run['file_bytes'] / (1 << 30):>10.2f}  {budget:<24}"
              f"{memory.get('part_rows', '-'):>10}{memory.get('fit_rows', '-'):>10}{run['outcome']:>14}"
              f"{run.get('seconds', 0):>9.0f}{peak or 0:>10,.0f}"
              f"{(peak - baseline) if peak else 0:>16,.0f}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
