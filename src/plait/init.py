"""``plait init``: a commented config inferred from a sample of the data.

Every column but the targets becomes one input, or is left out with the reason; each
target becomes one output. The evidence for each choice is written as a comment above it.
The rules, in order (``infer_input``):

- no values, dates and times, lists of non-numbers, bytes that are not images: left out;
- lists of numbers: ``vector`` when every row has as many, ``sequence`` otherwise or when nested;
- one distinct value: left out (constant); two: ``binary``;
- integers all distinct with an id-like name or increasing in file order: left out (identifier);
  repeated integers with an id-like name (``Clothing ID``): ``category``; other numbers: ``number``;
- strings ending in an image extension: ``image``; single words all distinct, or an id-like
  name with half the values distinct: left out (identifier); a mean of 2+ words with 20%+
  distinct: ``text``; the rest: ``category``;
- 8 or more numeric columns named alike but for a number (``f0`` … ``f63``): one ``vector``.

A target is ``binary`` with two distinct values, ``category`` for labels or integers with at
most 10 values, ``number`` otherwise; ``--target COLUMN:TYPE`` sets the type.
"""

from __future__ import annotations

import difflib
import re
import shlex
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from plait.data import Table, read_table
from plait.errors import DataError, PlaitError
from plait.features.lists import list_depth

SAMPLE_ROWS = 10_000
CLASS_LEVELS = 10
"""An integer target with at most this many distinct values is a category."""
TEXT_WORDS, TEXT_DISTINCT = 2.0, 0.2
"""Strings are text from this mean number of words and this share of distinct values."""
GROUP_SIZE = 8
"""Numeric columns named alike but for a number form one vector from this many on."""
OUTPUT_KINDS = ("binary", "category", "number")
RESERVED = {"merged", "head"}
IMAGE_PATH = r"\.(png|jpe?g|gif|bmp|webp|tiff?)$"
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
MISSING_MARKERS = ["NA", "N/A", "n/a", "na", "?", "null", "NULL", "None", "none", "nan", "NaN", "-", ""]


@dataclass
class Choice:
    """What init decided for one column (or a group of columns): a config entry without its
    name, or None when the column is left out; and the evidence, written as its comment."""

    label: str
    entry: dict | None
    evidence: str


def infer_config(data: Any, targets: str | Sequence[str], sample_rows: int = SAMPLE_ROWS,
                 seed: int = 0) -> str:
    """The YAML text of a commented config for ``data`` predicting ``targets``.

    ``targets`` are column names, each optionally ``COLUMN:TYPE`` with TYPE one of binary,
    category, number. Types are inferred from ``sample_rows`` rows drawn at random (in file
    order); the written config always validates with ``plait.spec.load_spec``.
    """
    table = read_table(data)
    wanted = parse_targets(table, [targets] if isinstance(targets, str) else list(targets))
    rows = np.arange(table.num_rows)
    if table.num_rows > sample_rows:
        rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, sample_rows, replace=False))
    sample = table.take(rows)
    choices = infer_inputs(sample, table, {column for column, _ in wanted})
    taken = set(RESERVED)
    outputs = [(c, _named(c, taken)) for c in (infer_output(col, kind, table) for col, kind in wanted)]
    inputs = [(choice, _named(choice, taken)) for choice in choices if choice.entry is not None]
    left_out = [choice for choice in choices if choice.entry is None]
    if not inputs:
        reasons = "; ".join(f"{c.label!r}: {c.evidence}" for c in left_out) or "there is none"
        raise DataError(f"{table.source}: no column can be an input ({reasons}); expected at least "
                        "one column besides the targets")
    text = render(table, sample.num_rows, inputs, left_out, outputs)
    from plait.spec import load_spec

    load_spec(yaml.safe_load(text))
    return text


