"""Ludwig on the reviews split, with an architecture comparable to examples/reviews/config.yaml
(review text through a bidirectional GRU, title through averaged embeddings, the categories
embedded, the numbers, a concat combiner with one dense layer of 64, the same two targets).
Runs inside Ludwig's own virtual environment; prints one JSON line.

    python benchmarks/ludwig_reviews.py SPLIT_FOLDER WORK_FOLDER EPOCHS
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def config(epochs: int) -> dict:
    def category(name: str, size: int) -> dict:
        return {"name": name, "type": "category", "encoder": {"type": "dense", "embedding_size": size}}

    return {
        "input_features": [
            {"name": "Review Text", "type": "text", "preprocessing": {"max_sequence_length": 120},
             "encoder": {"type": "rnn", "cell_type": "gru", "bidirectional": True, "state_size": 64,
                         "embedding_size": 64, "reduce_output": "last"}},
            {"name": "Title", "type": "text", "preprocessing": {"max_sequence_length": 12},
             "encoder": {"type": "embed", "embedding_size": 32, "reduce_output": "mean"}},
            category("Division Name", 3), category("Department Name", 4), category("Class Name", 6),
            category("Clothing ID", 8),
            {"name": "Age", "type": "number"},
            {"name": "Positive Feedback Count", "type": "number"},
        ],
        "output_features": [
            {"name": "Recommended IND", "type": "binary"},
            {"name": "Rating", "type": "number", "loss": {"type": "mean_squared_error", "weight": 0.5}},
        ],
        "combiner": {"type": "concat", "fc_layers": [{"output_size": 64}], "dropout": 0.3},
        "trainer": {"epochs": epochs, "batch_size": 128, "learning_rate": 0.002},
    }


def auc(truth: np.ndarray, score: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    positive = truth.sum()
    negative = truth.size - positive
    return float((ranks[truth].sum() - positive * (positive + 1) / 2) / (positive * negative))


def main(split: Path, work: Path, epochs: int) -> None:
    from ludwig.api import LudwigModel

    train = pd.read_parquet(split / "train.parquet")
    valid = pd.read_parquet(split / "valid.parquet")
    test = pd.read_parquet(split / "test.parquet")
    for frame in (train, valid, test):
        for column in ("Division Name", "Department Name", "Class Name", "Clothing ID"):
            frame[column] = frame[column].astype(str)
    start = time.perf_counter()
    model = LudwigModel(config(epochs), logging_level=logging.WARNING)
    model.train(training_set=train, validation_set=valid, output_directory=str(work),
                skip_save_processed_input=True, skip_save_progress=True, skip_save_log=True)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predictions, _ = model.predict(test)
    batch_seconds = time.perf_counter() - start
    single = []
    for row in range(20):
        start = time.perf_counter()
        model.predict(test.iloc[row:row + 1])
        single.append(time.perf_counter() - start)
    truth = test["Recommended IND"].to_numpy() == 1
    predicted = predictions["Recommended IND_predictions"].astype(bool).to_numpy()
    probability_column = next(c for c in ("Recommended IND_probabilities_True", "Recommended IND_probability")
                              if c in predictions.columns)
    positive = np.count_nonzero(predicted & truth)
    precision, recall = positive / max(predicted.sum(), 1), positive / max(truth.sum(), 1)
    import ludwig

    print(json.dumps({
        "version": ludwig.__version__, "epochs": epochs, "train_rows": len(train),
        "train_seconds": train_seconds,
        "predict_batch_rows_per_s": len(test) / batch_seconds,
        "predict_one_row_ms_p50": 1000 * statistics.median(single),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test": {"recommended_f1": 2 * precision * recall / max(precision + recall, 1e-12),
                 "recommended_roc_auc": auc(truth, predictions[probability_column].astype(float).to_numpy())},
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
