"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot
state); matplotlib is imported only here, when a plot is drawn.

Every function reads what a bundle stores: the training history, an output's metrics and
their ``curves``, ``importance.json``, and the spec with the model's description.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

INK, MODEL, BASELINE, VALIDATION = "#1f2933", "#2563eb", "#9ca3af", "#ea580c"
KIND_COLOURS = {"input": "#dbeafe", "branch": "#e0f2fe", "merge": "#fef3c7", "head": "#ede9fe",
                "output": "#dcfce7"}


def _figure(width: float, height: float, left: float = 0.7, bottom: float = 0.6, right: float = 0.2,
            top: float = 0.4, gap: float = 0.7) -> Any:
    """A figure whose margins (in inches) are fixed: cheaper to draw than a layout engine."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                           top=1 - top / height, wspace=gap)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def training_curves(history: dict, outputs: list[str]) -> dict[str, bytes]:
    """``loss.png`` (total loss) and ``<output>_training.png`` (that output's loss and metrics),
    training and validation per epoch; an ensemble's history (``{"members": [...]}``) draws a
    pair of lines per member."""
    histories = history.get("members") or [history]
    plots = {}
    groups: dict[str, list[str]] = {"loss": ["loss"]}
    for key in dict.fromkeys(key for member in histories for key in member):
        name = key.removeprefix("val_")
        owner = max((o for o in outputs if name.startswith(o + "_")), key=len, default=None)
        if owner is not None:
            groups.setdefault(owner, [])
            metric = name[len(owner) + 1:]
            if metric not in groups[owner]:
                groups[owner].append(metric)
    for owner, metrics in groups.items():
        metrics.sort(key=lambda metric: metric != "loss")
        keys = metrics if owner == "loss" else [f"{owner}_{m}" for m in metrics]
        keys = [k for k in keys if any(k in member or f"val_{k}" in member for member in histories)]
        if not keys:
            continue
        figure = _figure(3.2 * len(keys), 2.8)
        for position, key in enumerate(keys, start=1):
            axes = figure.add_subplot(1, len(keys), position)
            for number, member in enumerate(histories):
                for prefix, colour, label in (("", MODEL, "training"), ("val_", VALIDATION, "validation")):
                    values = member.get(prefix + key)
                    if values:
                        axes.plot(range(1, len(values) + 1), values, color=colour, marker=".",
                                  alpha=1.0 if len(histories) == 1 else 0.75,
                                  label=label if number == 0 else None)
            axes.set_title(key if len(histories) == 1 else f"{key} ({len(histories)} members)", fontsize=10)
            axes.set_xlabel("epoch")
            axes.legend(fontsize=8)
        plots["loss.png" if owner == "loss" else f"{owner}_training.png"] = _png(figure)
    return plots


def confusion(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """Counts with the true class in rows and the predicted class in columns.

    >>> confusion([[40, 2], [5, 30]], ["no", "yes"], "churn")[:4]
    b'\\x89PNG'
    """
    counts = np.asarray(matrix)
    size = max(3.0, 0.55 * len(labels) + 2)
    longest = max((len(str(label)[:14]) for label in labels), default=1)
    figure = _figure(size + 0.8 + 0.07 * longest, size + 0.07 * longest, left=0.5 + 0.07 * longest,
                     bottom=0.5 + 0.07 * longest, right=0.1)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(labels)), [str(label)[:14] for label in labels], rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), [str(label)[:14] for label in labels])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    if len(labels) <= 20:
        high = counts.max() if counts.size else 0
        for (row, column), count in np.ndenumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > high / 2 else INK)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return _png(figure)


def roc(curves: dict, auc: float, title: str) -> bytes:
    figure = _figure(3.6, 3.4)
    axes = figure.add_subplot()
    axes.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], color=MODEL, label=f"model (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color=BASELINE, linestyle="--", label="chance (AUC 0.5)")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def precision_recall(curves: dict, average_precision: float, title: str) -> bytes:
    figure = _figure(3.6, 3.4)
    axes = figure.add_subplot()
    pr = curves["pr"]
    axes.step(pr["recall"], pr["precision"], where="post", color=MODEL,
              label=f"model (AP {average_precision:.3f})")
    axes.axhline(pr["positive_rate"], color=BASELINE, linestyle="--",
                 label=f"baseline ({pr['positive_rate']:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="lower left")
    return _png(figure)


def calibration(curves: dict, title: str,
                axis: tuple[str, str] = ("mean predicted probability", "observed positive rate")) -> bytes:
    """The observed outcome rate against the mean predicted probability, per probability bin;
    with ``calibration_before`` among the curves, the model's own probabilities too, before
    the temperature was applied.

    >>> bins = {"predicted": [0.2, 0.9], "observed": [0.3, 0.7], "rows": [5, 5]}
    >>> calibration({"calibration": bins, "calibration_before": bins}, "churn")[:4]
    b'\\x89PNG'
    """
    figure = _figure(3.6, 3.4)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color=BASELINE, linestyle="--", label="perfectly calibrated")
    before = curves.get("calibration_before")
    if before:
        axes.plot(before["predicted"], before["observed"], color=VALIDATION, marker="s",
                  label="before calibration")
    bins = curves["calibration"]
    axes.plot(bins["predicted"], bins["observed"], color=MODEL, marker="o",
              label="after calibration" if before else "model")
    axes.set(xlabel=axis[0], ylabel=axis[1], xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    return _png(figure)


def residuals(curves: dict, title: str) -> bytes:
    """Prediction minus truth against the truth, in the target's units."""
    figure = _figure(4.2, 3.4)
    axes = figure.add_subplot()
    truth = np.asarray(curves["residuals"]["truth"])
    error = np.asarray(curves["residuals"]["predicted"]) - truth
    axes.scatter(truth, error, s=8, alpha=0.6, color=MODEL)
    axes.axhline(0, color=BASELINE, linestyle="--")
    axes.set(xlabel="truth", ylabel="prediction − truth")
    axes.set_title(title, fontsize=10)
    return _png(figure)


def importance_bars(result: dict) -> bytes:
    """Per output, each input's mean drop (with its standard deviation) when permuted and
    when switched off; the most important inputs on top."""
    from plait.metrics import ranked

    outputs = list(result["metrics"])
    inputs = list(dict.fromkeys(row[0] for row in ranked(result)))
    margin = 0.3 + 0.075 * max((len(name) for name in inputs), default=1)
    figure = _figure((3.4 + margin) * len(outputs), max(2.6, 0.45 * len(inputs) + 1.4), left=margin,
                     gap=margin / 3.4 + 0.1)
    rows = np.arange(len(inputs))
    for position, out in enumerate(outputs, start=1):
        axes = figure.add_subplot(1, len(outputs), position)
        for offset, (way, colour) in enumerate((("permutation", MODEL), ("switch_off", VALIDATION))):
            means = [result["inputs"][name][out][way]["mean"] for name in inputs]
            spreads = [result["inputs"][name][out][way]["std"] for name in inputs]
            axes.barh(rows + (offset - 0.5) * 0.38, means, height=0.38, xerr=spreads, color=colour,
                      label=way.replace("_", " "), error_kw={"elinewidth": 1, "capsize": 2})
        axes.set_yticks(rows, inputs)
        axes.invert_yaxis()
        axes.axvline(0, color=INK, linewidth=0.8)
        axes.set_xlabel(f"drop in {result['metrics'][out]}")
        axes.set_title(out, fontsize=10)
        axes.legend(fontsize=8, loc="best")
    return _png(figure)


def region_heat_map(picture: str, grid: list[list[float]], title: str) -> bytes:
    """The image as the model saw it (base64 PNG), beside it the attribution of each region
    drawn over it: green pushed the answer up, red down, the strongest region opaque."""
    import base64

    from matplotlib.image import imread

    from plait.features.image import region_edges

    pixels = imread(io.BytesIO(base64.b64decode(picture)), format="png")
    shares = np.asarray(grid, np.float64)
    limit = float(np.abs(shares).max()) or 1.0
    figure = _figure(6.0, 3.2, left=0.2, right=0.9, bottom=0.2, top=0.45, gap=0.15)
    height, width = pixels.shape[:2]
    for position, overlay in ((1, False), (2, True)):
        axes = figure.add_subplot(1, 2, position)
        axes.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, extent=(0, width, height, 0))
        if overlay:
            shown = axes.pcolormesh(region_edges(width), region_edges(height), shares, cmap="RdYlGn",
                                    vmin=-limit, vmax=limit, alpha=0.6)
            figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def step_bars(units: list[list[Any]], title: str) -> bytes:
    """The attribution of each step of a sequence: green up, red down."""
    shares = np.asarray([share for _, share in units], np.float64)
    figure = _figure(6.0, 2.4)
    axes = figure.add_subplot(1, 1, 1)
    axes.bar(np.arange(shares.size), shares, width=1.0,
             color=np.where(shares >= 0, "#16a34a", "#dc2626"))
    axes.axhline(0, color=INK, linewidth=0.8)
    axes.set_xlabel("step")
    axes.set_ylabel("share")
    axes.set_title(title, fontsize=10)
    return _png(figure)


