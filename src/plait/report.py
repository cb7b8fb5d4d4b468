"""``report.html``: one self-contained page about a trained model (inline CSS, plots embedded
as base64 PNG data URIs, nothing fetched from elsewhere).

It shows the metrics beside their baselines, the plots, the per-input importance (after
``plait explain``), what drove single predictions (after ``plait explain --rows``), the
model diagram and its layers, the data summary (rows, missing and out-of-vocabulary counts
per input) and the config.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path
from typing import Any

from plait import plots
from plait.metrics import ranked

NAMES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1",
         "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "log_loss": "log loss",
         "ece": "ECE (calibration error)", "macro_f1": "macro F1",
         "weighted_f1": "weighted F1", "micro_f1": "micro F1", "jaccard": "Jaccard",
         "hamming_loss": "Hamming loss", "mae": "MAE", "rmse": "RMSE", "r2": "R²",
         "coverage": "interval coverage", "interval_width": "interval width"}
"""How each metric is named on the page, in the order it is shown."""

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
       background: #f8fafc; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 36px 0 10px;
     border-bottom: 2px solid #e2e8f0; padding-bottom: 4px; } h3 { font-size: 16px; margin: 20px 0 8px; }
.meta { color: #64748b; font-size: 13px; }
table { border-collapse: collapse; background: white; margin: 6px 0 14px; font-size: 14px; }
th, td { border: 1px solid #e2e8f0; padding: 5px 10px; text-align: left; }
th { background: #f1f5f9; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.better { color: #15803d; } td.worse { color: #b91c1c; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; background: white; border: 1px solid #e2e8f0; padding: 8px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #64748b; margin-top: 4px; }
summary { cursor: pointer; color: #475569; }
pre { background: white; border: 1px solid #e2e8f0; padding: 12px; overflow-x: auto; font-size: 13px; }
.note { color: #475569; font-size: 14px; }
.share { padding: 1px 3px; border-radius: 3px; line-height: 1.9; }
"""


def plot_files(model: Any, metrics: dict | None, source: str) -> dict[str, bytes]:
    """Every plot the report shows, by file name: training curves, each output's own plots,
    the importance bars and the model diagram."""
    outputs = {out.name: out for out in model.spec.outputs}
    images = plots.training_curves(getattr(model, "history_", {}) or {}, list(outputs))
    for name, scores in (metrics or {}).items():
        if name in outputs and isinstance(scores, dict):
            images.update(outputs[name].plots(scores, source))
    if getattr(model, "importance_", None):
        images["importance.png"] = plots.importance_bars(model.importance_)
    if getattr(model, "attributions_", None):
        images.update(plots.attribution_plots(model.attributions_))
    images["model.png"] = plots.diagram(model.spec, model.describe())
    return images


def report_files(model: Any, metrics: dict | None, source: str = "validation split") -> dict[str, bytes]:
    """``report.html`` and ``plots/*.png`` for a fitted model (anything with its ``spec``,
    ``describe()`` and, when known, ``history_``, ``importance_``, ``data_report_`` and
    ``manifest_``) and the ``metrics`` shown, measured on ``source``."""
    images = plot_files(model, metrics, source)
    page = render(model, metrics, source, images)
    files = {f"plots/{name}": image for name, image in images.items()}
    files["report.html"] = page.encode("utf-8")
    return files


