"""The ``plait`` command. Heavy modules load inside the commands, so ``--help`` is instant.

A mistake of the user's prints one ``plait: error: ...`` line (or a few, for a config with
several problems) and exits with status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="plait: declarative multi-input deep models on Keras 3.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DataOption = Annotated[Path, typer.Option("--data", help="CSV, TSV, Parquet, JSON lines or Arrow file.")]


def user_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from plait.errors import PlaitError

        try:
            return command(*args, **kwargs)
        except PlaitError as error:
            print(f"plait: error: {error}", file=sys.stderr)
            _stop_group(2)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("plait: interrupted", file=sys.stderr)
            _stop_group(130)
            raise typer.Exit(130) from None
        except Exception as error:
            distributed = sys.modules.get("plait.distributed")
            if distributed is None or distributed.joined() is None:
                raise
            message = distributed.lost_peer(error)
            if message is None:
                traceback.print_exc()
            print(f"plait: error: {message or 'training stopped by the error above'}", file=sys.stderr)
            _stop_group(3)
            raise

    return wrapper


def _stop_group(status: int) -> None:
    """In a group of training processes, leave at once (``plait.distributed.stop_now``)."""
    if "plait.distributed" in sys.modules:
        sys.modules["plait.distributed"].stop_now(status)


@app.command()
@user_errors
def train(
    config: Annotated[Path, typer.Argument(help="The model config (YAML).")],
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    valid: Annotated[Path | None, typer.Option("--valid", help="Separate validation file.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last "
                                         "checkpoint.")] = False,
    report: Annotated[bool, typer.Option(help="Write report.html and its plots into the "
                                         "bundle.")] = True,
    cache: Annotated[Path | None, typer.Option("--cache", help="Folder for the encoded cache of "
                                               "streamed data (default: train.cache_dir, "
                                               "$PLAIT_CACHE_DIR or ~/.cache/plait).")] = None,
    track: Annotated[str | None, typer.Option("--track", help="Log the run to a tracker: mlflow "
                                              "(as train.track does); the tracking URI is "
                                              "$MLFLOW_TRACKING_URI or MLflow's default.")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="The MLflow experiment "
                                                   "(default: $MLFLOW_EXPERIMENT_NAME, else the "
                                                   "config file's name).")] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="Train data parallel on N devices "
                                                "of each process, or 'all' (sets "
                                                "train.distribution.devices); without accelerators, N "
                                                "host devices of the CPU.")] = None,
    coordinator: Annotated[str | None, typer.Option("--coordinator", help="HOST:PORT of process 0 "
                                                    "when several processes train together "
                                                    "(docs/distributed.md).")] = None,
    num_processes: Annotated[int | None, typer.Option("--num-processes", help="How many processes "
                                                      "train together.", min=1)] = None,
    process_id: Annotated[int | None, typer.Option("--process-id", help="This process's number, 0 "
                                                   "to N-1; process 0 writes the checkpoints and "
                                                   "the bundle.", min=0)] = None,
    heartbeat_timeout: Annotated[int, typer.Option("--heartbeat-timeout", help="Seconds after which "
                                                   "a silent process counts as dead and the others "
                                                   "stop.", min=1)] = 60,
) -> None:
    """Fit preprocessing, train, and write a bundle to OUT.

    A checkpoint is written after every epoch beside OUT (.OUT.checkpoint) and removed once
    the bundle is saved; --resume continues from it after an interruption. DATA may be a
    folder of Parquet/CSV files: it is then read in batches and encoded into a cache.
    Several processes (--coordinator, or SLURM / Kubernetes variables) train one model
    together; see docs/distributed.md.
    """
    from plait.errors import PlaitError

    if track not in (None, "mlflow"):
        raise PlaitError(f"--track: found {track!r}; expected mlflow")
    from plait import distributed

    cluster = distributed.read_cluster(coordinator, num_processes, process_id, heartbeat_timeout)
    devices_wanted = distributed.devices_flag(devices)
    from plait.model import Model, checkpointed
    from plait.training import clear

    checkpoint = out.parent / f".{out.name}.checkpoint"
    if resume and not checkpointed(checkpoint) and not quiet:
        print(f"no checkpoint at {checkpoint}; starting from the first epoch", file=sys.stderr)
    model = Model(config, verbose=0 if quiet else (1 if sys.stdout.isatty() else 2))
    model.spec = distributed.from_command_line(model.spec, devices_wanted, cluster)
    chief = distributed.is_chief()
    if not chief:
        model.verbose = 0
    tracker = None
    if chief and (track or model.spec.train.track) == "mlflow":
        from plait.mlflow import Tracker

        if quiet:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        tracker = Tracker(model.spec, experiment=experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                          or config.stem, run_name=out.name,
                          params={"train.epochs": epochs} if epochs else None,
                          tags={"plait.data": str(data), "plait.bundle": str(out)})
    with tracker or contextlib.nullcontext():
        model.fit(data, validation_data=valid, epochs=epochs, checkpoint=checkpoint, resume=resume,
                  cache_dir=cache, callbacks=[tracker.callback()] if tracker else None)
        if not chief:
            print(f"process {cluster.process_id} of {cluster.num_processes}: training done; process 0 "
                  f"writes the bundle to {out}")
            return
        model.save(out, report=report)
        if tracker:
            tracker.log_result(model, out, example=data)
    clear(checkpoint)
    if model.distributed_ and not quiet:
        print(f"trained {model.distributed_}", file=sys.stderr)
    if not quiet:
        show_data_report(model.data_report_)
        show_metrics(model.metrics_.get("validation", {}), "validation")
    if tracker:
        print(f"MLflow run {tracker.run_id} logged to {tracker.tracking_uri}")
    print(f"bundle written to {out}")


@app.command()
@user_errors
def tune(
    config: Annotated[Path, typer.Argument(help="The model config (YAML) with a 'tune' section.")],
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for best.yaml, trials.csv, bundle/, "
                                      "report.html and (by default) the study's database.")],
    valid: Annotated[Path | None, typer.Option("--valid", help="Separate validation file.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in the study, all workers together "
                                               "(overrides tune.trials).", min=1)] = None,
    timeout_minutes: Annotated[float | None, typer.Option(help="Stop starting trials after this "
                                                          "long (overrides tune.timeout_minutes).",
                                                          min=0.01)] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL of a study shared by workers "
                                                "(sqlite:///FILE, postgresql://...); default: "
                                                "OUT/study.db.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the config file's "
                                              "name).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the study in OUT/study.db.")] = False,
    track: Annotated[str | None, typer.Option("--track", help="mlflow: log the study as a run and each "
                                              "trial as a child run ($MLFLOW_TRACKING_URI).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Search the config's tune.space with Optuna (TPE, seeded by train.seed), pruning trials
    that lag; write OUT/best.yaml, OUT/trials.csv, OUT/bundle/ (the best config, trained)
    and OUT/report.html. Workers on several machines share a study through --storage and
    --study. Needs the extra: pip install "plait[tune]"."""
    from plait.tuning.study import tune as run

    run(config, data, out=out, valid=valid, trials=trials, timeout_minutes=timeout_minutes,
        storage=storage, study=study, resume=resume, track=track, verbose=not quiet)


