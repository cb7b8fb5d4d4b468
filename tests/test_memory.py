"""``train.memory_mb``: a streamed run sizes its parts and fitting sample to a memory budget
from what a row of its data costs, and a real run stays within that budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plait.errors import ConfigError
from plait.memory import MEGABYTE, PROBE_ROWS, RowCost, available_bytes, cgroup_room, plan
from plait.preprocess import prepare, probed_row_cost
from plait.sources import FileSource
from plait.spec import load_spec

WIDTH = 128


def write_rows(path: Path, rows: int, chunk: int = 20_000) -> Path:
    """A 128-number float32 vector, a number and a category per row; a binary target that
    depends on them. Written a chunk at a time, in row groups of ``chunk`` rows."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=WIDTH).astype(np.float32)
    with pq.ParquetWriter(path, pa.schema([("v", pa.list_(pa.float32(), WIDTH)), ("x", pa.float64()),
                                           ("c", pa.string()), ("y", pa.int8())])) as writer:
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            vectors = rng.normal(size=(count, WIDTH)).astype(np.float32)
            x = rng.normal(size=count)
            c = rng.choice(np.array(["red", "green", "blue", "grey"]), count)
            score = vectors @ direction / np.sqrt(WIDTH) + x + (c == "red")
            writer.write_table(pa.table({
                "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), WIDTH), "x": x, "c": c,
                "y": (score > 0.5).astype(np.int8)}), row_group_size=chunk)
    return path


def config(**train: object) -> dict:
    return {"inputs": [{"name": "v", "type": "vector", "size": WIDTH, "layers": [32]},
                       {"name": "x", "type": "number"}, {"name": "c", "type": "category"}],
            "head": {"layers": [32]}, "outputs": [{"name": "y", "type": "binary"}],
            "train": {"epochs": 1, "batch_size": 1024, "validation_split": 0.1, **train}}


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("memory") / "rows.parquet", 20_000)


def test_a_row_costs_its_arrow_bytes_its_encoding_and_what_fitting_it_takes(rows_file: Path) -> None:
    spec = load_spec(config())
    cost = probed_row_cost(spec, FileSource(rows_file, 65_536))
    first = pq.ParquetFile(rows_file).read_row_group(0).slice(0, PROBE_ROWS)
    assert cost.raw == pytest.approx(first.nbytes / PROBE_ROWS)
    # encoded: 128 float32 numbers, the number (float32), the category's index (int32), the
    # target (float32), its sample weight (float32) and whether it is present (one byte)
    assert cost.encoded == pytest.approx(WIDTH * 4 + 4 + 4 + 4 + 4 + 1)
    # the vector's mean and spread are computed on float64 copies of it: fitting dominates
    assert 4 * cost.raw < cost.fitting < 20 * cost.raw
    assert cost.encoded < cost.encoding < 20 * cost.raw


def measured(cache: Path) -> RowCost:
    """What a row costs, as the run that cached its data measured it."""
    (path,) = cache.glob("cost-*.json")
    return RowCost(**json.loads(path.read_text()))


def test_unset_sizes_come_from_the_budget_and_given_ones_win(rows_file: Path, tmp_path: Path) -> None:
    spec = load_spec(config(memory_mb=48, stream="always", cache_dir=str(tmp_path)))
    prepared = prepare(spec, FileSource(rows_file, 65_536), None)
    cost = measured(tmp_path)
    part_rows, fit_rows = plan(48 * MEGABYTE, cost)
    assert cost.peak(part_rows, fit_rows) <= 48 * MEGABYTE
    assert 1024 <= part_rows < 20_000 and 4096 <= fit_rows < 18_000  # below what the file holds
    assert prepared.report["memory"] == {"budget_mb": 48.0, "part_rows": part_rows, "fit_rows": fit_rows}
    sizes = [train.rows + valid.rows for train, valid in zip(prepared.train, prepared.valid, strict=True)]
    assert sizes[:-1] == [part_rows] * (len(sizes) - 1) and sum(sizes) == 20_000

    given = load_spec(config(memory_mb=48, stream="always", cache_dir=str(tmp_path), part_rows=3000))
    report = prepare(given, FileSource(rows_file, 65_536), None).report["memory"]
    assert report == {"budget_mb": 48.0, "part_rows": 3000, "fit_rows": plan(48 * MEGABYTE, cost, 3000)[1]}
    both = load_spec(config(memory_mb=48, stream="always", cache_dir=str(tmp_path), part_rows=3000,
                            fit_rows=5000))
    assert prepare(both, FileSource(rows_file, 65_536), None).report["memory"]["fit_rows"] == 5000


