"""Multi-label (``set`` output) and multi-target (``vector`` output) on real tables: plait
beside a scikit-learn baseline, on the same split, every choice made on validation.

    python examples/multi/measure.py [DATA_DIR] [--out DIR] [--only reviews|housing]

DATA_DIR is the shared data folder (default ``../shared/data``; only read). Writes
OUT/measure.json (default ``runs/multi``) and the housing split's row lists.

1. Multi-label, the women's clothing reviews on their published split (training 18,788
   rows, validation = ``split_val_rows.txt``, test = ``split_test_rows.txt``, 2,349 each).
   Four labels, facts about each review derived from its columns, never inputs:
   ``recommended`` (Recommended IND = 1), ``five_stars`` (Rating = 5), ``has_feedback``
   (Positive Feedback Count > 0), ``dresses`` (Department Name = "Dresses"). Inputs: the
   review text and the title (and, for plait, the reviewer's age).
   - plait: a ``set`` output over a bag-of-1-2-grams (TF-IDF) encoder of the review and one
     of the title, plus age; early stopping on the validation loss, the learning rate
     (0.0005 or 0.002) chosen by the validation loss, one threshold per label chosen on the
     validation F1 (``threshold_by: f1``).
   - baseline: TF-IDF word 1-2-grams of "title . review" (min_df 2, sublinear tf) and one
     logistic regression per label (one-vs-rest), C chosen on the validation micro F1 at
     threshold 0.5, then one threshold per label chosen on the validation F1, as plait does
     (the figures at 0.5 are in the JSON too).
2. Multi-target, California housing (StatLib, 20,640 block groups), a random split with seed
   0: 70 / 15 / 15 (row lists written to OUT). Targets ``MedHouseVal`` and ``MedInc``, both
   predicted from the other seven columns (HouseAge, AveRooms, AveBedrms, Population,
   AveOccup, Latitude, Longitude).
   - plait: a ``vector`` output over a dense head; the head (two candidates) and learning
     rate (two) chosen by the validation loss, early stopping on it.
   - baseline: one ridge regression per dimension on the standardised inputs, alpha chosen
     per dimension on the validation RMSE. For context, also one untuned
     HistGradientBoostingRegressor per dimension (scikit-learn's defaults).

Both models are scored on the test split by the same code here (scikit-learn's metrics;
for plait, from ``Model.predict``; plait's own ``evaluate`` is kept in the JSON as a check).
Jaccard is the per-row |called and true| / |called or true|, averaged, 1 for a row with
neither; ROC-AUC the mean over labels.

One run (2-core CPU shared with a test suite, JAX, seed 0), test split:

  reviews, 2,349 rows            micro F1  macro F1  Jaccard  Hamming  ROC-AUC
  plait set (lr 0.002)             0.8516    0.8514   0.7267   0.1789   0.8676
  TF-IDF + LR (C=2), valid thr.    0.8519    0.8572   0.7240   0.1777   0.8718
  TF-IDF + LR (C=2), thr. 0.5      0.8449    0.8378   0.7231   0.1758   0.8718
  per-label F1, plait / LR: recommended 0.951 / 0.949, five_stars 0.863 / 0.860,
  has_feedback 0.715 / 0.716, dresses 0.877 / 0.904

  housing, 3,097 rows      MedHouseVal / MedInc / mean
                           MAE                       RMSE                      R²
  plait vector             0.3522 / 0.5788 / 0.4655  0.5332 / 0.8371 / 0.6852  0.7768 / 0.8152 / 0.7960
  ridge per dimension      0.6711 / 0.8645 / 0.7678  0.8856 / 1.2835 / 1.0846  0.3842 / 0.5655 / 0.4749
  HistGradientBoosting     0.3255 / 0.5776 / 0.4515  0.4746 / 0.8407 / 0.6577  0.8231 / 0.8136 / 0.8184

Training: plait's reviews candidates 55 s (lr 0.0005, 8 epochs) and 24 s (lr 0.002, 4
epochs; chosen, validation loss 0.3588 against 0.3631); the logistic regressions, C search
included, 186 s. Housing: plait's four candidates 3 to 9 s each (the chosen one, head
[256, 128, 64] at lr 0.003, 94 epochs); ridge under 0.1 s (alpha 100 for MedHouseVal, 1000
for MedInc); the boosted trees 51 s. The whole script: under 6 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    f1_score,
    hamming_loss,
    jaccard_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.preprocessing import StandardScaler

LABELS = ["recommended", "five_stars", "has_feedback", "dresses"]
SEED = 0
THRESHOLDS = np.linspace(0.05, 0.95, 91)

REVIEW_INPUTS = [
    {"name": "review", "column": "Review Text", "type": "text", "min_frequency": 2,
     "encoder": {"kind": "bag", "ngrams": 2, "weighting": "tfidf"}},
    {"name": "title", "column": "Title", "type": "text", "min_frequency": 2,
     "encoder": {"kind": "bag", "ngrams": 2, "weighting": "tfidf"}},
    {"name": "age", "column": "Age", "type": "number"},
]
REVIEW_OUTPUT = {"name": "labels", "type": "set", "columns": LABELS, "threshold_by": "f1"}
REVIEW_TRAIN = {"epochs": 12, "batch_size": 128, "seed": SEED,
                "early_stopping": {"patience": 2, "monitor": "val_loss"}}
REVIEW_RATES = (0.0005, 0.002)

HOUSING_TARGETS = ["MedHouseVal", "MedInc"]
HOUSING_INPUTS = ["HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]
HOUSING_HEADS = ([64, 32], [256, 128, 64])
HOUSING_RATES = (0.001, 0.003)
HOUSING_TRAIN = {"epochs": 300, "batch_size": 256, "seed": SEED,
                 "early_stopping": {"patience": 15, "monitor": "val_loss"}}


# ---------------------------------------------------------------- multi-label: reviews

def reviews(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The table with the four derived labels, split by the published row lists."""
    table = pd.read_parquet(data / "reviews" / "womens_clothing_reviews.parquet")
    table = table.drop(columns=[c for c in table.columns if c.startswith("__index")]).reset_index(drop=True)
    table["recommended"] = (table["Recommended IND"] == 1).astype(int)
    table["five_stars"] = (table["Rating"] == 5).astype(int)
    table["has_feedback"] = (table["Positive Feedback Count"] > 0).astype(int)
    table["dresses"] = (table["Department Name"] == "Dresses").astype(int)
    valid = np.loadtxt(data / "reviews" / "split_val_rows.txt", dtype=np.int64, ndmin=1)
    test = np.loadtxt(data / "reviews" / "split_test_rows.txt", dtype=np.int64, ndmin=1)
    train = np.setdiff1d(np.arange(len(table)), np.concatenate([valid, test]))
    # Only what the models may read, and the labels: no Rating, no Recommended IND.
    keep = ["Review Text", "Title", "Age", *LABELS]
    return tuple(table.loc[rows, keep].reset_index(drop=True) for rows in (train, valid, test))