@app.command()
@user_errors
def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Predictions file: .csv or .parquet.")],
) -> None:
    """Predict every row of DATA; write one column per output (and class probabilities)."""
    from plait.errors import PlaitError

    writers = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    if out.suffix.lower() not in writers:
        raise PlaitError(f"--out {out}: found extension {out.suffix!r}; expected .csv or .parquet")
    from plait.data import read_table
    from plait.model import load

    table = read_table(data)  # before the bundle and its backend load: a bad file fails at once
    frame = load(bundle).predict(table)
    write_atomically(out, lambda path: _write_frame(frame, path, writers[out.suffix.lower()]))
    print(f"{len(frame)} predictions written to {out}")


@app.command()
@user_errors
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: DataOption,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the metrics as JSON.")] = None,
) -> None:
    """Metrics per output on labelled DATA, beside the trivial baselines."""
    import json

    from plait.data import read_table
    from plait.model import load

    table = read_table(data)  # before the bundle and its backend load: a bad file fails at once
    metrics = load(bundle).evaluate(table)
    show_metrics(metrics, str(data))
    if out is not None:
        text = json.dumps(metrics, indent=2) + "\n"
        write_atomically(out, lambda path: path.write_text(text, encoding="utf-8"))


@app.command()
@user_errors
def describe(
    target: Annotated[Path, typer.Argument(help="A config file or a bundle directory.")],
    data: Annotated[Path | None, typer.Option("--data", help="Fit preprocessing on this file "
                                              "first, for exact sizes.")] = None,
) -> None:
    """The layers, output shapes and parameter counts of each branch, merge and output."""
    from plait.model import Model, load

    if target.is_dir():
        model = load(target)
    else:
        model = Model(target)
        if data is not None:
            from plait.model import fitted_states

            model.states_ = fitted_states(model.spec, data)
    fitted = hasattr(model, "states_")
    show_description(model.describe())
    if not fitted:
        print("sizes not declared in the config (vocabularies, lengths) are placeholders; "
              "pass --data to fit them")