def parse_targets(table: Table, targets: list[str]) -> list[tuple[str, str | None]]:
    """Each ``--target`` as (column, forced type or None), checked against the table."""
    columns = table.arrow.column_names
    if not targets:
        raise PlaitError("no target given; expected at least one --target COLUMN")
    chosen: list[tuple[str, str | None]] = []
    for text in targets:
        column, forced = text, None
        head, _, tail = text.rpartition(":")
        if text not in columns and head:
            if tail not in OUTPUT_KINDS:
                raise PlaitError(f"--target {text!r}: found type {tail!r}; expected one of "
                                 f"{', '.join(OUTPUT_KINDS)} after the column name")
            column, forced = head, tail
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            shown = ", ".join(repr(c) for c in columns[:30])
            raise DataError(f"{table.source}: no column {column!r} (--target); columns found: {shown}{hint}")
        if columns.count(column) > 1:
            raise DataError(f"{table.source}: {columns.count(column)} columns are named {column!r}; "
                            "expected one target column of that name")
        if column in [c for c, _ in chosen]:
            raise PlaitError(f"--target {column!r}: given twice; expected each target once")
        chosen.append((column, forced))
    return chosen


def infer_inputs(sample: Table, table: Table, targets: set[str]) -> list[Choice]:
    """One choice per column that is not a target, in file order; vector groups in place of
    their first member."""
    names = sample.arrow.column_names
    grouped = vector_groups(sample, [(i, n) for i, n in enumerate(names) if n not in targets])
    choices = []
    for index, name in enumerate(names):
        if name in targets or (index in grouped and grouped[index][0] != index):
            continue
        if index in grouped:
            choices.append(group_choice(sample, grouped[index]))
        elif names.count(name) > 1:
            choices.append(Choice(name, None, f"{names.count(name)} columns have this name; "
                                  "rename them to use them"))
        else:
            full = table.arrow.column(index)
            choices.append(infer_input(name, sample.arrow.column(index), full, sample))
    return choices


def infer_input(name: str, column: pa.ChunkedArray, full: pa.ChunkedArray, table: Table) -> Choice:
    """The input type for one column from its sampled values (``full`` only counts levels,
    so that a rare third value never makes a binary input)."""
    column, full = _plain(column), _plain(full)
    kind, present = column.type, column.drop_null()
    count = len(present)
    gaps = _missing(len(column) - count)
    if count == 0:
        return Choice(name, None, f"empty: no value in {len(column):,} sampled rows")
    if pa.types.is_temporal(kind):
        return Choice(name, None, f"{kind} values; dates and times are no input type, derive "
                      "numbers from them (year, day of week) to use them")
    if _is_list(kind):
        return infer_list(name, present, gaps)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return infer_bytes(name, present, gaps)
    if not (pa.types.is_boolean(kind) or _is_numeric(kind) or _is_string(kind)):
        return Choice(name, None, f"{kind} values; expected numbers, text, labels or lists")
    levels = pc.count_distinct(full.drop_null()).as_py()
    if levels == 1:
        return Choice(name, None, f"constant: {_show(present[0].as_py())} in every row")
    if levels == 2:
        return Choice(name, {"type": "binary"}, f"2 distinct: {_shares(present)}{gaps}")
    distinct = pc.count_distinct(present).as_py()
    of = f"{distinct:,} distinct of {count:,}"
    if _is_numeric(kind):
        values = present.to_numpy()
        whole = pa.types.is_integer(kind)
        increasing = bool(np.all(np.diff(values) > 0))
        if whole and distinct == count and (_id_like(name) or increasing):
            why = "an id-like name" if _id_like(name) else "increasing row by row"
            return Choice(name, None, f"identifier: {of} integers, {why}")
        if whole and _id_like(name):
            return Choice(name, {"type": "category"}, f"{of} integers with an id-like name: codes, "
                          f"not amounts{gaps}")
        numbers = "integers" if whole else "numbers"
        return Choice(name, {"type": "number"},
                      f"{numbers} {_number(values.min())} to {_number(values.max())}, {of}{gaps}")
    strings = present.cast(pa.string())
    lowered = pc.utf8_lower(strings)
    if pc.mean(pc.match_substring_regex(lowered, IMAGE_PATH).cast(pa.float64())).as_py() >= 0.9:
        keys, seen = image_keys(strings[0].as_py(), table.base_dir)
        return Choice(name, {"type": "image", **keys}, f"{count:,} image file paths; {seen}{gaps}")
    words = pc.list_value_length(pc.utf8_split_whitespace(strings)).to_numpy(zero_copy_only=False)
    mean_words = float(words.mean())
    if mean_words < 1.5 and (distinct == count or (_id_like(name) and distinct >= count / 2)):
        why = "all distinct" if distinct == count else "an id-like name"
        return Choice(name, None, f"identifier: {of} single words, {why}")
    if mean_words >= TEXT_WORDS and distinct >= TEXT_DISTINCT * count:
        return Choice(name, {"type": "text"}, f"{of}; text, mean {mean_words:.0f} words, "
                      f"95% up to {np.percentile(words, 95):.0f}{gaps}")
    return Choice(name, {"type": "category"}, f"{of}: {_shares(strings)}{gaps}{_markers(strings)}")