def set_scores(truth: np.ndarray, called: np.ndarray, probability: np.ndarray) -> dict:
    return {
        "micro_f1": float(f1_score(truth, called, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, called, average="macro", zero_division=0)),
        "jaccard": float(jaccard_score(truth, called, average="samples", zero_division=1)),
        "hamming_loss": float(hamming_loss(truth, called)),
        "roc_auc": float(np.mean([roc_auc_score(truth[:, i], probability[:, i])
                                  for i in range(truth.shape[1])])),
        "per_label_f1": dict(zip(LABELS, map(float, f1_score(truth, called, average=None, zero_division=0)),
                                 strict=True)),
    }


def best_thresholds(truth: np.ndarray, probability: np.ndarray) -> np.ndarray:
    return np.array([max(THRESHOLDS, key=lambda t, i=i: f1_score(truth[:, i], probability[:, i] >= t))
                     for i in range(truth.shape[1])])


def reviews_baseline(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> dict:
    def text(frame: pd.DataFrame) -> pd.Series:
        return frame[["Title", "Review Text"]].fillna("").agg(" . ".join, axis=1)

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(text(train))
    x_valid, x_test = vectorizer.transform(text(valid)), vectorizer.transform(text(test))
    y_train, y_valid, y_test = (frame[LABELS].to_numpy() for frame in (train, valid, test))

    def fit(c: float) -> list[LogisticRegression]:
        return [LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train[:, i])
                for i in range(len(LABELS))]

    def proba(models: list[LogisticRegression], x: object) -> np.ndarray:
        return np.column_stack([m.predict_proba(x)[:, 1] for m in models])

    by_c = {}
    for c in (0.5, 1, 2, 4, 8, 16):
        by_c[c] = f1_score(y_valid, proba(fit(c), x_valid) >= 0.5, average="micro")
    c = max(by_c, key=by_c.get)
    models = fit(c)
    valid_proba, test_proba = proba(models, x_valid), proba(models, x_test)
    thresholds = best_thresholds(y_valid, valid_proba)
    return {"C": c, "valid_micro_f1_by_C": {str(k): round(v, 4) for k, v in by_c.items()},
            "features": len(vectorizer.vocabulary_),
            "thresholds": dict(zip(LABELS, thresholds.tolist(), strict=True)),
            "test": set_scores(y_test, test_proba >= thresholds, test_proba),
            "test_at_0.5": set_scores(y_test, test_proba >= 0.5, test_proba),
            "seconds": round(time.perf_counter() - started, 1)}