@app.command()
@user_errors
def init(
    data: Annotated[Path, typer.Argument(help="The data file to infer the config from.")],
    target: Annotated[list[str], typer.Option("--target", help="A column to predict; COLUMN:TYPE "
                                              "sets its type (binary, category, number). Repeat "
                                              "for several targets.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the config to this file "
                                             "instead of printing it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    sample_rows: Annotated[int, typer.Option("--sample-rows", min=1, help="Rows sampled at random "
                                             "to infer the types.")] = 10_000,
) -> None:
    """Write a commented config inferred from DATA: an input per usable column (the evidence
    as a comment), an output per --target, training defaults."""
    from plait.errors import PlaitError
    from plait.init import infer_config

    if out is not None and out.is_dir():
        raise PlaitError(f"--out {out}: is a folder; expected a config file name")
    if out is not None and out.exists() and not force:
        raise PlaitError(f"--out {out}: already exists; expected a new file (pass --force to "
                         "overwrite it)")
    text = infer_config(data, target, sample_rows=sample_rows)
    if out is None:
        sys.stdout.write(text)
        return
    write_atomically(out, lambda path: path.write_text(text, encoding="utf-8"))
    print(f"config written to {out}; check it, then: plait train {out} --data {data} --out BUNDLE",
          file=sys.stderr)


@app.command()
@user_errors
def code(
    target: Annotated[Path, typer.Argument(help="A config file or a bundle directory.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the script to this file "
                                             "instead of printing it.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Fit preprocessing on this file "
                                              "first, for exact sizes.")] = None,
) -> None:
    """The equivalent hand-written Keras script: functional API, plait's layer names; for a
    bundle, it also loads the trained weights."""
    from plait.codegen import generate_for

    script = generate_for(target, data)
    if out is None:
        sys.stdout.write(script)
        return
    write_atomically(out, lambda path: path.write_text(script, encoding="utf-8"))
    print(f"Keras script written to {out}", file=sys.stderr)


