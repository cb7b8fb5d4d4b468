"""Integrated-gradients attributions within an input (``plait explain --rows``): on models
trained on planted signals, the word, image region, step or value that decides the answer
gets the largest share; shares add up to the change from the baseline's answer; the CLI
writes them into the bundle and its report draws them."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import fit, png_bytes, train_block
from plait.attribution import Attributor

FILLER = ["the", "a", "product", "was", "is", "it", "this", "very", "quite", "item", "box", "ship", "arrived"]
TAGS = ["red", "blue", "green", "gift"]


def reviews(rows: int, seed: int) -> pd.DataFrame:
    """Eight filler words and one that decides the label ("great": 1, "awful": 0), random tags."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for row in range(rows):
        words = list(rng.choice(FILLER, 8))
        words.insert(int(rng.integers(0, 9)), "great" if row % 2 else "awful")
        texts.append(" ".join(words))
        labels.append(row % 2)
    tags = ["|".join(rng.choice(TAGS, int(rng.integers(1, 3)), replace=False)) for _ in range(rows)]
    return pd.DataFrame({"text": texts, "tags": tags, "noise": rng.normal(size=rows), "label": labels})


TEXT_SPEC = {
    "inputs": [
        {"name": "text", "type": "text", "length": 12, "encoder": {"kind": "gru", "units": 16}},
        {"name": "text_bag", "column": "text", "type": "text", "encoder": {"kind": "bag", "units": 8}},
        {"name": "tags", "type": "set"},
        {"name": "noise", "type": "number"},
    ],
    "outputs": [{"name": "label", "type": "binary"}],
    "train": train_block(epochs=25, batch_size=64, learning_rate=0.01),
}


@pytest.fixture(scope="module")
def text_model() -> Any:
    return fit(TEXT_SPEC, reviews(400, seed=0))


def decisive(text: str) -> str:
    return "great" if "great" in text.split() else "awful"


def test_attribution_network_answers_as_the_model(text_model: Any) -> None:
    x = text_model.encode(reviews(8, seed=1))
    attributor = Attributor(text_model)
    ends, _ = attributor.endpoints(x)
    expected = text_model.raw_outputs(x)["label"]
    np.testing.assert_allclose(attributor.outputs(ends)["label"], expected, atol=1e-5)
    assert set(attributor.scaled) == {"text", "tags"}  # embedded ids; the bag and number move themselves


def test_deciding_word_gets_the_largest_share(text_model: Any) -> None:
    frame = reviews(10, seed=2)
    result = text_model.attribute(frame, rows=list(range(10)))
    assert [row["row"] for row in result["rows"]] == list(range(10))
    for row in result["rows"]:
        text = frame.text[row["row"]]
        (unit,) = row["outputs"]["label"]
        assert unit["unit"] == "1"
        change = unit["value"] - unit["baseline"]
        assert abs(unit["gap"]) <= 0.02 + 0.05 * abs(change), unit
        totals = [entry["total"] for entry in unit["inputs"].values()]
        assert change - sum(totals) == pytest.approx(unit["gap"], abs=1e-9)
        for name in ("text", "text_bag"):
            entry = unit["inputs"][name]
            assert entry["kind"] == "words"
            assert [word for word, _ in entry["units"]] == text.split()
            assert sum(share for _, share in entry["units"]) == pytest.approx(entry["total"], abs=1e-4)
            word, share = max(entry["units"], key=lambda pair: abs(pair[1]))
            assert word == decisive(text), (name, entry["units"])
            assert (share > 0) == (word == "great")
        tags = unit["inputs"]["tags"]
        assert tags["kind"] == "tags"
        assert sorted(label for label, _ in tags["units"]) == sorted(frame.tags[row["row"]].split("|"))
        assert unit["inputs"]["noise"].keys() == {"total"}


