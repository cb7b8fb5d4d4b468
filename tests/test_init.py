"""``plait init``: the type inferred for each kind of column with its evidence, columns left
out with the reason, target types, config names; and end to end on real data, ``plait init``
then ``plait train`` as real subprocesses, without editing the written config."""

from __future__ import annotations

import datetime
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from plait.cli import app
from plait.errors import DataError, PlaitError
from plait.init import config_name, infer_config
from plait.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "examples" / "reviews" / "data" / "womens_clothing_reviews.parquet"
WORDS = ["the", "fit", "is", "lovely", "but", "fabric", "runs", "small", "and", "color", "fades"]


def shared(relative: str) -> Path:
    """A file of the shared real data (beside the checkout, or inside it)."""
    for root in (ROOT / "shared" / "data", ROOT.parent / "shared" / "data"):
        if (root / relative).exists():
            return root / relative
    pytest.skip(f"shared data {relative} not available")


def entries(text: str) -> dict[str, dict]:
    """The config's inputs and outputs by name."""
    config = yaml.safe_load(text)
    return {entry["name"]: entry for entry in config["inputs"] + config["outputs"]}


def comment_above(text: str, name: str) -> str:
    """The evidence comment written above the entry named ``name``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith((f"  - {{name: {name},", f"  - name: {name}")):
            assert lines[index - 1].startswith("  # "), lines[index - 1]
            return lines[index - 1]
    raise AssertionError(f"no entry named {name!r} in\n{text}")


def left_out(text: str) -> str:
    lines = text.splitlines()
    start = lines.index("  # Left out:")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("  #   "):
            break
        block.append(line)
    return "\n".join(block)


def kinds_table(tmp_path: Path, rows: int = 200) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(
            tmp_path / "img" / f"{index}.png")
    reviews = [" ".join(rng.choice(WORDS, rng.integers(5, 15))) for _ in range(rows)]
    table = pa.table({
        "Price (USD)": rng.normal(50, 10, rows),
        "age": rng.integers(18, 80, rows),
        "colour": rng.choice(["red", "green", "blue", "black"], rows),
        "review": reviews,
        "member": rng.choice(["yes", "no"], rows),
        "active": rng.random(rows) > 0.3,
        "photo": [f"img/{i % 3}.png" for i in range(rows)],
        "embedding": pa.array([list(rng.normal(size=4)) for _ in range(rows)], pa.list_(pa.float64())),
        "clicks": pa.array([list(rng.integers(0, 9, rng.integers(1, 6))) for _ in range(rows)],
                           pa.list_(pa.int64())),
        "motion": pa.array([rng.normal(size=(rng.integers(3, 7), 3)).tolist() for _ in range(rows)],
                           pa.list_(pa.list_(pa.float64()))),
        "store_id": rng.integers(0, 12, rows),
        "y": rng.integers(0, 2, rows),
    })
    path = tmp_path / "kinds.parquet"
    pq.write_table(table, path)
    return path


def test_each_kind_of_column_gets_its_type_and_evidence(tmp_path: Path) -> None:
    text = infer_config(kinds_table(tmp_path), ["y"])
    found = entries(text)
    assert {name: entry["type"] for name, entry in found.items()} == {
        "price_usd": "number", "age": "number", "colour": "category", "review": "text",
        "member": "binary", "active": "binary", "photo": "image", "embedding": "vector",
        "clicks": "sequence", "motion": "sequence", "store_id": "category", "y": "binary",
    }
    assert found["price_usd"]["column"] == "Price (USD)"
    assert "column" not in found["age"]
    assert found["photo"]["size"] == [8, 8] and found["photo"]["channels"] == 1
    assert found["embedding"]["size"] == 4
    assert found["clicks"]["features"] == 1 and found["motion"]["features"] == 3
    assert "200 distinct of 200" in comment_above(text, "price_usd")
    assert "integers 18 to 79" in comment_above(text, "age")
    assert "4 distinct of 200" in comment_above(text, "colour")
    assert "text, mean 10 words" in comment_above(text, "review")
    assert found["review"]["encoder"]["kind"] == "bag"
    assert "a few words are nearly all n-grams" in comment_above(text, "review")
    assert "2 distinct" in comment_above(text, "member")
    assert "the first is 8×8 grey" in comment_above(text, "photo")
    assert "lists of 4 numbers in every row" in comment_above(text, "embedding")
    assert "lists of 1 to 5 numbers" in comment_above(text, "clicks")
    assert "steps of 3 numbers" in comment_above(text, "motion")
    assert "id-like name" in comment_above(text, "store_id")
    assert text.startswith("# plait config inferred by `plait init` from ")
    assert "(all 200 rows read)" in text.splitlines()[1]


def test_identifiers_constants_and_unusable_columns_are_left_out_with_the_reason() -> None:
    rng = np.random.default_rng(1)
    rows = 100
    table = pa.table({
        "row_id": rng.permutation(rows) + 1000,
        "n": np.arange(rows),
        "code": [f"u{i:05d}" for i in rng.permutation(rows)],
        "country": ["NZ"] * rows,
        "notes": pa.nulls(rows, pa.string()),
        "tags": [["a", "b"]] * rows,
        "x": rng.normal(size=rows),
        "target": rng.normal(size=rows),
    })
    text = infer_config(table, ["target"])
    assert list(entries(text)) == ["x", "target"]
    block = left_out(text)
    assert "'row_id': identifier: 100 distinct of 100 integers, an id-like name" in block
    assert "'n': identifier: 100 distinct of 100 integers, increasing row by row" in block
    assert "'code': identifier: 100 distinct of 100 single words, all distinct" in block
    assert "'country': constant: 'NZ' in every row" in block
    assert "'notes': empty: no value in 100 sampled rows" in block
    assert "'tags': lists of string; expected lists of numbers" in block


def test_dates_and_moments_are_date_inputs_with_their_range_as_evidence() -> None:
    rows = 60
    days = [datetime.date(2024, 1, 1) + datetime.timedelta(days=i) for i in range(rows)]
    table = pa.table({
        "sold": days,
        "seen": pa.array([1_700_000_000_000_000 + i * 3_600_000_000 for i in range(rows)],
                         pa.timestamp("us", tz="Europe/Berlin")),
        "written": [f"{day.isoformat()}T{i % 24:02d}:15:00+02:00" for i, day in enumerate(days)],
        "mostly": [day.isoformat() for day in days[:-3]] + ["soon", "later", "never"],
        "target": np.arange(rows) % 2,
    })
    text = infer_config(table, ["target"])
    found = entries(text)
    assert [found[name]["type"] for name in ("sold", "seen", "written", "mostly")] == [
        "date", "date", "date", "date"]
    assert "'sold': date32[day] values 2024-01-01 to 2024-02-29, 60 distinct of 60" in text
    assert "'written': ISO-8601 dates (100%) 2024-01-01T00:15:00+02:00 to" in text
    assert "'mostly': ISO-8601 dates (95%)" in text
    assert load_spec(yaml.safe_load(text)).inputs[0].type == "date"


def test_a_column_of_numbers_that_is_not_an_identifier_stays_a_number() -> None:
    rng = np.random.default_rng(2)
    table = pa.table({"weight": rng.permutation(500) * 7 + 3, "y": rng.normal(size=500)})
    assert entries(infer_config(table, ["y"]))["weight"]["type"] == "number"


@pytest.mark.parametrize(("values", "expected"), [
    (["yes", "no"] * 30, "binary"),
    ([True, False, True] * 20, "binary"),
    (["cat", "dog", "bird"] * 20, "category"),
    ([1, 2, 3, 4, 5] * 12, "category"),
    ([1.0, 2.0, 3.0] * 20, "category"),
    (list(range(60)), "number"),
    (list(np.linspace(0, 1, 60)), "number"),
])
def test_target_type_follows_its_values(values: list, expected: str) -> None:
    table = pa.table({"x": np.arange(len(values), dtype=float) % 7, "score": values})
    text = infer_config(table, ["score"])
    assert entries(text)["score"]["type"] == expected
    assert f"{expected} (inferred)" in comment_above(text, "score")


def test_integer_levels_suggest_a_regression_and_the_type_can_be_forced() -> None:
    table = pa.table({"x": np.arange(60.0), "Star Rating": [1, 2, 3, 4, 5] * 12})
    text = infer_config(table, ["Star Rating"])
    assert "for a regression: --target 'Star Rating:number'" in comment_above(text, "star_rating")
    forced = infer_config(table, ["Star Rating:number"])
    assert entries(forced)["star_rating"] == {"name": "star_rating", "column": "Star Rating",
                                             "type": "number"}
    assert "set with --target 'Star Rating:number'" in comment_above(forced, "star_rating")
    assert entries(infer_config(table, ["Star Rating:category"]))["star_rating"]["type"] == "category"


def test_several_targets_are_outputs_and_never_inputs() -> None:
    rng = np.random.default_rng(3)
    table = pa.table({"a": rng.normal(size=80), "b": rng.choice(["p", "q", "r"], 80),
                      "c": rng.integers(0, 2, 80), "d": rng.normal(size=80)})
    spec = load_spec(yaml.safe_load(infer_config(table, ["c", "d"])))
    assert [(o.name, o.type) for o in spec.outputs] == [("c", "binary"), ("d", "number")]
    assert [s.source for s in spec.inputs] == ["a", "b"]


@pytest.mark.parametrize(("targets", "error", "message"), [
    (["Score"], DataError, "no column 'Score' (--target); columns found: 'x', 'score', 'flat'; "
                           "did you mean 'score'?"),
    (["score:binary"], PlaitError, "has 5 distinct values; expected exactly two"),
    (["score:ordinal"], PlaitError, "found type 'ordinal'; expected one of binary, category, number"),
    (["flat"], DataError, "column 'flat': found 1 distinct value(s); expected at least two"),
    (["score", "score"], PlaitError, "--target 'score': given twice"),
    ([], PlaitError, "no target given"),
])
def test_target_mistakes_are_reported_plainly(targets: list, error: type, message: str) -> None:
    table = pa.table({"x": np.arange(20.0), "score": [1, 2, 3, 4, 5] * 4, "flat": ["a"] * 20})
    with pytest.raises(error) as raised:
        infer_config(table, targets)
    assert message in str(raised.value)


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        infer_config(tmp_path / "absent.csv", ["y"])


def test_names_are_identifiers_unique_and_columns_kept() -> None:
    assert config_name("Review Text") == "review_text"
    assert config_name("MedHouseVal") == "med_house_val"
    assert config_name("Delta 15 N (o/oo)") == "delta_15_n_o_oo"
    assert config_name("2019") == "col_2019"
    assert config_name("Café crème") == "cafe_creme"
    assert config_name("%") == "column"
    rng = np.random.default_rng(4)
    columns = ["a b", "a-b", "A_B", "merged", "line\nbreak", "2019", "target"]
    table = pa.table({name: rng.normal(size=50) for name in columns})
    text = infer_config(table, ["target"])
    found = entries(text)
    assert list(found) == ["a_b", "a_b_2", "a_b_3", "merged_2", "line_break", "col_2019", "target"]
    assert [entry.get("column") for entry in found.values()] == [
        "a b", "a-b", "A_B", "merged", "line\nbreak", "2019", None]
    assert "  # 'line\\nbreak': numbers" in comment_above(text, "line_break")


def test_numbered_columns_form_one_vector_and_gzip_csv_without_header_reads(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = "\n".join(",".join(map(str, [*rng.integers(0, 17, 10), i % 3])) for i in range(60))
    path = tmp_path / "pixels.csv.gz"
    path.write_bytes(gzip.compress(rows.encode()))
    text = infer_config(path, ["f10"])
    found = entries(text)
    assert found["f_vector"] == {"name": "f_vector", "type": "vector",
                                 "columns": [f"f{i}" for i in range(10)]}
    assert "10 numeric columns f0 … f9, values 0 to 16" in comment_above(text, "f_vector")
    assert found["f10"]["type"] == "category"


def test_digits_pixels_become_one_vector_and_the_label_a_category() -> None:
    text = infer_config(shared("images/digits.csv.gz"), ["f64"])
    found = entries(text)
    assert list(found) == ["f_vector", "f64"]
    assert len(found["f_vector"]["columns"]) == 64
    assert found["f64"]["type"] == "category"
    assert "(all 1,797 rows read)" in text


def test_fixed_length_lists_whose_neighbours_correlate_are_series_the_rest_vectors() -> None:
    from plait.evidence import Column
    from plait.features.vector import VectorInput

    rng = np.random.default_rng(6)
    rows, steps = 80, np.arange(64)

    def wave() -> np.ndarray:
        return np.sin(2 * np.pi * steps / rng.uniform(10, 40) + rng.uniform(0, 6)) + rng.normal(0, 0.1, 64)

    table = pa.table({
        "ecg": pa.array([wave().tolist() for _ in range(rows)], pa.list_(pa.float64())),
        "motion": pa.array([np.column_stack([wave(), wave(), wave()]).tolist() for _ in range(rows)],
                           pa.list_(pa.list_(pa.float64()))),
        "embedding": pa.array([rng.normal(size=64).tolist() for _ in range(rows)], pa.list_(pa.float64())),
        "short": pa.array([wave()[:8].tolist() for _ in range(rows)], pa.list_(pa.float64())),
        "y": rng.integers(0, 2, rows),
    })
    text = infer_config(table, ["y"])
    found = entries(text)
    series = {"type": "sequence", "scale": "series", "encoder": {"kind": "inception"}}
    assert found["ecg"] == {"name": "ecg", **series, "features": 1}
    assert found["motion"] == {"name": "motion", **series, "features": 3}
    assert re.search(r"lists of 64 numbers in every row, neighbours correlate \(mean lag-1 "
                     r"autocorrelation 0\.9\d\): a series$", comment_above(text, "ecg"))
    assert "64 steps of 3 numbers in every row, neighbouring steps correlate" in comment_above(text, "motion")
    # numbers in no order, and lists too short to tell, stay vectors
    assert found["embedding"] == {"name": "embedding", "type": "vector", "size": 64}
    assert found["short"] == {"name": "short", "type": "vector", "size": 8}
    assert comment_above(text, "embedding").endswith("'embedding': lists of 64 numbers in every row")
    # vector leaves a series to sequence whichever of the two is asked first
    ecg = Column("ecg", table.column("ecg"), rows, rows, "", ROOT)
    assert VectorInput.recognise(ecg) is None


def test_init_command_writes_once_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "small.csv"
    pd.DataFrame({"x": np.arange(30.0), "y": [0, 1] * 15}).to_csv(data, index=False)
    out = tmp_path / "config.yaml"
    runner = CliRunner()
    printed = runner.invoke(app, ["init", str(data), "--target", "y"])
    assert printed.exit_code == 0 and "- {name: y, type: binary}" in printed.stdout
    assert runner.invoke(app, ["init", str(data), "--target", "y", "--out", str(out)]).exit_code == 0
    assert out.read_text() == printed.stdout
    out.write_text("# mine\n")
    refused = runner.invoke(app, ["init", str(data), "--target", "y", "--out", str(out)])
    assert refused.exit_code == 2
    assert "already exists; expected a new file (pass --force to overwrite it)" in refused.stderr
    assert out.read_text() == "# mine\n"
    forced = runner.invoke(app, ["init", str(data), "--target", "y", "--out", str(out), "--force"])
    assert forced.exit_code == 0 and out.read_text() == printed.stdout
    missing = runner.invoke(app, ["init", str(data), "--target", "z"])
    assert missing.exit_code == 2 and "no column 'z' (--target)" in missing.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def reviews(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.parquet"
    pq.write_table(pq.read_table(REVIEWS).slice(0, 3000), path)
    return path


def penguins(tmp_path: Path) -> Path:
    return shared("tabular/palmerpenguins/penguins.csv")


def adult(tmp_path: Path) -> Path:
    path = tmp_path / "adult.parquet"
    table = pq.read_table(shared("tabular/adult.parquet"))
    rows = np.sort(np.random.default_rng(0).choice(table.num_rows, 2000, replace=False))
    pq.write_table(table.take(rows), path)
    return path


CASES = {
    "reviews": (reviews, ["Recommended IND", "Rating"], {
        "clothing_id": "category", "age": "number", "title": "text", "review_text": "text",
        "review_text_gru": "text", "positive_feedback_count": "number", "division_name": "category",
        "department_name": "category", "class_name": "category",
        "recommended_ind": "binary", "rating": "category",
    }, {"'__index_level_0__': identifier"}),
    "penguins": (penguins, ["species"], {
        "island": "category", "bill_length_mm": "number", "bill_depth_mm": "number",
        "flipper_length_mm": "number", "body_mass_g": "number", "sex": "binary",
        "year": "number", "species": "category",
    }, set()),
    "adult": (adult, ["income"], {
        "age": "number", "workclass": "category", "fnlwgt": "number", "education": "category",
        "educational_num": "number", "marital_status": "category", "occupation": "category",
        "relationship": "category", "race": "category", "gender": "binary",
        "capital_gain": "number", "capital_loss": "number", "hours_per_week": "number",
        "native_country": "category", "income": "binary",
    }, set()),
}


def plait(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plait", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("case", list(CASES))
def test_init_then_train_on_real_data_without_edits(case: str, tmp_path: Path) -> None:
    prepare, targets, expected, left = CASES[case]
    data = prepare(tmp_path)
    flags = [part for target in targets for part in ("--target", target)]
    made = plait("init", str(data), *flags, "--out", "config.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "config.yaml").read_text()
    assert {name: entry["type"] for name, entry in entries(text).items()} == expected
    assert all(reason in left_out(text) for reason in left)
    trained = plait("train", "config.yaml", "--data", str(data), "--out", "bundle", "--epochs", "1",
                    "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())["validation"]
    for output in yaml.safe_load(text)["outputs"]:
        key = "mae" if output["type"] == "number" else "accuracy"
        assert np.isfinite(metrics[output["name"]][key]), metrics
    assert (tmp_path / "bundle" / "MANIFEST.json").is_file()


@pytest.mark.parametrize(("words", "paired"), [(40, True), (260, False)])
def test_texts_of_review_length_get_a_gru_beside_their_bag(words: int, paired: bool,
                                                          tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    documents = [" ".join(rng.choice(WORDS, rng.integers(words // 2, words))) for _ in range(60)]
    path = tmp_path / "documents.parquet"
    pq.write_table(pa.table({"Body Text": documents, "y": rng.integers(0, 2, 60)}), path)
    text = infer_config(path, ["y"])
    found = entries(text)
    assert found["body_text"]["encoder"]["kind"] == "bag"
    if not paired:
        assert list(found) == ["body_text", "y"]
        assert "no recurrent encoder beside it: over 200 words" in comment_above(text, "body_text")
        return
    assert list(found) == ["body_text", "body_text_gru", "y"]
    gru = found["body_text_gru"]
    assert gru["column"] == "Body Text"
    assert gru["encoder"] == {"kind": "gru", "units": 64, "bidirectional": True}
    assert gru["length"] % 8 == 0 and words - 8 < gru["length"] <= words + 8
    assert "bidirectional GRU beside the bag above" in comment_above(text, "body_text_gru")
