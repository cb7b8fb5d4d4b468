"""``plait init``: a commented config inferred from a sample of the data.

Every column but the targets becomes one input, or is left out with the reason; each
target becomes one output. The evidence for each choice is written as a comment above it.
The rules (``infer_input``): a column with no values, or one value, is left out; then each
registered input type, in its ``recognise_order``, may claim the column (each type's
``recognise`` says what it takes: flags, image paths or bytes, lists of numbers, text,
categories, numbers); before text, categories and numbers are asked, a column of integers
all distinct with an id-like name or increasing in file order, or of single words all
distinct (or half distinct with an id-like name), is left out as an identifier. 8 or more
numeric columns named alike but for a number (``f0`` … ``f63``) become one ``vector``.

A target is ``binary`` with two distinct values, ``category`` for labels or integers with at
most 10 values, ``number`` otherwise; ``--target COLUMN:TYPE`` sets the type.
"""

from __future__ import annotations

import difflib
import re
import shlex
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from plait.data import Table, read_table
from plait.errors import DataError, PlaitError
from plait.evidence import Column, is_numeric, is_string, markers, number_text, shares, show
from plait.features.category import id_like
from plait.features.lists import list_depth
from plait.registry import INPUT_TYPES

SAMPLE_ROWS = 10_000
CLASS_LEVELS = 10
"""An integer target with at most this many distinct values is a category."""
GROUP_SIZE = 8
"""Numeric columns named alike but for a number form one vector from this many on."""
OUTPUT_KINDS = ("binary", "category", "number")
RESERVED = {"merged", "head"}


@dataclass
class Choice:
    """What init decided for one column (or a group of columns): a config entry without its
    name, or None when the column is left out; and the evidence, written as its comment."""

    label: str
    entry: dict | None
    evidence: str
    suffix: str = ""
    beside: list[Choice] = field(default_factory=list)
    """Entries reading the same column another way (another encoder beside this one)."""


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
            choice = infer_input(name, sample.arrow.column(index), full, sample)
            choices += [choice, *choice.beside]
    return choices


def infer_input(name: str, column: pa.ChunkedArray, full: pa.ChunkedArray, table: Table) -> Choice:
    """The input type for one column from its sampled values (``full`` only counts levels,
    so that a rare third value never makes a binary input): the columns no type can use are
    left out first, then each registered type, in its ``recognise_order``, may claim it."""
    column, full = _plain(column), _plain(full)
    present = column.drop_null()
    count = len(present)
    gaps = _missing(len(column) - count)
    if count == 0:
        return Choice(name, None, f"empty: no value in {len(column):,} sampled rows")
    levels = pc.count_distinct(full.drop_null()).as_py() if _countable(present.type) else count
    if levels == 1:
        return Choice(name, None, f"constant: {show(present[0].as_py())} in every row")
    facts = Column(name, present, pc.count_distinct(present).as_py() if _countable(present.type) else count,
                   levels, gaps, table.base_dir)
    identifier = _identifier(facts)
    for kind in sorted(INPUT_TYPES.values(), key=lambda cls: cls.recognise_order):
        if identifier and kind.recognise_order > IDENTIFIER_ORDER:
            return Choice(name, None, identifier)
        found = kind.recognise(facts)
        if found is not None:
            beside = [Choice(name, other.entry, other.evidence, other.suffix) for other in found.beside]
            return Choice(name, found.entry, found.evidence, beside=beside)
    return Choice(name, None, identifier or _unusable(present))


IDENTIFIER_ORDER = 50
"""Identifier columns are left out after the types that may hold distinct values in every
row (dates, image paths, lists) had their say, before text, categories and numbers."""


def _identifier(column: Column) -> str | None:
    """Why the column is an identifier (every value distinct, or an id-like name), or None."""
    kind, of = column.values.type, column.of
    if pa.types.is_integer(kind):
        values = column.values.to_numpy()
        if column.distinct == column.count and (id_like(column.name) or bool(np.all(np.diff(values) > 0))):
            why = "an id-like name" if id_like(column.name) else "increasing row by row"
            return f"identifier: {of} integers, {why}"
        return None
    if not is_string(kind):
        return None
    strings = column.values.cast(pa.string())
    words = pc.list_value_length(pc.utf8_split_whitespace(strings)).to_numpy(zero_copy_only=False)
    distinct, count = column.distinct, column.count
    if float(words.mean()) < 1.5 and (distinct == count or (id_like(column.name) and distinct >= count / 2)):
        why = "all distinct" if distinct == count else "an id-like name"
        return f"identifier: {of} single words, {why}"
    return None


