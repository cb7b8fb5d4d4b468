"""Baselines on the reviews split, for the figures beside plait's in README.md.

    python examples/reviews/baselines.py [DATA_DIR]   # after prepare.py; needs scikit-learn

Prints, on the test split, for "recommended": the majority class, and TF-IDF (word 1-2
grams of the review text and title) + logistic regression, its regularisation chosen on
the validation split; for "rating": the training mean, and TF-IDF + ridge regression.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score, roc_auc_score


def text(frame: pd.DataFrame) -> pd.Series:
    return frame["Title"].fillna("") + " . " + frame["Review Text"].fillna("")


def main(folder: Path) -> None:
    train, valid, test = (pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "valid", "test"))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(text(train))
    x_valid, x_test = vectorizer.transform(text(valid)), vectorizer.transform(text(test))
    label = "Recommended IND"
    majority = int(train[label].mode()[0])
    print(f"test rows: {len(test)}")
    print(f"majority class: F1 {f1_score(test[label], np.full(len(test), majority)):.4f}  "
          f"accuracy {accuracy_score(test[label], np.full(len(test), majority)):.4f}")
    best = max((f1_score(valid[label], LogisticRegression(C=c, max_iter=2000).fit(x_train, train[label])
                         .predict(x_valid)), c) for c in (0.5, 1, 2, 4, 8, 16))
    classifier = LogisticRegression(C=best[1], max_iter=2000).fit(x_train, train[label])
    predicted = classifier.predict(x_test)
    print(f"TF-IDF + logistic regression (C={best[1]}): F1 {f1_score(test[label], predicted):.4f}  "
          f"accuracy {accuracy_score(test[label], predicted):.4f}  "
          f"ROC-AUC {roc_auc_score(test[label], classifier.predict_proba(x_test)[:, 1]):.4f}")
    rating = "Rating"
    mean = np.full(len(test), train[rating].mean())
    print(f"training mean: rating MAE {mean_absolute_error(test[rating], mean):.4f}  "
          f"R2 {r2_score(test[rating], mean):.4f}")
    ridge = Ridge(alpha=1.0).fit(x_train, train[rating])
    estimate = ridge.predict(x_test)
    print(f"TF-IDF + ridge: rating MAE {mean_absolute_error(test[rating], estimate):.4f}  "
          f"R2 {r2_score(test[rating], estimate):.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reviews-data"))