def test_cli_writes_attributions_and_the_report_highlights_words(text_model: Any, tmp_path: Path) -> None:
    frame = reviews(20, seed=3)
    frame.to_csv(tmp_path / "new.csv", index=False)
    bundle = text_model.save(tmp_path / "bundle", report=True)
    done = subprocess.run([sys.executable, "-m", "plait", "explain", str(bundle), "--data",
                           str(tmp_path / "new.csv"), "--rows", "4,1"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "row 4, label (1):" in done.stdout and "great +" in done.stdout
    saved = json.loads((bundle / "attributions.json").read_text())
    assert [row["row"] for row in saved["rows"]] == [4, 1]
    assert saved["method"] == "integrated gradients" and saved["steps"] == 64
    page = (bundle / "report.html").read_text()
    assert "What drove single predictions" in page
    for row in (4, 1):
        word = decisive(frame.text[row])
        assert f'">{word}</span>' in page
    from plait.model import load

    assert load(bundle).attributions_ == saved


def test_rows_out_of_range_are_refused_and_nothing_is_written(text_model: Any, tmp_path: Path) -> None:
    reviews(20, seed=3).to_csv(tmp_path / "new.csv", index=False)
    bundle = text_model.save(tmp_path / "bundle")
    before = sorted(path.name for path in bundle.iterdir())
    done = subprocess.run([sys.executable, "-m", "plait", "explain", str(bundle), "--data",
                           str(tmp_path / "new.csv"), "--rows", "0,20"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    assert "new.csv: rows: found 20; the data has 20 rows, numbered 0 to 19" in done.stderr
    assert sorted(path.name for path in bundle.iterdir()) == before


@pytest.mark.parametrize("rows", ["1,x", "-1", ""])
def test_rows_that_are_no_row_numbers_are_a_usage_error(rows: str) -> None:
    from typer import BadParameter

    from plait.cli import row_numbers

    with pytest.raises(BadParameter, match=f"found '{rows}'; expected 0-based row numbers separated"):
        row_numbers(rows)


def signals(rows: int, seed: int) -> pd.DataFrame:
    """A bright square in an image's top-left corner makes ``bright`` true; the sign of a
    spike at step 7 of a series makes ``trend`` up or down; ``amount`` is 3 × the third
    value of a vector."""
    rng = np.random.default_rng(seed)
    images, series = [], []
    bright = rng.integers(0, 2, rows)
    spike = rng.choice([-3.0, 3.0], rows)
    for row in range(rows):
        pixels = rng.uniform(0, 60, (12, 12))
        if bright[row]:
            pixels[1:4, 1:4] = 255
        images.append(png_bytes(pixels))
        steps = rng.normal(0, 0.3, 20)
        steps[7] += spike[row]
        series.append(steps.tolist())
    values = rng.normal(size=(rows, 5))
    return pd.DataFrame({"photo": images, "series": series, "values": list(values),
                         "bright": bright, "trend": np.where(spike > 0, "up", "down"),
                         "amount": 3 * values[:, 2] + 10})


SIGNAL_SPEC = {
    "inputs": [
        {"name": "photo", "type": "image", "size": [12, 12], "channels": 1,
         "encoder": {"filters": [8], "pool": None, "pooling": "max"}},
        {"name": "series", "type": "sequence", "encoder": {"kind": "cnn", "filters": 8, "kernel_size": 3}},
        {"name": "values", "type": "vector", "size": 5},
    ],
    "merge": [],
    "outputs": [{"name": "bright", "type": "binary", "from": "photo"},
                {"name": "trend", "type": "category", "from": "series"},
                {"name": "amount", "type": "number", "from": "values"}],
    "train": train_block(epochs=40, batch_size=64, learning_rate=0.01),
}


@pytest.fixture(scope="module")
def signal_model() -> Any:
    return fit(SIGNAL_SPEC, signals(300, seed=0))


def test_region_step_and_value_that_decide_get_the_largest_share(signal_model: Any) -> None:
    frame = signals(8, seed=1)
    result = signal_model.attribute(frame, rows=list(range(8)))
    for row in result["rows"]:
        r = row["row"]
        (bright,) = row["outputs"]["bright"]
        grid = np.asarray(bright["inputs"]["photo"]["grid"])
        assert grid.shape == (8, 8)
        if frame.bright[r]:
            top, left = np.unravel_index(np.argmax(np.abs(grid)), grid.shape)
            assert top < 4 and left < 4, grid.round(3)
        (trend,) = row["outputs"]["trend"]
        assert trend["unit"] == frame.trend[r]
        steps = trend["inputs"]["series"]["units"]
        assert len(steps) == 20
        assert max(steps, key=lambda pair: abs(pair[1]))[0] == "7"
        (amount,) = row["outputs"]["amount"]
        values = amount["inputs"]["values"]["units"]
        assert max(values, key=lambda pair: abs(pair[1]))[0] == "[2]"
        # in the target's own units: the shares add up to the prediction's change
        change = amount["value"] - amount["baseline"]
        assert change == pytest.approx(amount["inputs"]["values"]["total"], abs=1e-3)
        assert set(amount["inputs"]) == {"photo", "series", "values"}


def test_report_draws_heat_maps_and_step_bars(signal_model: Any) -> None:
    from PIL import Image

    signal_model.attribute(signals(3, seed=2), rows=[0, 2])
    files = signal_model.report_files()
    maps = [name for name in files if name.startswith("plots/attribution_") and name.endswith("_photo.png")]
    bars = [name for name in files if name.startswith("plots/attribution_") and name.endswith("_series.png")]
    assert len(maps) == 2 and len(bars) == 2
    for name in maps + bars:
        assert Image.open(io.BytesIO(files[name])).size[0] == 600
    page = files["report.html"].decode()
    assert page.count('alt="photo: regions"') == 2 and page.count('alt="series: steps"') == 2
    picture = result_picture(signal_model.attributions_)
    assert Image.open(io.BytesIO(base64.b64decode(picture))).size == (12, 12)


def result_picture(result: dict) -> str:
    return result["rows"][0]["outputs"]["bright"][0]["inputs"]["photo"]["picture"]
