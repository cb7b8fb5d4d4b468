"""The benchmarks' quick mode runs end to end and writes every figure the README quotes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    overhead = results["overhead"]
    assert positive(overhead["train_ratio"]) and positive(overhead["predict_ratio"])
    for model in ("tabular_text", "tabular_image"):
        figures = overhead["models"][model]
        for kind in ("train_examples_per_s", "predict_examples_per_s"):
            assert positive(figures[kind]["plait"]) and positive(figures[kind]["hand_written"])
    for kind in ("number", "category", "text_40_words", "image_64_to_32", "sequence_20x3"):
        figures = results["preprocessing"][kind]
        keys = ("fit_rows_per_s", "encode_rows_per_s", "baseline_fit_rows_per_s",
                "baseline_encode_rows_per_s")
        assert all(positive(figures[key]) for key in keys)
    e2e = results["end_to_end"]
    assert set(e2e["seconds"]) == {"read", "fit", "encode", "compile", "train", "predict"}
    assert all(positive(seconds) for seconds in e2e["seconds"].values())
    assert 0 <= e2e["test_at_threshold_0_5"]["recommended_f1"] <= 1
    assert positive(results["backends"]["jax"]["train_examples_per_s"])
    assert set(results["backends"]) == {"jax", "tensorflow", "torch"}
    assert results["peers"]["ludwig"]["error"] == "skipped in the quick mode"
    assert "overhead" in done.stdout and "tabular_text train examples/s" in done.stdout