@app.command()
@user_errors
def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes, each with its own copy of the "
                                         "model.", min=1)] = 1,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).",
                                                min=1)] = 10 * 1024 * 1024,
    max_records: Annotated[int, typer.Option(help="Most records in one request (413 above).",
                                             min=1)] = 1000,
    max_batch: Annotated[int, typer.Option(help="Most records in one model call.", min=1)] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a model call waits for more "
                                                 "concurrent requests to fill its batch.", min=0)] = 1.0,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve BUNDLE over HTTP: POST /v1/predict, GET /v1/schema, /v1/stats, /healthz,
    Prometheus metrics at /metrics, a page to try the model at /, the API description at
    /docs. When the PLAIT_API_KEY environment variable is set, the /v1 endpoints require it
    (X-API-Key header or Authorization: Bearer)."""
    from plait.serve import Settings
    from plait.serve import serve as run

    settings = Settings(str(bundle), max_body_bytes=max_body_bytes, max_records=max_records,
                        max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    run(settings, host=host, port=port, workers=workers, access_log=access_log)


@app.command("export")
@user_errors
def export_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, saved_model or litert.")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (.onnx, .tflite), or the "
                                      "SavedModel folder.")],
) -> None:
    """Write BUNDLE's network for ONNX Runtime, TensorFlow or LiteRT, and beside it a JSON
    description of its inputs (encoded as plait encodes them) and outputs."""
    from plait.export import export

    for path in export(bundle, fmt, out):
        print(f"written: {path}")


@app.command()
@user_errors
def explain(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: DataOption,
    repeats: Annotated[int, typer.Option(help="Shuffles (and bootstrap resamples) per input.",
                                         min=1)] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the first shuffle.", min=0)] = 0,
    rows: Annotated[str | None, typer.Option(help="Explain these rows of DATA instead (0-based, "
                                             "e.g. 0,5,9): which words, image regions, steps or "
                                             "values drove each prediction (integrated gradients; "
                                             "no labels needed).")] = None,
    steps: Annotated[int, typer.Option(help="Integration steps per row, with --rows.", min=2)] = 64,
) -> None:
    """How much each output's metric drops on labelled DATA when each input is permuted across
    rows, or switched off (its training-set default in every row), written to importance.json
    in the bundle. With --rows, what drove each of those rows' predictions, written to
    attributions.json. The bundle's report, when it has one, shows either."""
    import json

    from plait.bundle import update
    from plait.model import load

    chosen = row_numbers(rows) if rows is not None else None
    model = load(bundle)
    if chosen is not None:
        name, result = "attributions.json", model.attribute(data, chosen, steps=steps)
        show_attributions(result)
    else:
        name, result = "importance.json", model.explain(data, repeats=repeats, seed=seed)
        show_importance(result)
    files = {name: (json.dumps(result, indent=2) + "\n").encode("utf-8")}
    if "report.html" in model.manifest_["files"]:
        files.update(model.report_files())
    update(bundle, files, drop="plots" if "report.html" in files else None)
    print(f"{name.removesuffix('.json')} written to {bundle / name}")


def row_numbers(text: str) -> list[int]:
    """``"0,5,9"`` as row numbers; anything else is a usage error."""
    try:
        found = [int(part) for part in text.split(",")]
    except ValueError:
        found = []
    if not found or min(found) < 0:
        raise typer.BadParameter(f"found {text!r}; expected 0-based row numbers separated by commas, "
                                 "such as 0,5,9", param_hint="--rows")
    return found


def show_attributions(result: dict, shown: int = 6) -> None:
    """Per row and explained output unit: the answer, the baseline's, and each input's share
    with its largest units."""
    for row in result["rows"]:
        for output, units in row["outputs"].items():
            for unit in units:
                print(f"row {row['row']}, {output} ({unit['unit']}): {unit['value']:.4g} "
                      f"(baseline {unit['baseline']:.4g}, gap {unit['gap']:.2g})")
                for name, entry in unit["inputs"].items():
                    if entry["total"] is None:
                        print(f"  {name}: held at its value (no gradient reaches it)")
                        continue
                    largest = sorted(entry.get("units", []), key=lambda pair: -abs(pair[1]))[:shown]
                    listed = ", ".join(f"{label} {share:+.3g}" for label, share in largest)
                    print(f"  {name}: {entry['total']:+.4g}" + (f"  [{listed}]" if listed else ""))


