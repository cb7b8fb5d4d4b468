"""Split the reviews table by the published row lists into train, validation and test files.

    python examples/reviews/prepare.py [OUT_DIR]

Writes OUT_DIR/{train,valid,test}.parquet (default: runs/reviews-data). The row lists are
0-based positions in the original file; training is every row in neither list.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent / "data"


def rows(name: str) -> np.ndarray:
    return np.loadtxt(HERE / name, dtype=np.int64, ndmin=1)


def main(out: Path) -> None:
    table = pq.read_table(HERE / "womens_clothing_reviews.parquet")
    table = table.drop_columns([c for c in table.column_names if c.startswith("__index")])
    valid, test = rows("split_val_rows.txt"), rows("split_test_rows.txt")
    train = np.setdiff1d(np.arange(table.num_rows), np.concatenate([valid, test]))
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        pq.write_table(table.take(part), out / f"{name}.parquet")
        print(f"{out / f'{name}.parquet'}: {len(part)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reviews-data"))