def _unusable(present: pa.ChunkedArray) -> str:
    """Why no input type takes these values."""
    kind = present.type
    if _is_list(kind):
        leaf = kind
        while _is_list(leaf):
            leaf = leaf.value_type
        if not (is_numeric(leaf) or pa.types.is_boolean(leaf)):
            return f"lists of {leaf}; expected lists of numbers"
        depth = list_depth(kind)
        if depth > 2:
            return f"lists nested {depth} deep; expected steps of numbers at most"
        return "steps of different numbers of values; a sequence needs as many in every step"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes that are not PNG, JPEG, GIF, BMP, WebP or TIFF images"
    if pa.types.is_temporal(kind):
        return f"{kind} values; no input type reads them"
    return f"{kind} values; expected numbers, text, labels or lists"


def _countable(kind: pa.DataType) -> bool:
    """Whether Arrow counts distinct values of this type."""
    return (is_numeric(kind) or is_string(kind) or pa.types.is_boolean(kind)
            or pa.types.is_temporal(kind))


def vector_groups(table: Table, candidates: list[tuple[int, str]]) -> dict[int, list[int]]:
    """Numeric columns whose names differ only by numbers (f0, f1, …), GROUP_SIZE or more:
    each member's index mapped to the group's indices."""
    patterns: dict[str, list[int]] = {}
    for index, name in candidates:
        if re.search(r"\d", name) and is_numeric(table.arrow.column(index).type):
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
                  f"{len(names)} numeric columns {names[0]} … {names[-1]}, values {number_text(low)} to "
                  f"{number_text(high)}" + (f", {constant} of them constant" if constant else ""))


def infer_output(column: str, forced: str | None, table: Table) -> Choice:
    """The output type of one target from all its values."""
    values = _plain(table.arrow.column(column))
    present, kind = values.drop_null(), values.type
    where = f"{table.source}, column {column!r}"
    if not (pa.types.is_boolean(kind) or is_numeric(kind) or is_string(kind)):
        raise DataError(f"{where}: found values of type {kind}; expected labels or numbers to predict")
    distinct = pc.count_distinct(present).as_py()
    if distinct < 2:
        raise DataError(f"{where}: found {distinct} distinct value(s); expected at least two to predict")
    numbers = present.to_numpy(zero_copy_only=False) if is_numeric(kind) else None
    whole = numbers is not None and bool(np.all(numbers == np.round(numbers)))
    guess = ("binary" if distinct == 2 else "category" if numbers is None
             or (whole and distinct <= CLASS_LEVELS) else "number")
    chosen = forced or guess
    if chosen == "binary" and distinct != 2:
        raise PlaitError(f"--target {column}:binary: {where} has {distinct} distinct values; "
                         "expected exactly two for a binary target (use :category)")
    if chosen == "number" and numbers is None:
        raise PlaitError(f"--target {column}:number: {where} holds {kind} values such as "
                         f"{show(present[0].as_py())}; expected numbers for a number target")
    how = f"set with --target {_flag(column, chosen)}" if forced else "inferred"
    missing = len(values) - len(present)
    gaps = f"; {missing:,} rows without it do not count in its loss" if missing else ""
    if chosen == "number":
        evidence = (f"numbers {number_text(numbers.min())} to {number_text(numbers.max())}, mean "
                    f"{number_text(numbers.mean())}, {distinct:,} distinct; {chosen} ({how})")
    else:
        evidence = f"{distinct:,} distinct: {shares(present)}; {chosen} ({how}){markers(present)}"
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
    base = config_name(choice.label.replace("#", "")) + choice.suffix
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


def _missing(count: int) -> str:
    return f"; {count:,} missing" if count else ""


def _flag(column: str, kind: str) -> str:
    return shlex.quote(f"{column}:{kind}")


def _evidence(choice: Choice) -> str:
    label = choice.label if choice.entry and "columns" in choice.entry else repr(choice.label)
    return _comment(f"{label}: {choice.evidence}")


def _comment(text: str) -> str:
    """One line: a column name or value with a line break must not end the YAML comment."""
    return " ".join(str(text).split())