@app.command()
@user_errors
def report(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    data: Annotated[Path | None, typer.Option("--data", help="Show metrics and plots on this "
                                              "labelled file instead of the validation split.")] = None,
) -> None:
    """Write report.html into the bundle: metrics beside baselines, plots, per-input importance,
    the model diagram, the data summary and the config, in one self-contained page."""
    from plait.bundle import update
    from plait.model import Model

    model = Model.load(bundle)
    metrics, source = None, "validation split"
    if data is not None:
        metrics, source = model.evaluate(data), data.name
    update(bundle, model.report_files(metrics, source), drop="plots")
    print(f"report written to {bundle / 'report.html'}")


def show_importance(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from plait.metrics import ranked

    table = Table(title=f"importance on {result['rows']} rows ({result['repeats']} repeats): "
                        "drop in the metric, mean ± sd")
    for heading in ("input", "output", "metric", "permuted", "switched off"):
        table.add_column(heading, justify="right" if heading in ("permuted", "switched off") else "left")
    for name, out, metric, permuted, switched in ranked(result):
        table.add_row(name, out, metric, f"{permuted['mean']:.4f} ± {permuted['std']:.4f}",
                      f"{switched['mean']:.4f} ± {switched['std']:.4f}")
    Console(width=None if sys.stdout.isatty() else 110).print(table)


def show_description(summary: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="plait model")
    for heading in ("part", "kind", "layers", "output shape", "params"):
        table.add_column(heading, justify="right" if heading == "params" else "left")
    total = 0
    for owner, part in summary.items():
        layers = layer_chain(part["layers"])
        shape = str(tuple(part["layers"][-1]["shape"])).replace("None", "batch")
        table.add_row(owner, part["kind"], layers, shape, f"{part['params']:,}")
        total += part["params"]
    table.add_row("total", "", "", "", f"{total:,}", style="bold")
    Console().print(table)


def layer_chain(rows: list[dict]) -> str:
    """The layers' classes in order; an ensemble's as one member's, times the members, then
    the layers that average them.

    >>> layer_chain([{"layer": "member_0/y", "class": "Dense"}, {"layer": "member_1/y", "class": "Dense"},
    ...              {"layer": "y_average", "class": "Average"}])
    '2 × (Dense) → Average'
    """
    members = {row["layer"].split("/")[0] for row in rows if "/" in row["layer"]}
    if not members:
        return " → ".join(row["class"] for row in rows)
    own = " → ".join(row["class"] for row in rows if row["layer"].startswith(f"{min(members)}/"))
    shared = [row["class"] for row in rows if "/" not in row["layer"]]
    return " → ".join([f"{len(members)} × ({own})", *shared])


def show_data_report(report: dict) -> None:
    """Rows used, and per input what its missing-value policy touched."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data: {report['used_rows']} of {report['training_rows']} training rows used"
                        + (f", {report['validation_rows']} validation rows" if "validation_rows" in report
                           else ""))
    for heading in ("input", "policy", "missing", "unseen"):
        table.add_column(heading)
    for name, counts in report["inputs"].items():
        if name != "targets":
            table.add_row(name, counts["policy"], str(counts["missing"]), str(counts["unseen"]))
    Console(stderr=True).print(table)


def show_metrics(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"metrics ({title})")
    for heading in ("output", "metric", "value", "baseline", "lift"):
        table.add_column(heading)
    for output, scores in metrics.items():
        if not isinstance(scores, dict):
            continue
        baseline, lift = scores.get("baseline", {}), scores.get("lift", {})
        for name, value in scores.items():
            if isinstance(value, float):
                shown = baseline.get(name)
                table.add_row(output, name, f"{value:.4f}",
                              f"{shown:.4f}" if isinstance(shown, float) else "",
                              f"{lift[name]:+.4f}" if name in lift else "")
    Console().print(table)


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _write_frame(frame: Any, path: Path, kind: str) -> None:
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def main() -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