def infer_list(name: str, present: pa.ChunkedArray, gaps: str) -> Choice:
    """Lists of numbers: a fixed length is a vector, a varying one or nested steps a sequence."""
    depth, leaf = list_depth(present.type), present.type
    while _is_list(leaf):
        leaf = leaf.value_type
    if not (_is_numeric(leaf) or pa.types.is_boolean(leaf)):
        return Choice(name, None, f"lists of {leaf}; expected lists of numbers")
    array = present.combine_chunks()
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    shortest, longest = int(lengths.min()), int(lengths.max())
    if depth == 1 and shortest == longest:
        return Choice(name, {"type": "vector", "size": shortest},
                      f"lists of {shortest} numbers in every row{gaps}")
    if depth == 1:
        return Choice(name, {"type": "sequence", "features": 1},
                      f"lists of {shortest} to {longest} numbers: a sequence of steps{gaps}")
    if depth == 2:
        inner = pc.list_value_length(pc.list_flatten(array)).to_numpy(zero_copy_only=False)
        if inner.size and inner.min() == inner.max():
            return Choice(name, {"type": "sequence", "features": int(inner[0])},
                          f"lists of {shortest} to {longest} steps of {inner[0]} numbers{gaps}")
        return Choice(name, None, f"steps of {inner.min()} to {inner.max()} numbers; a sequence "
                      "needs as many in every step")
    return Choice(name, None, f"lists nested {depth} deep; expected steps of numbers at most")


def infer_bytes(name: str, present: pa.ChunkedArray, gaps: str) -> Choice:
    heads = [value[:4] for value in present[:100].to_pylist()]
    if sum(head.startswith(IMAGE_MAGIC) for head in heads) >= 0.9 * len(heads):
        import io

        keys, seen = image_keys(io.BytesIO(present[0].as_py()), Path("."))
        return Choice(name, {"type": "image", **keys}, f"{len(present):,} encoded images; {seen}{gaps}")
    return Choice(name, None, "bytes that are not PNG, JPEG, GIF, BMP, WebP or TIFF images")


def image_keys(source: Any, base_dir: Path) -> tuple[dict, str]:
    """``size`` and ``channels`` from the first image: its own size up to 64×64, grey or colour."""
    from PIL import Image

    if isinstance(source, str):
        path = Path(source) if Path(source).is_absolute() else base_dir / source
        if not path.is_file():
            return {}, f"the first, {source!r}, is not found; check the paths"
        source = path
    try:
        with Image.open(source) as image:
            width, height, mode = *image.size, image.mode
    except (OSError, SyntaxError, ValueError):
        return {}, "the first cannot be decoded"
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    size = [height, width] if height <= 64 and width <= 64 else [64, 64]
    shade = "grey" if channels == 1 else "colour"
    resized = "" if size == [height, width] else ", resized to 64×64"
    return {"size": size, "channels": channels}, f"the first is {width}×{height} {shade}{resized}"


def vector_groups(table: Table, candidates: list[tuple[int, str]]) -> dict[int, list[int]]:
    """Numeric columns whose names differ only by numbers (f0, f1, …), GROUP_SIZE or more:
    each member's index mapped to the group's indices."""
    patterns: dict[str, list[int]] = {}
    for index, name in candidates:
        if re.search(r"\d", name) and _is_numeric(table.arrow.column(index).type):
            patterns.setdefault(re.sub(r"\d+", "#", name), []).append(index)
    return {index: members for members in patterns.values() if len(members) >= GROUP_SIZE
            for index in members}


