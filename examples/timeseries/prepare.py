"""Turn the UCR/UEA ``.ts`` files in ``data/`` into Parquet files plait reads.

    python examples/timeseries/prepare.py [OUT_DIR]

Writes OUT_DIR/<set>/{train,test}.parquet (default OUT_DIR: runs/timeseries-data) for each
``<Set>_TRAIN.ts`` / ``<Set>_TEST.ts`` pair, ``<set>`` lowercased: a ``series`` column (a
list of numbers for a univariate set, steps × channels lists for a multivariate one) and a
``label`` column (text). The published TRAIN/TEST split is kept as it is.

The ``.ts`` format (sktime/aeon): ``#`` comment lines, then ``@`` header lines (``@univariate``,
``@dimensions``, ``@classLabel true A B …``, ``@timeStamps``, …) up to ``@data``, then one
case per line: its channels separated by ``:``, each channel's values by ``,``, the class
label last; ``?`` is a missing value.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from plait.errors import DataError

HERE = Path(__file__).resolve().parent / "data"


@dataclass
class Cases:
    """The cases of one ``.ts`` file: each a list of channels (each a list of numbers, NaN
    where missing), its label, and the header's ``@`` keys (lowercased) with their values."""

    series: list[list[list[float]]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return len(self.series[0]) if self.series else 0

    def table(self) -> pa.Table:
        """``series`` (numbers per step for one channel, else steps × channels) and ``label``."""
        if self.channels == 1:
            column = pa.array([case[0] for case in self.series], pa.list_(pa.float64()))
        else:
            steps = [[list(step) for step in zip(*case, strict=True)] for case in self.series]
            column = pa.array(steps, pa.list_(pa.list_(pa.float64())))
        return pa.table({"series": column, "label": pa.array(self.labels, pa.string())})


def _number(text: str, where: str) -> float:
    text = text.strip()
    if text == "?":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: found {text[:30]!r}; expected a number or '?'") from None


def read_ts(path: Path) -> Cases:
    """Every case of a classification ``.ts`` file; a malformed line raises ``DataError``
    naming the file, line and what was expected.

    >>> cases = read_ts(HERE / "GunPoint_TRAIN.ts")
    >>> len(cases.series), cases.channels, len(cases.series[0][0]), sorted(set(cases.labels))
    (50, 1, 150, ['1', '2'])
    """
    cases = Cases()
    in_data = False
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            where = f"{path}, line {number}"
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{where}: found {line[:30]!r}; expected an '@' header line "
                                    "before '@data'")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    _check_header(cases.header, path)
                else:
                    cases.header[key] = value.strip()
                continue
            cases.series.append(_case(line, where, cases))
    if not in_data:
        raise DataError(f"{path}: found no '@data' line; expected a .ts file")
    return cases


def _check_header(header: dict[str, str], path: Path) -> None:
    if header.get("timestamps", "false").lower() == "true":
        raise DataError(f"{path}: found '@timeStamps true'; expected plain values (timestamps are not read)")
    if header.get("classlabel", "").split()[:1] != ["true"]:
        raise DataError(f"{path}: found '@classLabel {header.get('classlabel', '')}'; expected "
                        "'@classLabel true' and the labels (a classification problem)")


def _case(line: str, where: str, cases: Cases) -> list[list[float]]:
    """One data line's channels; its label is appended to ``cases.labels``."""
    *channels, label = line.split(":")
    declared = cases.header.get("classlabel", "").split()[1:]
    label = label.strip()
    if declared and label not in declared:
        raise DataError(f"{where}: found the label {label!r}; expected one of {declared}")
    expected = 1 if cases.header.get("univariate", "true").lower() == "true" else int(
        cases.header.get("dimensions", len(channels)))
    if len(channels) != expected:
        raise DataError(f"{where}: found {len(channels)} channel(s); expected {expected}")
    values = [[_number(text, where) for text in channel.split(",")] for channel in channels]
    lengths = sorted({len(channel) for channel in values})
    if len(lengths) > 1:
        raise DataError(f"{where}: found channels of {lengths[0]} to {lengths[-1]} values; expected "
                        "as many in every channel (steps × channels)")
    cases.labels.append(label)
    return values


def main(out: Path) -> None:
    for train in sorted(HERE.glob("*_TRAIN.ts")):
        name = train.name.removesuffix("_TRAIN.ts")
        folder = out / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("train", "test"):
            cases = read_ts(HERE / f"{name}_{part.upper()}.ts")
            pq.write_table(cases.table(), folder / f"{part}.parquet")
            steps = len(cases.series[0][0])
            print(f"{folder / f'{part}.parquet'}: {len(cases.series)} rows, {steps} steps × "
                  f"{cases.channels} channel(s), {len(set(cases.labels))} classes")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/timeseries-data"))
