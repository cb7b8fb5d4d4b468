"""Streamed training: record batches encoded once into an on-disk cache, reused later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plait
from conftest import train_block
from plait.errors import DataError
from plait.sources import FileSource, wants_streaming
from plait.training import Batches, Part

ROWS = 1200


def frame(rows: int, seed: int) -> pd.DataFrame:
    """``y`` is 1 when ``x`` plus a bonus for category ``a`` is large; ``t`` echoes it in words."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    c = rng.choice(["a", "b", "c"], rows)
    y = ((x + (c == "a")) > 0.5).astype(int)
    noise = rng.random(rows) < 0.1
    words = np.where(y ^ noise, "good fine", "bad poor")
    return pd.DataFrame({"x": x, "c": c, "t": words, "y": y})


def config(cache: Path, **train: object) -> dict:
    return {
        "inputs": [{"name": "x", "type": "number"}, {"name": "c", "type": "category"},
                   {"name": "t", "type": "text", "length": 4}],
        "outputs": [{"name": "y", "type": "binary"}],
        "train": train_block(**{"epochs": 8, "batch_size": 128, "stream": "always", "part_rows": 250,
                                "cache_dir": str(cache), "validation_split": 0.25, **train}),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stream")
    data = frame(ROWS, 0)
    data.to_parquet(folder / "train.parquet")
    shards = folder / "shards"
    shards.mkdir()
    data.iloc[:500].to_parquet(shards / "a.parquet")
    data.iloc[500:].to_csv(shards / "b.csv", index=False)
    frame(400, 1).to_parquet(folder / "test.parquet")
    return {"train": folder / "train.parquet", "shards": shards, "test": folder / "test.parquet",
            "folder": folder}


@pytest.fixture(scope="module")
def streamed(files: dict[str, Path]) -> plait.Model:
    return plait.Model(config(files["folder"] / "cache"), verbose=0).fit(files["train"])


def test_streamed_model_learns_and_reports_its_rows(streamed: plait.Model, files: dict[str, Path]) -> None:
    report = streamed.data_report_
    assert report["streamed"] is True
    assert report["training_rows"] + report["validation_rows"] == ROWS
    assert 0.18 < report["validation_rows"] / ROWS < 0.32
    assert report["inputs"]["c"] == {"missing": 0, "policy": "fill", "unseen": 0}
    scores = streamed.evaluate(files["test"])["y"]
    assert scores["accuracy"] > 0.85 > scores["baseline"]["accuracy"] + 0.2
    assert streamed.metrics_["validation"]["rows"] == report["validation_rows"]


def test_cache_holds_parts_and_fitted_state_and_is_reused(streamed: plait.Model,
                                                          files: dict[str, Path]) -> None:
    cache = files["folder"] / "cache"
    encoded = list(cache.glob("encoded-*"))
    assert len(encoded) == 1 and len(list(cache.glob("states-*.json"))) == 1
    parts = sorted((encoded[0] / "train").iterdir())
    assert len(parts) == 5  # 1200 rows in batches of 250
    arrays = {path.name for path in parts[0].iterdir()}
    assert arrays == {"x.x.npy", "x.c.npy", "x.t.npy", "y.y.npy", "w.y.npy", "present.y.npy"}
    written = {path: path.stat().st_mtime_ns for path in encoded[0].rglob("*.npy")}
    again = plait.Model(config(cache), verbose=0).fit(files["train"])
    assert {path: path.stat().st_mtime_ns for path in encoded[0].rglob("*.npy")} == written
    assert again.states_ == streamed.states_
    np.testing.assert_array_equal(again.predict(files["test"])["y_proba"],
                                  streamed.predict(files["test"])["y_proba"])


def test_changed_data_gets_a_new_cache(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    frame(300, 2).to_parquet(path)
    spec = config(tmp_path / "cache", epochs=1)
    plait.Model(spec, verbose=0).fit(path)
    frame(300, 3).to_parquet(path)
    plait.Model(spec, verbose=0).fit(path)
    assert len(list((tmp_path / "cache").glob("encoded-*"))) == 2


def test_a_folder_of_parquet_and_csv_files_streams(files: dict[str, Path]) -> None:
    spec = config(files["folder"] / "cache-shards", epochs=4)
    assert wants_streaming(files["shards"], plait.Spec.model_validate({**spec, "train": {}}).train)
    model = plait.Model(spec, verbose=0).fit(files["shards"])
    assert model.data_report_["training_rows"] + model.data_report_["validation_rows"] == ROWS
    assert model.evaluate(files["test"])["y"]["accuracy"] > 0.8


def test_batches_keep_row_numbers_of_their_file(files: dict[str, Path]) -> None:
    source = FileSource(files["shards"], rows=300)
    seen = [(table.source, table.at(0), table.num_rows) for _, _, table in source.batches(["x"])]
    assert seen[0] == (str(files["shards"] / "a.parquet"), f"{files['shards'] / 'a.parquet'}, row 1", 300)
    assert seen[2] == (str(files["shards"] / "b.csv"), f"{files['shards'] / 'b.csv'}, row 1", 300)
    assert seen[3][1] == f"{files['shards'] / 'b.csv'}, row 301"
    assert [rows for _, _, rows in seen] == [300, 200, 300, 300, 100]


def test_a_bad_value_deep_in_a_streamed_file_names_file_row_and_column(tmp_path: Path) -> None:
    data = frame(600, 4).astype({"x": object})
    data.loc[457, "x"] = "n/a?"
    path = tmp_path / "d.csv"
    data.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        plait.Model(config(tmp_path / "cache", epochs=1, fit_rows=50), verbose=0).fit(path)
    assert str(caught.value) == f"{path}, row 458, column 'x': found 'n/a?'; expected a number"
    assert not list((tmp_path / "cache").glob("encoded-*"))
    assert not list((tmp_path / "cache").glob(".partial-*"))


def test_a_malformed_csv_row_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,c,t,y\n1,a,good,1\n2,b,bad,0,7\n3,c,good,1\n")
    with pytest.raises(DataError) as caught:
        plait.Model(config(tmp_path / "cache"), verbose=0).fit(path)
    assert str(caught.value) == (f"{path}: cannot be read as csv: row 2: found 5 fields; expected 4, one "
                                 "per header column")


def test_a_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="found no data files in this folder; expected files ending in"):
        plait.Model(config(tmp_path / "cache"), verbose=0).fit(tmp_path)


def test_batches_span_parts_so_only_the_last_is_short() -> None:
    parts = [Part({"a": np.arange(size) + offset}, {"y": np.zeros(size)}, None)
             for size, offset in ((5, 0), (7, 100), (3, 200))]
    batches = Batches(parts, batch_size=4, seed=1)
    sizes = [len(batches[i][0]["a"]) for i in range(len(batches))]
    assert sizes == [4, 4, 4, 3]
    drawn = np.concatenate([batches[i][0]["a"] for i in range(len(batches))])
    assert sorted(drawn) == [*range(5), *range(100, 107), *range(200, 203)]
    batches.set_epoch(1)
    assert not np.array_equal(np.concatenate([batches[i][0]["a"] for i in range(len(batches))]), drawn)