def group_choice(table: Table, members: list[int]) -> Choice:
    names = [table.arrow.column_names[i] for i in members]
    values = np.concatenate([table.numbers(name, "plait init") for name in names])
    low, high = np.nanmin(values), np.nanmax(values)
    constant = sum(pc.count_distinct(table.arrow.column(i)).as_py() <= 1 for i in members)
    label = re.sub(r"\d+", "#", names[0])
    return Choice(label, {"type": "vector", "columns": names},
                  f"{len(names)} numeric columns {names[0]} … {names[-1]}, values {_number(low)} to "
                  f"{_number(high)}" + (f", {constant} of them constant" if constant else ""))


def infer_output(column: str, forced: str | None, table: Table) -> Choice:
    """The output type of one target from all its values."""
    values = _plain(table.arrow.column(column))
    present, kind = values.drop_null(), values.type
    where = f"{table.source}, column {column!r}"
    if not (pa.types.is_boolean(kind) or _is_numeric(kind) or _is_string(kind)):
        raise DataError(f"{where}: found values of type {kind}; expected labels or numbers to predict")
    distinct = pc.count_distinct(present).as_py()
    if distinct < 2:
        raise DataError(f"{where}: found {distinct} distinct value(s); expected at least two to predict")
    numbers = present.to_numpy(zero_copy_only=False) if _is_numeric(kind) else None
    whole = numbers is not None and bool(np.all(numbers == np.round(numbers)))
    guess = ("binary" if distinct == 2 else "category" if numbers is None
             or (whole and distinct <= CLASS_LEVELS) else "number")
    chosen = forced or guess
    if chosen == "binary" and distinct != 2:
        raise PlaitError(f"--target {column}:binary: {where} has {distinct} distinct values; "
                         "expected exactly two for a binary target (use :category)")
    if chosen == "number" and numbers is None:
        raise PlaitError(f"--target {column}:number: {where} holds {kind} values such as "
                         f"{_show(present[0].as_py())}; expected numbers for a number target")
    how = f"set with --target {_flag(column, chosen)}" if forced else "inferred"
    missing = len(values) - len(present)
    gaps = f"; {missing:,} rows without it do not count in its loss" if missing else ""
    if chosen == "number":
        evidence = (f"numbers {_number(numbers.min())} to {_number(numbers.max())}, mean "
                    f"{_number(numbers.mean())}, {distinct:,} distinct; {chosen} ({how})")
    else:
        evidence = f"{distinct:,} distinct: {_shares(present)}; {chosen} ({how}){_markers(present)}"
    if chosen == "category" and numbers is not None and not forced:
        evidence += f"; for a regression: --target {_flag(column, 'number')}"
    return Choice(column, {"type": chosen}, evidence + gaps)


def render(table: Table, sampled: int, inputs: list[tuple[Choice, dict]], left_out: list[Choice],
           outputs: list[tuple[Choice, dict]]) -> str:
    """The config as YAML: a header, then each entry on one line under its evidence."""
    rows = table.num_rows
    how = f"{sampled:,} of {rows:,} rows sampled at random" if sampled < rows else f"all {rows:,} rows read"
    batch = next(size for size in (256, 128, 64, 32) if rows >= 100 * size or size == 32)
    split = 0.2 if rows < 5000 else 0.1
    lines = [
        f"# plait config inferred by `plait init` from {_comment(table.source)}",
        f"# ({how}). The comment above each entry is the evidence for its type.",
        "# Check them, then:",
        f"#   plait train CONFIG --data {_comment(table.source)} --out BUNDLE",
        "",
        "inputs:",
    ]
    for choice, entry in inputs:
        lines += [f"  # {_evidence(choice)}", *_item(entry)]
    if left_out:
        lines.append("  # Left out:")
        lines += [f"  #   {_evidence(choice)}" for choice in left_out]
    lines += ["", "merge: {strategy: concat}", "head: {layers: [64], dropout: 0.1}", "", "outputs:"]
    for choice, entry in outputs:
        lines += [f"  # {_evidence(choice)}", *_item(entry)]
    lines += [
        "",
        f"# Up to 30 epochs; early stopping keeps the weights of the best epoch on the {split:.0%} of",
        f"# rows held out for validation. Batches of {batch} for {rows:,} rows.",
        "train:",
        "  epochs: 30",
        f"  batch_size: {batch}",
        "  learning_rate: 0.001",
        f"  validation_split: {split}",
        "  early_stopping: true",
        "  seed: 0",
    ]
    return "\n".join(lines) + "\n"