def reviews_plait(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> dict:
    import plait

    candidates = {}
    for rate in REVIEW_RATES:
        spec = {"inputs": REVIEW_INPUTS, "merge": {"strategy": "concat"}, "outputs": [REVIEW_OUTPUT],
                "train": {**REVIEW_TRAIN, "learning_rate": rate}}
        started = time.perf_counter()
        model = plait.Model(spec, verbose=0).fit(train, validation_data=valid)
        seconds = time.perf_counter() - started
        history = model.history_["val_loss"]
        candidates[rate] = {"model": model, "spec": spec, "best_val_loss": float(min(history)),
                            "val_loss": [round(v, 4) for v in history], "train_seconds": round(seconds, 1),
                            "parameters": int(model.keras_model.count_params())}
        print(f"  plait set, learning rate {rate}: best val loss {min(history):.4f} after {len(history)} "
              f"epochs, {seconds:.0f} s", flush=True)
    rate = min(candidates, key=lambda r: candidates[r]["best_val_loss"])
    model = candidates[rate]["model"]
    predicted = model.predict(test)
    probability = np.column_stack([np.asarray(predicted[f"labels_proba_{label}"], dtype=float)
                                   for label in LABELS])
    called = np.array([[label in set(filter(None, str(row).split("|"))) for label in LABELS]
                       for row in predicted["labels"]], dtype=int)
    y_test = test[LABELS].to_numpy()
    own = model.evaluate(test)["labels"]
    return {"learning_rate": rate,
            "candidates": {str(r): {k: v for k, v in c.items() if k not in ("model", "spec")}
                           for r, c in candidates.items()},
            "config": candidates[rate]["spec"],
            "test": set_scores(y_test, called, probability),
            "plait_evaluate": {k: own[k] for k in ("micro_f1", "macro_f1", "jaccard", "hamming_loss",
                                                   "roc_auc")}}


# ---------------------------------------------------------------- multi-target: housing

def housing(data: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    table = pd.read_parquet(data / "tabular" / "california_housing.parquet")
    table = table.drop(columns=[c for c in table.columns if c.startswith("__index")]).reset_index(drop=True)
    order = np.random.default_rng(SEED).permutation(len(table))
    n_train, n_valid = int(0.70 * len(table)), int(0.15 * len(table))
    parts = {"train": np.sort(order[:n_train]), "valid": np.sort(order[n_train:n_train + n_valid]),
             "test": np.sort(order[n_train + n_valid:])}
    for name in ("valid", "test"):
        np.savetxt(out / f"housing_{name}_rows.txt", parts[name], fmt="%d")
    return tuple(table.loc[parts[name]].reset_index(drop=True) for name in ("train", "valid", "test"))


def vector_scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    per = {name: {"mae": float(mean_absolute_error(truth[:, i], predicted[:, i])),
                  "rmse": float(np.sqrt(mean_squared_error(truth[:, i], predicted[:, i]))),
                  "r2": float(r2_score(truth[:, i], predicted[:, i]))}
           for i, name in enumerate(HOUSING_TARGETS)}
    return {**{k: float(np.mean([v[k] for v in per.values()])) for k in ("mae", "rmse", "r2")},
            "per_dimension": per}


def housing_baselines(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> dict:
    scaler = StandardScaler().fit(train[HOUSING_INPUTS])
    x_train, x_valid, x_test = (scaler.transform(f[HOUSING_INPUTS]) for f in (train, valid, test))
    ridge, alphas, boosted = [], {}, []
    started = time.perf_counter()
    for target in HOUSING_TARGETS:
        errors = {a: mean_squared_error(valid[target],
                                        Ridge(alpha=a).fit(x_train, train[target]).predict(x_valid))
                  for a in (0.01, 0.1, 1, 10, 100, 1000)}
        alphas[target] = min(errors, key=errors.get)
        ridge.append(Ridge(alpha=alphas[target]).fit(x_train, train[target]).predict(x_test))
    ridge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for target in HOUSING_TARGETS:
        model = HistGradientBoostingRegressor(random_state=SEED).fit(train[HOUSING_INPUTS], train[target])
        boosted.append(model.predict(test[HOUSING_INPUTS]))
    truth = test[HOUSING_TARGETS].to_numpy()
    return {"ridge": {"alpha": alphas, "test": vector_scores(truth, np.column_stack(ridge)),
                      "seconds": round(ridge_seconds, 1)},
            "hist_gradient_boosting": {"test": vector_scores(truth, np.column_stack(boosted)),
                                       "seconds": round(time.perf_counter() - started, 1),
                                       "note": "scikit-learn defaults, not tuned"}}


def housing_plait(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> dict:
    import plait

    candidates = {}
    for head in HOUSING_HEADS:
        for rate in HOUSING_RATES:
            spec = {"inputs": [{"name": "block", "type": "vector", "columns": HOUSING_INPUTS}],
                    "head": {"layers": head},
                    "outputs": [{"name": "target", "type": "vector", "columns": HOUSING_TARGETS}],
                    "train": {**HOUSING_TRAIN, "learning_rate": rate}}
            started = time.perf_counter()
            model = plait.Model(spec, verbose=0).fit(train, validation_data=valid)
            seconds = time.perf_counter() - started
            history = model.history_["val_loss"]
            key = f"head {head}, lr {rate}"
            candidates[key] = {"model": model, "spec": spec, "best_val_loss": float(min(history)),
                               "epochs_run": len(history), "train_seconds": round(seconds, 1)}
            print(f"  plait vector, {key}: best val loss {min(history):.4f} after {len(history)} epochs, "
                  f"{seconds:.0f} s", flush=True)
    key = min(candidates, key=lambda k: candidates[k]["best_val_loss"])
    model = candidates[key]["model"]
    predicted = model.predict(test)
    estimate = np.column_stack([np.asarray(predicted[f"target_{t}"], dtype=float) for t in HOUSING_TARGETS])
    own = model.evaluate(test)["target"]
    return {"chosen": key,
            "candidates": {k: {n: v for n, v in c.items() if n not in ("model", "spec")}
                           for k, c in candidates.items()},
            "config": candidates[key]["spec"],
            "test": vector_scores(test[HOUSING_TARGETS].to_numpy(), estimate),
            "plait_evaluate": {k: own[k] for k in ("mae", "rmse", "r2")}}


# ---------------------------------------------------------------- tables

def print_reviews(results: dict, rows: int) -> None:
    print(f"\nreviews, multi-label, test split ({rows} rows)")
    print(f"{'':34s}{'micro F1':>9s}{'macro F1':>9s}{'Jaccard':>9s}{'Hamming':>9s}{'ROC-AUC':>9s}")
    lines = [(f"plait set (lr {results['plait']['learning_rate']})", results["plait"]["test"]),
             (f"TF-IDF + LR (C={results['baseline']['C']}), valid thr.", results["baseline"]["test"]),
             (f"TF-IDF + LR (C={results['baseline']['C']}), thr. 0.5", results["baseline"]["test_at_0.5"])]
    for name, s in lines:
        print(f"{name:34s}{s['micro_f1']:9.4f}{s['macro_f1']:9.4f}{s['jaccard']:9.4f}"
              f"{s['hamming_loss']:9.4f}{s['roc_auc']:9.4f}")
    for name, s in lines[:2]:
        print(f"  per-label F1, {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in s["per_label_f1"].items()))


def print_housing(results: dict, rows: int) -> None:
    print(f"\nhousing, multi-target, test split ({rows} rows): {' / '.join(HOUSING_TARGETS)} / mean")
    print(f"{'':26s}{'MAE':>26s}{'RMSE':>26s}{'R²':>26s}")
    for name, s in (("plait vector", results["plait"]["test"]),
                    ("ridge per dimension", results["ridge"]["test"]),
                    ("HistGradientBoosting", results["hist_gradient_boosting"]["test"])):
        cells = [" / ".join(f"{v:.4f}" for v in [*(s["per_dimension"][t][k] for t in HOUSING_TARGETS), s[k]])
                 for k in ("mae", "rmse", "r2")]
        print(f"{name:26s}" + "".join(f"{c:>26s}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default="../shared/data", type=Path)
    parser.add_argument("--out", default="runs/multi", type=Path)
    parser.add_argument("--only", choices=("reviews", "housing"))
    arguments = parser.parse_args()
    out: Path = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "measure.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if arguments.only in (None, "reviews"):
        train, valid, test = reviews(arguments.data)
        print(f"reviews: {len(train)} / {len(valid)} / {len(test)} rows; label rates in training: "
              + ", ".join(f"{label} {train[label].mean():.3f}" for label in LABELS), flush=True)
        baseline = reviews_baseline(train, valid, test)
        results["reviews"] = {"rows": [len(train), len(valid), len(test)], "baseline": baseline,
                              "plait": reviews_plait(train, valid, test)}
        path.write_text(json.dumps(results, indent=1, default=str))
        print_reviews(results["reviews"], len(test))
    if arguments.only in (None, "housing"):
        train, valid, test = housing(arguments.data, out)
        print(f"housing: {len(train)} / {len(valid)} / {len(test)} rows", flush=True)
        results["housing"] = {"rows": [len(train), len(valid), len(test)],
                              **housing_baselines(train, valid, test),
                              "plait": housing_plait(train, valid, test)}
        path.write_text(json.dumps(results, indent=1, default=str))
        print_housing(results["housing"], len(test))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
