"""Data that does not fit the config: one DataError naming the file, row, column, what was
found and what was expected; and the missing-value and unseen-category policies, counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import fit, train_block, write_png
from plait.data import read_table
from plait.errors import DataError, PlaitError
from plait.preprocess import encode_inputs, encode_targets, fit_states
from plait.spec import load_spec


def spec_of(*inputs: dict, output: dict | None = None) -> object:
    return load_spec({"inputs": list(inputs), "outputs": [output or {"name": "y", "type": "binary"}]})


def data_error(call: object, *args: object) -> str:
    with pytest.raises(DataError) as caught:
        call(*args)  # type: ignore[operator]
    return str(caught.value)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_data_error_is_a_plait_error() -> None:
    assert issubclass(DataError, PlaitError)


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "age,city,y\n1,a,0\n2,b,1\n")
    spec = spec_of({"name": "income", "type": "number"})
    text = data_error(fit_states, spec, read_table(path))
    assert text == f"{path}: no column 'income' (needed by input 'income'); columns found: 'age', 'city', 'y'"


def test_missing_column_names_the_column_key_and_output(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "age,y\n1,0\n2,1\n")
    spec = spec_of({"name": "age", "type": "number"}, output={"name": "label", "type": "binary"})
    assert data_error(fit_states, spec, read_table(path)) == (
        f"{path}: no column 'label' (needed by output 'label'); columns found: 'age', 'y'")
    spec = spec_of({"name": "years", "column": "Age", "type": "number"})
    assert "no column 'Age' (needed by input 'years')" in data_error(fit_states, spec, read_table(path))


def test_text_in_a_number_column_names_the_row_and_value(tmp_path: Path) -> None:
    values = [str(i) for i in range(40)]
    values[30] = "oops"
    path = tmp_path / "d.csv"
    pd.DataFrame({"x": values, "y": [0, 1] * 20}).to_csv(path, index=False)
    expected = f"{path}, row 31, column 'x': found 'oops'; expected a number"
    spec = spec_of({"name": "x", "type": "number"})
    assert data_error(fit_states, spec, read_table(path)) == expected
    # The training part of a split is a subset of the rows: errors still name the file's row.
    config = {"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "y", "type": "binary"}],
              "train": train_block(validation_split=0.25)}
    assert data_error(fit, config, path) == expected


def test_blank_cells_in_a_number_column_are_missing_not_errors() -> None:
    table = read_table(pa.table({"x": ["1.5", " ", "", None, " 2 "]}))
    values = table.numbers("x", "input 'x'")
    np.testing.assert_array_equal(np.isnan(values), [False, True, True, True, False])
    assert values[0] == 1.5 and values[4] == 2.0


def test_a_list_column_where_numbers_are_expected() -> None:
    table = read_table(pa.table({"x": [[1.0], [2.0]], "y": [0, 1]}))
    text = data_error(fit_states, spec_of({"name": "x", "type": "number"}), table)
    assert text == "<arrow table>, column 'x': found values of type list<item: double>; expected numbers"


def test_vector_of_wrong_length_names_the_row() -> None:
    table = read_table(pa.table({"v": [[1.0, 2, 3], [1.0, 2, 3], [1.0, 2], [4.0, 5, 6]], "y": [0, 1, 0, 1]}))
    for declared in ({}, {"size": 3}):
        spec = spec_of({"name": "v", "type": "vector", **declared})
        assert data_error(fit_states, spec, table) == (
            "<arrow table>, row 3, column 'v': found 'a list of 2 numbers'; expected 3 numbers")


def test_vector_of_wrong_length_after_fitting(tmp_path: Path) -> None:
    spec = spec_of({"name": "v", "type": "vector"})
    states = fit_states(spec, read_table(pa.table({"v": [[1.0, 2.0]] * 3, "y": [0, 1, 0]})))
    later = read_table(pd.DataFrame({"v": [[1.0, 2.0], [1.0, 2.0, 3.0]]}))
    assert data_error(encode_inputs, spec, states, later) == (
        "<DataFrame>, row 2, column 'v': found 'a list of 3 numbers'; expected 2 numbers")


def test_vector_shape_checks_the_element_count() -> None:
    table = read_table(pa.table({"v": [list(range(49))] * 2, "y": [0, 1]}))
    spec = spec_of({"name": "v", "type": "vector", "shape": [10, 5]})
    assert data_error(fit_states, spec, table) == (
        "<arrow table>, row 1, column 'v': found 'a list of 49 numbers'; expected 50 numbers")


def test_missing_policy_error_names_row_and_column() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, np.inf], "y": [0, 1, 0, 1, 0]})
    spec = spec_of({"name": "a", "type": "number"}, {"name": "x", "type": "number", "missing": "error"})
    table = read_table(frame.assign(a=1.0))
    states = fit_states(spec, table)
    assert data_error(encode_inputs, spec, states, table) == (
        "<DataFrame>, row 3, column 'x': found a missing or non-finite value; expected a value "
        "(inputs[1].missing is 'error'; 2 row(s) affected; set it to 'fill' or 'skip' to accept them)")


def test_missing_policy_error_in_fit_names_the_file_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(9)) + "NA,1\n")
    config = {"inputs": [{"name": "x", "type": "number", "missing": "error"}],
              "outputs": [{"name": "y", "type": "binary"}], "train": train_block(validation_split=0.3)}
    text = data_error(fit, config, path)
    assert text.startswith(f"{path}, row 10, column 'x': found a missing or non-finite value")


def test_missing_policy_fill_reports_counts_and_fills_with_the_training_mean() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, np.nan], "c": ["a", None, "b", "a"]})
    spec = spec_of({"name": "x", "type": "number", "scale": "none"}, {"name": "c", "type": "category"})
    table = read_table(frame.assign(y=[0, 1, 0, 1]))
    encoded = encode_inputs(spec, fit_states(spec, table), table)
    np.testing.assert_array_equal(encoded.inputs["x"].ravel(), [1.0, 2.0, 3.0, 2.0])
    np.testing.assert_array_equal(encoded.inputs["c"].ravel(), [1, 0, 2, 1])
    assert encoded.kept.all()
    assert encoded.report == {"x": {"missing": 2, "policy": "fill", "unseen": 0},
                              "c": {"missing": 1, "policy": "fill", "unseen": 0}}


@pytest.fixture(scope="module")
def skipping_model() -> object:
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    frame = pd.DataFrame({"x": x, "y": (x > 0).astype(int)})
    frame.loc[[5, 17, 60], "x"] = np.nan
    config = {"inputs": [{"name": "x", "type": "number", "missing": "skip"}],
              "outputs": [{"name": "y", "type": "binary"}], "train": train_block(epochs=5)}
    return fit(config, frame)


def test_missing_policy_skip_drops_rows_and_counts_them(skipping_model: object) -> None:
    report = skipping_model.data_report_  # type: ignore[attr-defined]
    assert report["training_rows"] == 200
    assert report["used_rows"] == 197
    assert report["inputs"]["x"] == {"missing": 3, "policy": "skip", "unseen": 0}


def test_skipped_rows_get_empty_predictions(skipping_model: object) -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, -1.0]})
    predicted = skipping_model.predict(frame)  # type: ignore[attr-defined]
    assert len(predicted) == 3
    assert predicted["y"].isna().tolist() == [False, True, False]
    assert predicted["y_proba"].isna().tolist() == [False, True, False]
    scores = skipping_model.evaluate(frame.assign(y=[1, 1, 0]))  # type: ignore[attr-defined]
    assert scores["rows"] == 3 and scores["y"]["rows"] == 2


def test_skip_leaving_no_rows_is_an_error() -> None:
    frame = pd.DataFrame({"x": [np.nan] * 4, "y": [0, 1, 0, 1]})
    config = {"inputs": [{"name": "x", "type": "number", "missing": "skip"}],
              "outputs": [{"name": "y", "type": "binary"}], "train": train_block()}
    with pytest.raises(PlaitError, match=r"<DataFrame>: no rows left to train on"):
        fit(config, frame)


def test_unseen_category_goes_to_the_oov_slot_and_is_counted() -> None:
    spec = spec_of({"name": "c", "type": "category"})
    states = fit_states(spec, read_table(pd.DataFrame({"c": ["a", "b", "a"], "y": [0, 1, 0]})))
    assert states["c"].vocabulary == ["a", "b"]
    encoded = encode_inputs(spec, states, read_table(pd.DataFrame({"c": ["a", "zz", None, "b", "q"]})))
    np.testing.assert_array_equal(encoded.inputs["c"].ravel(), [1, 0, 0, 2, 0])
    assert encoded.report["c"] == {"missing": 1, "policy": "fill", "unseen": 2}


def test_rare_training_categories_share_the_oov_slot_and_are_counted() -> None:
    frame = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["rare", "once"], "y": [0, 1] * 5})
    spec = spec_of({"name": "c", "type": "category", "min_frequency": 2})
    table = read_table(frame)
    states = fit_states(spec, table)
    assert states["c"].vocabulary == ["a", "b"]
    assert encode_inputs(spec, states, table).report["c"]["unseen"] == 2
    limited = spec_of({"name": "c", "type": "category", "max_categories": 1})
    assert fit_states(limited, table)["c"].vocabulary == ["a"]


def test_unseen_words_are_counted() -> None:
    spec = spec_of({"name": "t", "type": "text", "length": 4})
    states = fit_states(spec, read_table(pd.DataFrame({"t": ["red shoe", "blue shoe"], "y": [0, 1]})))
    encoded = encode_inputs(spec, states, read_table(pd.DataFrame({"t": ["green shoe", "red hat now"]})))
    assert encoded.report["t"]["unseen"] == 3


def test_empty_and_missing_text_encode_as_one_unknown_word() -> None:
    spec = spec_of({"name": "t", "type": "text", "length": 3})
    states = fit_states(spec, read_table(pd.DataFrame({"t": ["red shoe", "blue shoe"], "y": [0, 1]})))
    frame = pd.DataFrame({"t": ["", "  ", None, "red"]})
    encoded = encode_inputs(spec, states, read_table(frame))
    unknown = [1, 0, 0]
    np.testing.assert_array_equal(encoded.inputs["t"][:3], [unknown] * 3)
    assert encoded.inputs["t"][3, 0] > 1
    assert encoded.report["t"] == {"missing": 1, "policy": "fill", "unseen": 0}


def test_a_third_value_in_a_binary_input_names_row_and_value() -> None:
    spec = spec_of({"name": "flag", "type": "binary"})
    states = fit_states(spec, read_table(pd.DataFrame({"flag": ["yes", "no", "yes"], "y": [0, 1, 0]})))
    text = data_error(encode_inputs, spec, states, read_table(pd.DataFrame({"flag": ["no", "maybe"]})))
    assert text == "<DataFrame>, row 2, column 'flag': found 'maybe'; expected one of ['no', 'yes']"


def test_three_values_in_a_binary_column() -> None:
    frame = pd.DataFrame({"flag": ["a", "b", "c"], "y": [0, 1, 0]})
    text = data_error(fit_states, spec_of({"name": "flag", "type": "binary"}), read_table(frame))
    assert text == "<DataFrame>, column 'flag': found 3 distinct values ['a', 'b', 'c']; expected two"


def test_unknown_label_at_evaluation_names_row_and_label() -> None:
    spec = spec_of({"name": "x", "type": "number"}, output={"name": "y", "type": "category"})
    states = fit_states(spec, read_table(pd.DataFrame({"x": [1.0, 2, 3], "y": ["a", "b", "c"]})))
    later = read_table(pd.DataFrame({"x": [1.0, 2], "y": ["a", "d"]}))
    assert data_error(encode_targets, spec, states, later) == (
        "<DataFrame>, row 2, column 'y': found 'd'; expected a label seen in training: ['a', 'b', 'c']")


def test_a_category_target_needs_two_classes() -> None:
    spec = spec_of({"name": "x", "type": "number"}, output={"name": "y", "type": "category"})
    text = data_error(fit_states, spec, read_table(pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "a"]})))
    assert text == "<DataFrame>, column 'y': found 1 distinct label(s); expected at least two classes"


def test_text_in_a_number_target() -> None:
    spec = spec_of({"name": "x", "type": "number"}, output={"name": "y", "type": "number"})
    table = read_table(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["1.5", "2", "high"]}))
    assert data_error(fit_states, spec, table) == ("<DataFrame>, row 3, column 'y': found 'high'; "
                                                   "expected a number")


def test_sequence_with_uneven_steps_names_the_row() -> None:
    column = [[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0]]]
    spec = spec_of({"name": "s", "type": "sequence"})
    text = data_error(fit_states, spec, read_table(pa.table({"s": column, "y": [0, 1, 0]})))
    assert text == ("<arrow table>, row 3, column 's': found 'a step of 1 numbers'; "
                    "expected 2 numbers in every step")


def test_sequence_nested_too_deep() -> None:
    spec = spec_of({"name": "s", "type": "sequence"})
    table = read_table(pa.table({"s": [[[[1.0]]]], "y": [0]}))
    assert data_error(fit_states, spec, table) == (
        "<arrow table>, column 's': found lists nested 3 deep; expected a list of steps, each a number "
        "or a list of numbers")


def test_sequence_from_a_number_column() -> None:
    spec = spec_of({"name": "s", "type": "sequence"})
    assert data_error(fit_states, spec, read_table(pa.table({"s": [1.0], "y": [0]}))) == (
        "<arrow table>, column 's': found values of type double; expected a list of numbers in each row")


def test_pixel_list_of_wrong_length() -> None:
    spec = spec_of({"name": "img", "type": "image", "size": [2, 2], "channels": 1})
    table = read_table(pa.table({"img": [[0, 1, 2, 3], [0, 1, 2]], "y": [0, 1]}))
    assert data_error(encode_inputs, spec, fit_states(spec, table), table) == (
        "<arrow table>, row 2, column 'img': found '3 pixel values'; expected 4 (2×2×1)")


def test_image_column_of_numbers() -> None:
    spec = spec_of({"name": "img", "type": "image"})
    assert data_error(fit_states, spec, read_table(pa.table({"img": [1.0], "y": [0]}))) == (
        "<arrow table>, column 'img': found values of type double; expected image file paths, image "
        "bytes, or lists of pixel values")


def test_image_file_missing(tmp_path: Path) -> None:
    write_png(tmp_path / "img" / "a.png", np.zeros((4, 4), np.uint8))
    path = write_csv(tmp_path / "d.csv", "img,y\nimg/a.png,0\nimg/b.png,1\n")
    spec = spec_of({"name": "img", "type": "image", "size": [4, 4]})
    table = read_table(path)
    text = data_error(encode_inputs, spec, fit_states(spec, table), table)
    assert text == f"{path}, row 2, column 'img': image file {str(tmp_path / 'img' / 'b.png')!r} not found"


def test_image_file_corrupt(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    path = write_csv(tmp_path / "d.csv", "img,y\na.png,0\nb.png,1\n")
    spec = spec_of({"name": "img", "type": "image", "size": [4, 4]})
    table = read_table(path)
    text = data_error(encode_inputs, spec, fit_states(spec, table), table)
    assert text.startswith(f"{path}, row 2, column 'img': cannot decode the image: ")
    assert text.endswith("expected a PNG, JPEG or other image Pillow reads")


def test_image_bytes_corrupt() -> None:
    spec = spec_of({"name": "img", "type": "image", "size": [4, 4]})
    table = read_table(pa.table({"img": pa.array([b"GIF89a broken"], pa.binary()), "y": [1]}))
    text = data_error(encode_inputs, spec, fit_states(spec, table), table)
    assert text.startswith("<arrow table>, row 1, column 'img': cannot decode the image: ")


def test_image_over_max_pixels_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "big.png", np.zeros((40, 50), np.uint8))
    path = write_csv(tmp_path / "d.csv", "img,y\nbig.png,0\n")
    spec = spec_of({"name": "img", "type": "image", "size": [4, 4], "max_pixels": 1000})
    table = read_table(path)
    assert data_error(encode_inputs, spec, fit_states(spec, table), table) == (
        f"{path}, row 1, column 'img': found an image of 50×40 pixels; expected at most 1000 (max_pixels)")


def test_empty_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "")
    assert data_error(read_table, path) == f"{path}: the file is empty; expected a header and data rows"


def test_header_without_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "x,y\n")
    assert data_error(read_table, path) == f"{path}: has no data rows"


def test_unknown_extension_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.xlsx", "x,y\n1,2\n")
    text = data_error(read_table, path)
    assert text.startswith(f"{path}: unknown file type '.xlsx'; expected one of ")
    for ending in (".csv", ".tsv", ".parquet", ".jsonl", ".arrow"):
        assert ending in text


def test_missing_data_file_and_folder(tmp_path: Path) -> None:
    assert data_error(read_table, tmp_path / "none.csv") == f"{tmp_path / 'none.csv'}: no such file"
    assert data_error(read_table, tmp_path) == f"{tmp_path}: is a folder; expected a data file"


def test_unreadable_file_names_the_reader(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.parquet", "this is no parquet file")
    assert data_error(read_table, path).startswith(f"{path}: cannot be read as parquet: ")
    path = write_csv(tmp_path / "d.jsonl", '{"x": 1}\n{"x": \n')
    assert data_error(read_table, path).startswith(f"{path}: cannot be read as json: ")
    path = write_csv(tmp_path / "ragged.csv", "x,y\n1,2\n3,4,5\n")
    assert data_error(read_table, path).startswith(f"{path}: cannot be read as csv: ")


def test_unsupported_data_object() -> None:
    assert data_error(read_table, [1, 2, 3]) == (
        "data: found a list; expected a file path, a pandas DataFrame or a pyarrow Table")
