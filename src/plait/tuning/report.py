"""``report.html`` of a study: one self-contained page (its images inline) with the
optimization history, the parameters' importances, parallel coordinates of the trials, the
trials' table and the best config.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from typing import Any

import yaml

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2933}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}img{max-width:100%;display:block}
table{border-collapse:collapse;font-size:.85rem}td,th{border-bottom:1px solid #d9e2ec;padding:.25rem .6rem;
text-align:left}pre{background:#f5f7fa;padding:1rem;overflow-x:auto}.note{color:#52606d}"""
BLUE, GREY, RED = "#2563eb", "#9aa5b1", "#dc2626"


def report_html(study: Any, objective: Any, best_config: dict) -> str:
    """The page, as text."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    states = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in states.items())
    best = study.best_trial
    sections = [
        f"<h1>plait tune: study {html.escape(study.study_name)}</h1>",
        f"<p>{len(trials)} trials ({summary}); {objective.direction} validation "
        f"{html.escape(str(objective))}. Best: trial {best.number}, {best.value:.4f}.</p>",
        "<h2>Optimization history</h2>", _image(history_figure(trials, objective, study.direction.name)),
        "<h2>Parameter importances</h2>", importance_section(study, complete),
        "<h2>Parallel coordinates</h2>", parallel_section(complete, objective),
        "<h2>Trials</h2>", trials_table(trials),
        "<h2>Best config</h2>", f"<pre>{html.escape(yaml.safe_dump(best_config, sort_keys=False))}</pre>",
    ]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>plait tune: "
            f"{html.escape(study.study_name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>")


def _figure(width: float = 9, height: float = 4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(width, height), dpi=100)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _image(figure: Any) -> str:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='' src='data:image/png;base64,{data}'>"


def history_figure(trials: list, objective: Any, direction: str) -> Any:
    """Each finished trial's value by number (pruned ones at their last reported epoch),
    and the best value so far."""
    figure, axes = _figure()
    pick = max if direction == "MAXIMIZE" else min
    best, steps = None, []
    for trial in trials:
        if trial.state.name == "COMPLETE":
            best = trial.value if best is None else pick(best, trial.value)
            steps.append((trial.number, best))
    done = [(t.number, t.value) for t in trials if t.state.name == "COMPLETE"]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in trials if t.state.name == "PRUNED" and t.intermediate_values]
    if done:
        axes.scatter(*zip(*done, strict=True), color=BLUE, label="completed", zorder=3)
    if pruned:
        axes.scatter(*zip(*pruned, strict=True), color=GREY, marker="x", label="pruned (last epoch)")
    if steps:
        axes.step(*zip(*steps, strict=True), where="post", color=RED, label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {objective}")
    axes.legend(frameon=False)
    return figure


def importance_section(study: Any, complete: list) -> str:
    import optuna

    if len(complete) < 2:
        return "<p class='note'>Importances need at least two completed trials.</p>"
    try:
        with warnings.catch_warnings():
            # PED-ANOVA warns when too few trials separate good from bad; the bars then say so.
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:
        return f"<p class='note'>No importances: {html.escape(str(error))}</p>"
    if not importances:
        return "<p class='note'>No parameter varied across the completed trials.</p>"
    figure, axes = _figure(9, 0.5 + 0.45 * len(importances))
    names = list(importances)[::-1]
    axes.barh(names, [importances[name] for name in names], color=BLUE)
    axes.set_xlabel("importance (Optuna's PED-ANOVA: how much the best trials' values differ from all)")
    return _image(figure)


def parallel_section(complete: list, objective: Any) -> str:
    """One line per completed trial through one axis per parameter, coloured by its value;
    choices sit at their positions, numbers scaled from their lowest to highest value."""
    names = sorted({name for trial in complete for name in trial.params})
    if not complete or not names:
        return "<p class='note'>No completed trial with parameters yet.</p>"
    from matplotlib import cm, colors

    axes_values = [_axis([t.params.get(name) for t in complete]) for name in names]
    values = [t.value for t in complete]
    scale = colors.Normalize(min(values), max(values) if max(values) > min(values) else min(values) + 1)
    figure, axes = _figure(max(6, 1.6 * len(names) + 2), 4.5)
    for row, trial in enumerate(complete):
        axes.plot(range(len(names)), [column[0][row] for column in axes_values],
                  color=cm.viridis(scale(trial.value)), alpha=0.8)
    for position, (_, labels) in enumerate(axes_values):
        axes.axvline(position, color=GREY, linewidth=0.8)
        for height, label in labels:
            axes.annotate(label, (position, height), fontsize=7, xytext=(3, 0), textcoords="offset points")
    axes.set_xticks(range(len(names)), [name.replace(".", ".\n") for name in names], fontsize=7)
    axes.set_yticks([])
    figure.colorbar(cm.ScalarMappable(norm=scale, cmap="viridis"), ax=axes, label=f"validation {objective}")
    return _image(figure)


def _axis(values: list) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in 0..1 for one parameter's values, and labelled ticks."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        low, high = min(numbers), max(numbers)
        span = (high - low) or 1.0
        return [(v - low) / span for v in numbers], [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]
    distinct = list(dict.fromkeys(json.dumps(v) for v in values))
    place = {text: index / max(len(distinct) - 1, 1) for index, text in enumerate(distinct)}
    return [place[json.dumps(v)] for v in values], [(place[text], text.strip('"')) for text in distinct]


def trials_table(trials: list) -> str:
    names = list(dict.fromkeys(name for trial in trials for name in trial.params))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", "value", *names])
    rows = []
    for trial in trials:
        value = f"{trial.value:.4f}" if trial.value is not None else ""
        cells = [str(trial.number), trial.state.name.lower(), value]
        cells += [str(trial.params.get(name, "")) for name in names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