def attribution_plot(row: Any, output: str, number: int, name: str) -> str:
    """The file name of input ``name``'s plot for the ``number``-th explained unit of
    ``output`` in row ``row``, as ``attribution_plots`` names it."""
    return f"attribution_{row}_{output}_{number}_{name}.png"


def attribution_plots(result: dict) -> dict[str, bytes]:
    """For ``attributions.json``: a heat map per image and bars per sequence, per explained
    row and unit, named ``attribution_<row>_<output>_<unit number>_<input>.png``."""
    images = {}
    for row in result["rows"]:
        for output, units in row["outputs"].items():
            for number, unit in enumerate(units):
                for name, entry in unit["inputs"].items():
                    if not any(share for _, share in entry.get("units", [])):
                        continue  # an input that does not reach this output: nothing to draw
                    key = attribution_plot(row["row"], output, number, name)
                    title = f"row {row['row']}, {output} ({unit['unit']}): {name}"
                    if entry.get("kind") == "regions":
                        images[key] = region_heat_map(entry["picture"], entry["grid"], title)
                    elif entry.get("kind") == "steps":
                        images[key] = step_bars(entry["units"], title)
    return images


def diagram(spec: Any, description: dict[str, dict] | None = None) -> bytes:
    """Boxes and arrows: inputs → branches → merge nodes → head → outputs.

    >>> from plait.spec import load_spec
    >>> spec = load_spec({"inputs": [{"name": "age", "type": "number"}, {"name": "city", "type": "category"}],
    ...                   "outputs": [{"name": "bought", "type": "binary"}]})
    >>> len(diagram(spec)) > 1000
    True
    """
    import matplotlib.patches as patches

    nodes, edges = _graph(spec, description or {})
    columns: dict[int, list[str]] = {}
    for key, node in nodes.items():
        columns.setdefault(node["column"], []).append(key)
    height = max(len(keys) for keys in columns.values())
    places: dict[str, tuple[float, float]] = {}
    for column in sorted(columns):
        keys = columns[column]
        if column > 0:  # line each node up with the nodes that feed it
            keys.sort(key=lambda k: -np.mean([places[s][1] for s, t in edges if t == k] or [0.0]))
        for index, key in enumerate(keys):
            places[key] = (column, (len(keys) - 1) / 2 - index)  # centred on 0
    figure = _figure(2.1 * len(columns) + 0.4, 0.95 * height + 0.9, left=0.1, right=0.1, top=0.1,
                     bottom=0.1)
    axes = figure.add_subplot()
    axes.set_xlim(-0.55, len(columns) - 0.45)
    axes.set_ylim(-height / 2 - 0.1, height / 2 + 0.1)
    axes.axis("off")
    half_width, half_height = 0.42, 0.36
    for source, target in edges:
        (x0, y0), (x1, y1) = places[source], places[target]
        axes.annotate("", xy=(x1 - half_width, y1), xytext=(x0 + half_width, y0),
                      arrowprops={"arrowstyle": "->", "color": INK, "linewidth": 0.9})
    for key, node in nodes.items():
        x, y = places[key]
        axes.add_patch(patches.FancyBboxPatch(
            (x - half_width, y - half_height), 2 * half_width, 2 * half_height,
            boxstyle="round,pad=0.02", facecolor=KIND_COLOURS[node["kind"]], edgecolor=INK, linewidth=0.8))
        axes.text(x, y, node["label"], ha="center", va="center", fontsize=7.5, color=INK)
    return _png(figure)