def test_a_larger_budget_reuses_the_parts_a_smaller_one_cached(rows_file: Path, tmp_path: Path) -> None:
    small = load_spec(config(memory_mb=48, stream="always", cache_dir=str(tmp_path)))
    first = prepare(small, FileSource(rows_file, 65_536), None).report["memory"]
    cached = sorted(tmp_path.glob("encoded-*"))
    larger = load_spec(config(memory_mb=160, stream="always", cache_dir=str(tmp_path)))
    assert plan(160 * MEGABYTE, measured(tmp_path)) > (first["part_rows"], first["fit_rows"])
    again = prepare(larger, FileSource(rows_file, 65_536), None).report["memory"]
    assert again == {**first, "budget_mb": 160.0}
    assert sorted(tmp_path.glob("encoded-*")) == cached


def test_a_budget_too_small_for_the_least_sizes_is_a_config_error(rows_file: Path, tmp_path: Path) -> None:
    spec = load_spec(config(memory_mb=1, stream="always", cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"train\.memory_mb: found 1; expected at least \d+ for rows of "
                                          r"this data \([\d,]+ bytes as read"):
        prepare(spec, FileSource(rows_file, 65_536), None)


def test_cgroup_v1_limits_above_the_process_count_less_their_page_cache(tmp_path: Path) -> None:
    (tmp_path / "self").write_text("4:memory:/jobs/one\n3:cpu:/jobs/one\n")
    jobs = tmp_path / "memory" / "jobs"
    (jobs / "one").mkdir(parents=True)
    (jobs / "one" / "memory.limit_in_bytes").write_text(str(9223372036854771712))  # no limit
    (jobs / "memory.limit_in_bytes").write_text(str(900 * MEGABYTE))
    (jobs / "memory.usage_in_bytes").write_text(str(500 * MEGABYTE))
    (jobs / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {200 * MEGABYTE}\n")
    assert cgroup_room(tmp_path, tmp_path / "self") == 600 * MEGABYTE
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4000000 kB\nMemAvailable: 512000 kB\n")
    assert available_bytes(meminfo, tmp_path, tmp_path / "self") == 500 * MEGABYTE
    assert available_bytes(meminfo, tmp_path, tmp_path / "none") == 500 * MEGABYTE
    assert available_bytes(tmp_path / "none", tmp_path, tmp_path / "self") == 600 * MEGABYTE


CHILD = """
import json, sys
import plait
spec, data = json.loads(sys.argv[1]), sys.argv[2]
model = plait.Model(spec, verbose=0).fit(data)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"peak_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "memory": model.data_report_.get("memory")}))
"""


def peak_of_training(spec: dict, data: Path, compiled: Path) -> dict:
    """Train in a new process, with its own empty compilation cache (each compiles the model:
    what compiling takes is part of the baseline); its peak resident memory (VmHWM, which
    counts this process's pages only, unlike ``ru_maxrss`` after a fork)."""
    environment = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(compiled)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(data)], capture_output=True,
                          text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_streamed_run_peaks_within_its_budget_above_the_baseline(tmp_path: Path) -> None:
    """100,000 rows (53 MB as Arrow) under a 64 MB budget: the same model trained in memory on
    2,048 rows is the baseline (interpreter, Keras, JAX, the compiled model). Without the
    budget this run would fit its preprocessing on every training row, 90,000 of them at
    about 5 KB each."""
    big, small = write_rows(tmp_path / "big.parquet", 100_000), write_rows(tmp_path / "small.parquet", 2048)
    baseline = peak_of_training(config(stream="never"), small, tmp_path / "xla-baseline")
    streamed = peak_of_training(config(stream="always", memory_mb=64, cache_dir=str(tmp_path / "cache")),
                                big, tmp_path / "xla-streamed")
    assert streamed["memory"]["budget_mb"] == 64 and streamed["memory"]["fit_rows"] < 90_000
    assert streamed["peak_mb"] <= baseline["peak_mb"] + 64, (baseline, streamed)