def config_name(column: str) -> str:
    """A config name from a column name: ``Review Text`` → ``review_text``, ``MedInc`` → ``med_inc``."""
    ascii_name = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode()
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", ascii_name)
    name = re.sub(r"[^0-9A-Za-z]+", "_", spaced).strip("_").lower() or "column"
    return ("col_" + name if name[0].isdigit() else name)[:60]


def _named(choice: Choice, taken: set[str]) -> dict:
    """The choice's entry with a unique ``name`` first, and ``column`` when it differs."""
    base = config_name(choice.label.replace("#", ""))
    if choice.entry.get("columns") and len(base) < 3:
        base = f"{base}_vector"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    taken.add(name)
    entry = {"name": name}
    if "columns" not in choice.entry and name != choice.label:
        entry["column"] = choice.label
    return {**entry, **choice.entry}


def _item(entry: dict) -> list[str]:
    flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10**6,
                          allow_unicode=True).strip()
    if len(flow) <= 100:
        return [f"  - {flow}"]
    block = yaml.safe_dump(entry, default_flow_style=None, sort_keys=False, width=96,
                           allow_unicode=True).splitlines()
    return [f"  - {block[0]}", *(f"    {line}" for line in block[1:])]


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded columns (pandas categoricals) as their values."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _id_like(name: str) -> bool:
    """``id``, ``key``, ``uuid``, ``index`` as the last word (``Clothing ID``, ``user_id``, ``userId``)."""
    return bool(re.search(r"(^|[^a-z0-9])(id|key|uuid|guid|index)$", name.lower())
                or re.search(r"[a-z](ID|Id)$", name))


def _shares(values: pa.ChunkedArray) -> str:
    """The three most frequent values with their share: ``'Tops' (45%), 'Dresses' (27%), …``."""
    counts = pc.value_counts(values.drop_null())
    pairs = sorted(zip(counts.field("counts").to_pylist(), counts.field("values").to_pylist(),
                       strict=True), key=lambda pair: (-pair[0], str(pair[1])))
    total = sum(count for count, _ in pairs)
    shown = ", ".join(f"{_show(value)} ({count / total:.0%})" for count, value in pairs[:3])
    return shown + (", …" if len(pairs) > 3 else "")


def _markers(values: pa.ChunkedArray) -> str:
    """Values such as 'NA' or '?' that read as a value here but may mean missing."""
    if not _is_string(values.type):
        return ""
    found = pc.filter(values, pc.is_in(values, value_set=pa.array(MISSING_MARKERS)))
    if not len(found):
        return ""
    marker = found[0].as_py()
    return f"; {marker!r} in {len(found) / len(values):.0%} of rows reads as a value, not as missing"


def _missing(count: int) -> str:
    return f"; {count:,} missing" if count else ""


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value == round(value) and abs(value) < 1e15 else f"{value:.4g}"


def _show(value: Any) -> str:
    """A value for a comment: strings quoted, cut to 30 characters."""
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= 30 else value[:29] + "…")


def _flag(column: str, kind: str) -> str:
    return shlex.quote(f"{column}:{kind}")


def _evidence(choice: Choice) -> str:
    label = choice.label if choice.entry and "columns" in choice.entry else repr(choice.label)
    return _comment(f"{label}: {choice.evidence}")


def _comment(text: str) -> str:
    """One line: a column name or value with a line break must not end the YAML comment."""
    return " ".join(str(text).split())