def _graph(spec: Any, description: dict[str, dict]) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Nodes (kind, column, label) and edges of the model diagram."""

    def shape(name: str) -> str:
        layers = description.get(name, {}).get("layers")
        return str(tuple(layers[-1]["shape"][1:])) if layers else ""

    def chain(name: str) -> str:
        rows = description.get(name, {}).get("layers", [])
        classes = [row["class"] for row in rows if row["class"] != "InputLayer"]
        text = " → ".join(dict.fromkeys(classes)) if classes else "as is"
        return text if len(text) <= 24 else text[:23] + "…"

    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str]] = []
    for spec_input in spec.inputs:
        nodes[f"in:{spec_input.name}"] = {"kind": "input", "column": 0,
                                          "label": f"{_short(spec_input.name)}\n{spec_input.type}"}
        nodes[f"branch:{spec_input.name}"] = {"kind": "branch", "column": 1,
                                              "label": f"{chain(spec_input.name)}\n{shape(spec_input.name)}"}
        edges.append((f"in:{spec_input.name}", f"branch:{spec_input.name}"))
    where = {s.name: f"branch:{s.name}" for s in spec.inputs}
    column_of = {f"branch:{s.name}": 1 for s in spec.inputs}
    for node in spec.merge_nodes:
        sources = [where[name] for name in spec.node_sources(node)]
        key = f"merge:{node.name}"
        column_of[key] = 1 + max(column_of[s] for s in sources)
        nodes[key] = {"kind": "merge", "column": column_of[key],
                      "label": f"{_short(node.name)}\n{node.strategy} {shape(node.name)}"}
        edges += [(source, key) for source in sources]
        where[node.name] = key
    last = max(column_of.values())
    trunk_readers = [out for out in spec.outputs if out.reads is None]
    if trunk_readers:
        main = where[spec.main_node.name]
        last = column_of[main] + 1
        units = " → ".join(str(u) for u in spec.head.layers) or "none"
        nodes["head"] = {"kind": "head", "column": last, "label": f"head\ndense {units}"}
        edges.append((main, "head"))
    averaged = f"\nmean of {spec.train.ensemble} networks" if spec.train.ensemble > 1 else ""
    for out in spec.outputs:
        key = f"out:{out.name}"
        nodes[key] = {"kind": "output", "column": last + 1,
                      "label": f"{_short(out.name)}\n{out.type}{averaged}"}
        edges.append(("head" if out.reads is None else where[out.reads], key))
    return nodes, edges


def _short(name: str) -> str:
    return name if len(name) <= 18 else name[:17] + "…"