def render(model: Any, metrics: dict | None, source: str, images: dict[str, bytes]) -> str:
    """The report page."""
    manifest = getattr(model, "manifest_", None) or {}
    versions = ", ".join(f"{key} {manifest[key]}" for key in ("plait", "keras", "backend") if key in manifest)
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = ", ".join(out.name for out in model.spec.outputs)
    sections = [
        f"<h1>plait report: {_e(title)}</h1>",
        f'<p class="meta">written {_e(when)}{"; " + _e(versions) if versions else ""}</p>',
        _metrics_section(model, metrics, source),
        _plots_section(images, metrics, source),
        _importance_section(getattr(model, "importance_", None), images),
        _attributions_section(getattr(model, "attributions_", None), images),
        _model_section(model, images),
        _data_section(getattr(model, "data_report_", {}) or {}, model.spec),
        "<h2>Config</h2><details><summary>the config as trained, every default written out</summary>"
        f"<pre>{_e(model.spec.to_yaml())}</pre></details>",
    ]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>plait report: {_e(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _metrics_section(model: Any, metrics: dict | None, source: str) -> str:
    if not metrics:
        return ("<h2>Metrics</h2><p class=\"note\">No held-out rows: the model was trained without a "
                "validation split. <code>plait report DIR --data FILE</code> shows the metrics on a "
                "labelled file.</p>")
    parts = [f"<h2>Metrics</h2><p class=\"note\">On the {_e(source)}: {metrics.get('rows', '?')} rows. "
             "The baseline is the trivial model (majority class, or the training mean); lift is how much "
             "better the model is (for errors and log loss, baseline minus model).</p>"]
    for out in model.spec.outputs:
        scores = metrics.get(out.name)
        if not isinstance(scores, dict):
            continue
        parts.append(f"<h3>{_e(out.name)} <span class=\"meta\">({out.type}, {scores.get('rows', '?')} "
                     f"rows, baseline: {_e(scores['baseline']['kind'])})</span></h3>")
        rows = [[NAMES[name], _number(scores[name]), _number(scores["baseline"].get(name)),
                 _lift(scores["lift"].get(name))] for name in NAMES if isinstance(scores.get(name), float)]
        parts.append(_table(["metric", "model", "baseline", "lift"], rows))
        parts += [f'<p class="note">{_e(note)}</p>' for note in out.notes(scores)]
        for headings, cells in out.tables(scores):
            parts.append(_table(headings, [[_cell(value) for value in row] for row in cells]))
    return "\n".join(parts)


def _cell(value: Any) -> Any:
    """A table cell from a value: numbers right-aligned, text escaped."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        return Number(value)
    return _e(value)


def _plots_section(images: dict[str, bytes], metrics: dict | None, source: str) -> str:
    shown = [name for name in images if name not in ("importance.png", "model.png")
             and not name.startswith("attribution_")]
    if not shown:
        return ""
    figures = "\n".join(_figure(images[name], name.removesuffix(".png").replace("_", " ")) for name in shown)
    return f"<h2>Plots</h2><div class=\"plots\">{figures}</div>"


def _importance_section(result: dict | None, images: dict[str, bytes]) -> str:
    if not result:
        return ("<h2>Importance of each input</h2><p class=\"note\">Not measured yet: "
                "<code>plait explain DIR --data FILE</code> measures it on labelled rows and adds it "
                "here.</p>")
    rows = [[_e(name), _e(out), NAMES.get(metric, metric), _spread(permuted), _spread(switched)]
            for name, out, metric, permuted, switched in ranked(result)]
    reference = ", ".join(f"{out} {NAMES.get(m, m)} {_number(result['reference'][out])}"
                          for out, m in result["metrics"].items())
    return (f"<h2>Importance of each input</h2><p class=\"note\">Drop in each output's metric on "
            f"{_e(Path(str(result['data'])).name)} ({result['rows']} rows; intact: {_e(reference)}) when "
            f"the input is permuted across rows ({result['repeats']} seeded shuffles) or switched off "
            f"(its training-set default in every row; spread over {result['repeats']} bootstrap "
            "resamples). Larger means the model relies on it more.</p>"
            + _table(["input", "output", "metric", "permuted: drop ± sd", "switched off: drop ± sd"], rows)
            + _figure(images["importance.png"], "per-input importance") + _gates(result))


def _attributions_section(result: dict | None, images: dict[str, bytes]) -> str:
    if not result:
        return ""
    parts = [f"<h2>What drove single predictions</h2><p class=\"note\">Rows of "
             f"{_e(Path(str(result['data'])).name)}, by {_e(result['method'])} ({result['steps']} steps): "
             "each input's share of the change from the baseline's answer (every input carrying no "
             "information) to the row's; the shares add up to that change, up to the gap. Green pushed "
             "the answer up, red down.</p>"]
    for row in result["rows"]:
        for output, units in row["outputs"].items():
            for number, unit in enumerate(units):
                parts.append(f"<h3>row {_e(row['row'])}: {_e(output)} ({_e(unit['unit'])}) "
                             f"{_number(unit['value'])} <span class=\"meta\">baseline "
                             f"{_number(unit['baseline'])}, gap {unit['gap']:.2g}</span></h3>")
                cells = []
                for name, entry in unit["inputs"].items():
                    key = plots.attribution_plot(row["row"], output, number, name)
                    shown = (_figure(images[key], f"{name}: {entry['kind']}") if key in images
                             else _highlighted(entry.get("units", [])))
                    total = "held" if entry["total"] is None else _number(entry["total"])
                    cells.append([_e(name), total, shown])
                parts.append(_table(["input", "share", "in detail"], cells))
    return "\n".join(parts)


def _highlighted(units: list[list[Any]]) -> str:
    """Words, tags or values, each on a background as strong as its share: green up, red down."""
    limit = max((abs(share) for _, share in units), default=0.0) or 1.0
    spans = []
    for label, share in units:
        alpha = 0.85 * abs(share) / limit
        colour = f"rgba(22, 163, 74, {alpha:.2f})" if share >= 0 else f"rgba(220, 38, 38, {alpha:.2f})"
        spans.append(f'<span class="share" style="background: {colour}" title="{share:+.4g}">'
                     f"{_e(label) or '&empty;'}</span>")
    return " ".join(spans)


def _gates(result: dict) -> str:
    """The mean weight each gated merge node gives each of its branches, when there are any."""
    gates = result.get("gates") or {}
    if not gates:
        return ""
    rows = [[_e(node), _e(branch), _number(float(weight))]
            for node, weights in gates.items() for branch, weight in weights.items()]
    return ("<h3>Gate weights</h3><p class=\"note\">Mean weight each gated merge node gives each "
            f"branch over the same {result['rows']} rows (each node's weights sum to 1).</p>"
            + _table(["merge node", "branch", "mean weight"], rows))


def _model_section(model: Any, images: dict[str, bytes]) -> str:
    description = model.describe()
    rows = [[_e(part), _e(info["kind"]), _e(" → ".join(r["class"] for r in info["layers"])),
             _e(str(tuple(info["layers"][-1]["shape"])).replace("None", "batch")),
             Number(f"{info['params']:,}")] for part, info in description.items()]
    total = sum(info["params"] for info in description.values())
    rows.append(["<b>total</b>", "", "", "", Number(f"<b>{total:,}</b>")])
    caption = "inputs → branches → merge nodes → head → outputs"
    return ("<h2>Model</h2>" + _figure(images["model.png"], caption)
            + _table(["part", "kind", "layers", "output shape", "parameters"], rows))


def _data_section(report: dict, spec: Any) -> str:
    counts = [f"{report[key]:,} {label}" for key, label in (
        ("training_rows", "training rows"), ("used_rows", "used for training"),
        ("validation_rows", "validation rows")) if isinstance(report.get(key), int)]
    inputs = report.get("inputs", {})
    rows = []
    for spec_input in spec.inputs:
        seen = inputs.get(spec_input.name, {})
        rows.append([spec_input.name, spec_input.type, _e(", ".join(spec_input.source_columns())),
                     Number(seen.get("missing", "")), _e(seen.get("policy", spec_input.missing)),
                     Number(seen.get("unseen", ""))])
    targets = inputs.get("targets", {})
    for out in spec.outputs:
        rows.append([out.name, f"target ({out.type})", _e(", ".join(out.source_columns())),
                     Number(targets.get(out.name, {}).get("missing", "")), "left out of its loss", ""])
    return ("<h2>Data</h2><p class=\"note\">" + _e("; ".join(counts) or "no counts recorded") + ". Missing "
            "values follow each input's policy; out-of-vocabulary values (categories or words not seen "
            "in training) go to the unseen slot.</p>"
            + _table(["name", "type", "column(s)", "missing", "policy", "out of vocabulary"], rows))


def _figure(image: bytes, caption: str) -> str:
    encoded = base64.b64encode(image).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(headings: list[str], rows: list[list[Any]]) -> str:
    """Cells are HTML already escaped; a number (or a ``(text, class)`` pair) is right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, tuple):
                cells.append(f'<td class="number {cell[1]}">{cell[0]}</td>')
            elif isinstance(cell, Number):
                cells.append(f'<td class="number">{cell}</td>')
            else:
                cells.append(f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Number(str):
    """Text of a number, shown right-aligned."""


def _lift(value: float | None) -> tuple[str, str] | str:
    """Green when the model is better, red when it is worse."""
    if value is None:
        return ""
    return f"{value:+.4f}", "better" if value > 0 else "worse" if value < 0 else ""


def _spread(summary: dict) -> Number:
    return Number(f"{summary['mean']:.4f} ± {summary['std']:.4f}")


def _number(value: Any) -> Number:
    return Number(f"{value:.4f}" if isinstance(value, float) else "")


def _e(text: Any) -> str:
    return html.escape(str(text))
