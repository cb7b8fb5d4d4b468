"""``plait code``: the generated scripts are plain Keras and build plait's own models.

Every seed example's script is run in a fresh Python process that never imports plait
(one process for all thirteen, to pay for importing Keras once), and the model it builds
is compared with plait's: parameters, layers in order with their output shapes, inputs,
outputs, and what ``compile`` was given. A trained bundle's script loads the trained
weights and predicts the same numbers as plait's Keras model. The CLI runs as a real
subprocess, user mistakes included.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import fit, train_block
from plait.codegen import generate, generate_for
from plait.graph import compile_model, layer_groups
from plait.spec import load_spec
from test_seeds import SEEDS, plait_model

EXAMPLES = sorted(path.stem for path in SEEDS.glob("*.yaml"))
PLAIT = [sys.executable, "-m", "plait"]
# The subprocesses compile many small XLA programs once each (weight initialisers, one per
# shape); unoptimised compilation halves their cost and changes no shape or count.
SUBPROCESS_ENVIRONMENT = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_backend_optimization_level=0")
LOSSES = {"binary": "binary_crossentropy", "category": "sparse_categorical_crossentropy"}
METRICS = {"binary": ["accuracy", "auc"], "category": ["accuracy"], "number": ["mae"]}

# a small model of several input kinds, trained for the bundle test
BUNDLE_SPEC = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
        {"name": "sex", "type": "category", "encoding": "onehot"},
        {"name": "note", "type": "text", "length": 4, "embedding_dim": 4, "encoder": {"kind": "mean"},
         "layers": [4]},
    ],
    "merge": {"strategy": "concat"},
    "head": {"layers": [8]},
    "outputs": [
        {"name": "species", "type": "category"},
        {"name": "body_mass_g", "type": "number", "loss": "huber", "weight": 0.5},
    ],
    "train": train_block(epochs=5),
}


def summary(model: Any) -> dict:
    """What two models must share to be the same network, compiled the same way (JSON)."""
    import numpy as np

    def shape(tensor: Any) -> list:
        return list(tensor.shape)

    compiled = model.get_compile_config()
    return {
        "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "total": int(model.count_params()),
        "layers": [[type(layer).__name__, layer.name, shape(layer.output)] for layer in model.layers],
        "inputs": [[t.name, shape(t), str(t.dtype)] for t in model.inputs],
        "outputs": {name: shape(t) for name, t in zip(model.output_names, model.outputs, strict=True)},
        "loss": compiled["loss"],
        "loss_weights": compiled["loss_weights"],
        "metrics": {name: [[m["class_name"], m["config"]["name"]] for m in metrics]
                    for name, metrics in compiled["metrics"].items()},
        "optimizer": [compiled["optimizer"]["class_name"],
                      round(float(compiled["optimizer"]["config"]["learning_rate"]), 9)],
    }


RUNNER = textwrap.dedent('''
    from __future__ import annotations

    import json, runpy, sys
    import numpy as np

    {summary}

    jobs = json.loads(sys.argv[1])
    results = {{}}
    for job in jobs:
        model = runpy.run_path(job["script"], run_name="generated_script")["model"]
        results[job["script"]] = summary(model)
        if job.get("inputs"):
            with np.load(job["inputs"]) as arrays:
                predicted = model.predict(dict(arrays), verbose=0)
            np.savez(job["predictions"], **predicted)
    results["plait modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "plait")
    print(json.dumps(results))
''').format(summary=inspect.getsource(summary))


def run_scripts(jobs: list[dict], cwd: Path) -> dict:
    """Run generated scripts in one new Python process; each script's model summary."""
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], cwd=cwd,
                          env=SUBPROCESS_ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def plait_cli(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PLAIT, *map(str, arguments)], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=SUBPROCESS_ENVIRONMENT)


# -- the thirteen seed examples' scripts ------------------------------------------------


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {example: generate(load_spec(SEEDS / f"{example}.yaml"), source=f"examples/seeds/{example}.yaml",
                              model=plait_model(example))
            for example in EXAMPLES}


# -- a trained bundle, and every script run ---------------------------------------------


