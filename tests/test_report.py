"""report.html: written with the bundle and by ``plait report``, self-contained, and rendered
for real in headless Chromium (every image loads, the page is not blank)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plait
from conftest import fit, train_block
from plait.bundle import verify

SPEC = {
    "inputs": [
        {"name": "bill_length_mm", "type": "number"},
        {"name": "bill_depth_mm", "type": "number"},
        {"name": "flipper_length_mm", "type": "number"},
        {"name": "island", "type": "category", "embedding_dim": 2},
    ],
    "merge": [{"name": "bill", "strategy": "concat", "inputs": ["bill_length_mm", "bill_depth_mm"]},
              {"name": "body", "strategy": "concat", "inputs": ["bill", "flipper_length_mm", "island"]}],
    "head": {"layers": [16]},
    "outputs": [
        {"name": "species", "type": "category"},
        {"name": "sex", "type": "binary"},
        {"name": "body_mass_g", "type": "number", "loss": "huber", "weight": 0.5},
    ],
    "train": train_block(epochs=80, learning_rate=0.03, validation_split=0.25),
}
METRIC_NAMES = ["ROC-AUC", "PR-AUC", "F1", "macro F1", "weighted F1", "MAE", "RMSE", "R²", "log loss"]


@pytest.fixture(scope="module")
def reported(penguin_split: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, pd.DataFrame]:
    """A bundle of a model with every output type, its importance measured, saved with the report."""
    train, test = penguin_split
    model = fit(SPEC, train)
    model.explain(test, repeats=2)
    return model.save(tmp_path_factory.mktemp("report") / "penguins", report=True), test


def test_save_writes_the_report_and_its_plots_into_the_manifest(reported: tuple[Path, pd.DataFrame]) -> None:
    bundle, _ = reported
    manifest = verify(bundle)
    plots = sorted(name for name in manifest["files"] if name.startswith("plots/"))
    expected = {"loss", "species_training", "species_confusion", "sex_confusion", "sex_roc", "sex_pr",
                "sex_calibration", "body_mass_g_residuals", "importance", "model"}
    assert {Path(name).stem for name in plots} >= expected
    for name in plots + ["report.html", "importance.json"]:
        assert (bundle / name).stat().st_size > 1000, name
    assert (bundle / "plots" / "model.png").read_bytes().startswith(b"\x89PNG")
    assert plait.load(bundle).importance_["rows"] == 86


def test_report_is_self_contained(reported: tuple[Path, pd.DataFrame]) -> None:
    bundle, _ = reported
    page = (bundle / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) >= 11 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<script|<link|@import|url\(|(src|href)=\"(https?:)?//", page)
    for text in METRIC_NAMES + ["out of vocabulary", "bill_length_mm", "Importance of each input",
                                "strategy: concat", "chosen on the validation split for the best f1"]:
        assert text in page, text


def test_plait_report_command_shows_metrics_on_a_file(reported: tuple[Path, pd.DataFrame],
                                                      tmp_path: Path) -> None:
    bundle, test = reported
    data = tmp_path / "test.parquet"
    test.to_parquet(data, index=False)
    (bundle / "plots" / "stale.png").write_bytes(b"not listed in the manifest")
    done = subprocess.run([sys.executable, "-m", "plait", "report", str(bundle), "--data", str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report written to {bundle / 'report.html'}"
    manifest = verify(bundle)
    assert not (bundle / "plots" / "stale.png").exists()
    assert "plots/sex_roc.png" in manifest["files"] and "importance.json" in manifest["files"]
    page = (bundle / "report.html").read_text(encoding="utf-8")
    assert "On the test.parquet: 86 rows" in page
    missing = subprocess.run([sys.executable, "-m", "plait", "report", str(tmp_path / "nothing")],
                                    capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such bundle directory" in missing.stderr


def test_report_renders_in_chromium(reported: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    bundle, _ = reported
    shot = tmp_path / "report.png"
    fetched: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: fetched.append(request.url))
            page.goto((bundle / "report.html").as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({complete: i.complete, width: i.naturalWidth}))")
            text = page.inner_text("body")
            page.eval_on_selector(".plots", "plots => plots.scrollIntoView()")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert len(images) >= 11 and all(i["complete"] and i["width"] > 0 for i in images), images
    assert [url for url in fetched if not url.startswith(("file:", "data:"))] == []
    for name in METRIC_NAMES:
        assert name in text, name
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1280) and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    blue = np.all(np.abs(pixels.astype(int) - [37, 99, 235]) < 30, axis=-1)
    assert blue.sum() > 200  # the training curves in view are drawn
    assert json.loads((bundle / "importance.json").read_text())["repeats"] == 2
