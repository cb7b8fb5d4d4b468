"""Run every benchmark, print one table, write benchmarks/results.json.

    python benchmarks/run.py [--quick] [--out PATH]
    python benchmarks/run.py --markdown [--results PATH]

``--quick`` is a short run on small data (the figures are only a smoke test); the full run
adds the peers (Ludwig, installed into its own virtual environment on first use).
``--markdown`` runs nothing: it prints the figures of a results file (by default
benchmarks/results.json) as the markdown table README shows between its
``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
import end_to_end  # noqa: E402
import overhead  # noqa: E402
import peers  # noqa: E402
import preprocessing  # noqa: E402
from common import machine  # noqa: E402


def rows(results: dict[str, Any]) -> list[tuple[str, str, float | None, str, float | None]]:
    """(section, measure, plait's figure, what it is compared with, plait / that)."""
    table = []
    for name, model in results["overhead"]["models"].items():
        for kind in ("train", "predict"):
            figures = model[f"{kind}_examples_per_s"]
            table.append(("overhead", f"{name} {kind} examples/s", figures["plait"],
                          f"hand-written Keras {figures['hand_written']:,.0f}", model[f"{kind}_ratio"]))
        table.append(("overhead", f"{name} predict from raw table, examples/s",
                      model["predict_examples_per_s"]["plait_from_raw_table"], "hand-written, encoded arrays",
                      model["predict_from_raw_ratio"]))
    for name, kind in results["preprocessing"].items():
        for step in ("fit", "encode"):
            plait, base = kind[f"{step}_rows_per_s"], kind[f"baseline_{step}_rows_per_s"]
            table.append(("preprocessing", f"{name} {step} rows/s", plait, f"numpy/pyarrow {base:,.0f}",
                          plait / base))
    e2e = results["end_to_end"]
    for stage, seconds in e2e["seconds"].items():
        table.append(("end to end", f"reviews: {stage} (s)", seconds, "", None))
    f1 = e2e["test_at_threshold_0_5"]["recommended_f1"]
    table.append(("end to end", "reviews: test F1 (recommended)", f1, "", None))
    for backend, figures in results["backends"].items():
        if "error" in figures:
            table.append(("backends", f"{backend}: {figures['error']}", None, "", None))
            continue
        hand = figures.get("hand_written")  # results written before each backend was compared with itself
        for kind in ("train", "predict"):
            figure = figures[f"{kind}_examples_per_s"]
            other = f"hand-written Keras on {backend} {hand[f'{kind}_examples_per_s']:,.0f}" if hand else ""
            table.append(("backends", f"{backend} {kind} examples/s", figure, other,
                          figures[f"{kind}_ratio"] if hand else None))
    for peer, figures in results.get("peers", {}).items():
        if "error" in figures:
            table.append(("peers", f"{peer}: {figures['error']}", None, "", None))
            continue
        plait = e2e
        table.append(("peers", f"{peer} {figures['version']}: train (s, {figures['epochs']} epochs)",
                      plait["seconds"]["train"], f"{peer} {figures['train_seconds']:,.1f}",
                      figures["train_seconds"] / plait["seconds"]["train"]))
        table.append(("peers", "batch predict rows/s", plait["predict_rows_per_s"],
                      f"{peer} {figures['predict_batch_rows_per_s']:,.0f}",
                      plait["predict_rows_per_s"] / figures["predict_batch_rows_per_s"]))
        table.append(("peers", "one-row predict ms (p50)", plait["predict_one_row_ms_p50"],
                      f"{peer} {figures['predict_one_row_ms_p50']:,.1f}",
                      figures["predict_one_row_ms_p50"] / plait["predict_one_row_ms_p50"]))
        table.append(("peers", "peak memory MB", plait["peak_memory_mb"],
                      f"{peer} {figures['peak_memory_mb']:,.0f}", None))
        table.append(("peers", "test F1 (recommended)", plait["test_at_threshold_0_5"]["recommended_f1"],
                      f"{peer} {figures['test']['recommended_f1']:.3f}", None))
    return table


def show(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


HEADER = ("section", "measure", "plait", "compared with", "ratio")


def cells(table: list[tuple]) -> list[tuple[str, str, str, str, str]]:
    """Each row of ``rows`` as the text of its five cells, for the console and markdown tables."""
    return [(section, measure, show(plait), other, f"{ratio:.2f}×" if ratio else "")
            for section, measure, plait, other, ratio in table]


def format_table(table: list[tuple]) -> str:
    lines = [HEADER, *cells(table)]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(width) if i < 2 or i == 3 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)


def describe_run(results: dict[str, Any]) -> str:
    """One line: which run the figures come from, on what machine, when."""
    machine = results.get("machine", {})
    kind = "Quick run (`make bench QUICK=1`; its figures are only a smoke test)" if results.get("quick") \
        else "Full run (`make bench`)"
    took = f", {results['seconds'] / 60:.0f} minutes" if "seconds" in results else ""
    where = (f"{machine.get('cpus', '?')}-core {machine.get('processor', '?')} CPU, "
             f"{machine.get('system', '?')}, Python {machine.get('python', '?')}, "
             f"Keras {machine.get('keras', '?')} on {machine.get('backend', '?')}")
    return f"{kind} of {machine.get('date', 'an unrecorded date')}{took}, on a {where}."


def markdown_table(results: dict[str, Any]) -> str:
    """The figures of ``results`` as README shows them: the run's line, then the table."""

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return "\n".join([describe_run(results), "", line(HEADER), "|---|---|---:|---|---:|",
                      *(line(row) for row in cells(rows(results)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run on small data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.json")
    parser.add_argument("--markdown", action="store_true",
                        help="run nothing; print the figures of --results as README's markdown table")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results.json",
                        help="the results file --markdown reads (default: benchmarks/results.json)")
    arguments = parser.parse_args()
    if arguments.markdown:
        print(markdown_table(json.loads(arguments.results.read_text(encoding="utf-8"))))
        return
    quick = arguments.quick
    started = time.perf_counter()
    results: dict[str, Any] = {"quick": quick, "machine": machine()}
    sections = [("end_to_end", end_to_end.run), ("overhead", overhead.run),
                ("preprocessing", preprocessing.run), ("backends", backends.run)]
    for name, section in sections:
        print(f"[{time.perf_counter() - started:6.0f} s] {name}", file=sys.stderr, flush=True)
        results[name] = section(quick)
        if name == "end_to_end":
            results[name]["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if quick:
        results["peers"] = {"ludwig": {"error": "skipped in the quick mode"}}
    else:
        print(f"[{time.perf_counter() - started:6.0f} s] peers", file=sys.stderr, flush=True)
        results["peers"] = peers.run(end_to_end.split_files(), results["end_to_end"]["epochs"])
    results["seconds"] = time.perf_counter() - started
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(format_table(rows(results)))
    print(f"\n{'quick' if quick else 'full'} run, {results['seconds']:.0f} s; written to {arguments.out}")


if __name__ == "__main__":
    main()