@pytest.fixture(scope="module")
def trained(penguins: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A small trained model, its bundle, its training rows, and a folder to run scripts in."""
    frame = penguins.assign(note=penguins["island"] + " island, " + penguins["sex"].fillna("unknown"))
    model = fit(BUNDLE_SPEC, frame)
    bundle = model.save(tmp_path_factory.mktemp("bundle") / "penguins")
    return model, bundle, frame, tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def bundle_script(trained: tuple) -> str:
    """``plait code BUNDLE``'s output, also saved in the run folder with the encoded rows."""
    from plait.data import read_table
    from plait.preprocess import encode_inputs

    model, bundle, frame, folder = trained
    done = plait_cli("code", bundle)
    assert done.returncode == 0, done.stderr
    (folder / "penguins_model.py").write_text(done.stdout, encoding="utf-8")
    np.savez(folder / "inputs.npz", **encode_inputs(model.spec, model.states_, read_table(frame)).inputs)
    return done.stdout


@pytest.fixture(scope="module")
def executed(scripts: dict[str, str], trained: tuple, bundle_script: str) -> dict:
    """Every script run in one new Python process (Keras is imported once): the thirteen
    seed examples' and the bundle's, which also predicts the encoded rows."""
    folder = trained[-1]
    for example, text in scripts.items():
        (folder / f"{example}.py").write_text(text, encoding="utf-8")
    jobs = [{"script": f"{example}.py"} for example in scripts]
    jobs.append({"script": "penguins_model.py", "inputs": "inputs.npz", "predictions": "predictions.npz"})
    return run_scripts(jobs, folder)


# -- the scripts ------------------------------------------------------------------------


def test_scripts_never_import_plait(executed: dict, scripts: dict[str, str]) -> None:
    assert executed["plait modules"] == []
    for example, text in scripts.items():
        imported = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
        assert imported == {"os", "keras"}, example


@pytest.mark.parametrize("example", EXAMPLES)
def test_script_builds_plaits_model(example: str, executed: dict, scripts: dict[str, str]) -> None:
    spec = load_spec(SEEDS / f"{example}.yaml")
    expected = summary(compile_model(plait_model(example), spec))
    built = executed[f"{example}.py"]
    assert built["trainable"] == expected["trainable"]
    assert built["total"] == expected["total"]
    assert [kind for kind, _, _ in built["layers"]] == [kind for kind, _, _ in expected["layers"]]
    assert built == expected
    text = scripts[example]
    assert text.count("keras.Input(") == len(expected["inputs"])
    assert "model = keras.Model(\n    inputs={" in text and "\n    outputs={" in text
    groups = layer_groups(spec, plait_model(example))
    for s in spec.inputs:
        has_layers = any(type(layer).__name__ != "InputLayer" for layer in groups.get(s.name, []))
        assert (f"# Branch of input {s.name!r} ({s.type})." in text) == has_layers
    # what compile was given, read back from the script's model
    for out in spec.outputs:
        loss = LOSSES.get(out.type, "mean_squared_error")
        assert built["loss"][out.name] == loss
        assert [name for _, name in built["metrics"][out.name]] == METRICS[out.type]
        assert built["loss_weights"][out.name] == out.weight
    assert built["optimizer"] == ["Adam", 0.001]


def test_scripts_are_tidy(scripts: dict[str, str]) -> None:
    for example, text in scripts.items():
        assert max(len(line) for line in text.splitlines()) <= 99, example
        compile(text, example, "exec")
        assert "examples/seeds/" + example in text.splitlines()[0]


def test_bundle_script_loads_the_trained_weights(trained: tuple, bundle_script: str, executed: dict) -> None:
    model, bundle, frame, folder = trained
    assert f'WEIGHTS = "{(bundle / "model.keras").resolve()}"' in bundle_script
    assert "model.load_weights(WEIGHTS)" in bundle_script
    # the fitted sizes and encodings, in the comments a user reads
    assert "in ['Biscoe', 'Dream', 'Torgersen'] (0: unseen or missing)" in bundle_script
    assert "probabilities of 'Adelie', 'Chinstrap', 'Gentoo', in this order" in bundle_script
    state = model.states_["body_mass_g"]
    assert f"prediction * {state.divide:.6g} + {state.shift:.6g}" in bundle_script

    assert executed["penguins_model.py"] == summary(model.keras_model)
    with np.load(folder / "inputs.npz") as arrays:
        expected = model.keras_model.predict(dict(arrays), verbose=0)
    with np.load(folder / "predictions.npz") as predicted:
        assert sorted(predicted.files) == ["body_mass_g", "species"]
        for name, width in (("species", 3), ("body_mass_g", 1)):
            assert predicted[name].shape == expected[name].shape == (len(frame), width)
            np.testing.assert_allclose(predicted[name], expected[name], rtol=1e-5, atol=1e-6)
        # decoded as the script's comment says, its numbers are plait's predictions in grams
        grams = predicted["body_mass_g"].ravel() * state.divide + state.shift
    np.testing.assert_allclose(grams, model.predict(frame)["body_mass_g"], rtol=1e-4)
    assert grams.std() > 0


# -- the CLI ----------------------------------------------------------------------------


def test_cli_writes_the_script_for_a_config(tmp_path: Path) -> None:
    config = SEEDS / "000-2.yaml"
    out = tmp_path / "scripts" / "model.py"
    out.parent.mkdir()
    done = plait_cli("code", config, "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"Keras script written to {out}" in done.stderr
    assert out.read_text(encoding="utf-8") == generate_for(config)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.py"]


@pytest.mark.parametrize("mistake", ["missing file", "invalid config", "not a bundle"])
def test_cli_mistakes_exit_2_and_write_nothing(mistake: str, tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    if mistake == "invalid config":
        config = (SEEDS / "001-1.yaml").read_text(encoding="utf-8").replace("units: 32", "units: -3")
        target.write_text(config, encoding="utf-8")
    elif mistake == "not a bundle":
        target = tmp_path / "folder"
        target.mkdir()
    out = tmp_path / "model.py"
    done = plait_cli("code", target, "--out", out)
    assert done.returncode == 2
    assert done.stderr.startswith(f"plait: error: {target}")
    assert "Traceback" not in done.stderr
    expected = {"missing file": "no such config file or bundle directory",
                "invalid config": "inputs[1].encoder.units: found -3; expected",
                "not a bundle": "not a plait bundle"}[mistake]
    assert expected in done.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"missing file": [], "invalid config": ["config.yaml"], "not a bundle": ["folder"]}[mistake])



def test_readme_shows_the_script_plait_code_prints() -> None:
    readme = (SEEDS.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From the seeds"):]
    shown = fenced(section, "python")
    script = generate(load_spec(SEEDS / "001-1.yaml"), source="the config examples/seeds/001-1.yaml",
                      model=plait_model("001-1"))
    assert shown + "\n" == script
    config = fenced(section, "yaml")
    assert load_spec(yaml.safe_load(config)) == load_spec(SEEDS / "001-1.yaml")


def fenced(text: str, language: str) -> str:
    """The first fenced code block in ``language``."""
    start = text.index(f"```{language}\n") + len(f"```{language}\n")
    return text[start:text.index("\n```\n", start)]
