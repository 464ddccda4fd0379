"""How good a representation is, by scikit-learn: linear and k-NN classifiers, k-means clusters.

The same probes run on the latent means and on the raw (model-space) inputs, so the numbers can
be compared: accuracy on held-out examples, and ARI/NMI of k-means (k = number of classes).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .errors import VaekitError

KNN_NEIGHBOURS = 5


def probe_features(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                   test_y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Logistic-regression and k-NN test accuracy; k-means ARI/NMI on the test examples."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(min(KNN_NEIGHBOURS, len(train_x))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the accuracy still says how it did
        acc_lr = logreg.fit(train_x, train_y).score(test_x, test_y)
    acc_knn = knn.fit(train_x, train_y).score(test_x, test_y)
    k = len(np.unique(test_y))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(test_x)
    return {"logreg_accuracy": float(acc_lr), "knn_accuracy": float(acc_knn),
            "kmeans_ari": float(adjusted_rand_score(test_y, clusters)),
            "kmeans_nmi": float(normalized_mutual_info_score(test_y, clusters))}


def split_labelled(n: int, y: np.ndarray, test_fraction: float, seed: int):
    """Stratified (train, test) indices when every class has at least 2 examples."""
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    return train_test_split(np.arange(n), test_size=test_fraction, random_state=seed,
                            stratify=stratify)


MIN_TEST_EXAMPLES = 20  # below this a held-out accuracy moves in steps of 5% or more: refused
MIN_TEST_PER_CLASS = 2  # a class with fewer held-out examples is warned about


def check_sizes(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, int]:
    """n_train, n_test and n_classes of a probe; refuses a held-out set too small to mean much."""
    sizes = {"n_train": len(y_train), "n_test": len(y_test),
             "n_classes": len(np.unique(np.concatenate([y_train, y_test])))}
    if len(y_test) < MIN_TEST_EXAMPLES:
        raise VaekitError(f"only {len(y_test)} held-out examples (n train {len(y_train)}): a probe "
                          f"needs at least {MIN_TEST_EXAMPLES}; give more labelled data or "
                          "--test-data")
    if len(np.unique(y_train)) < 2:
        raise VaekitError("the probe's training examples hold a single class; give more labelled "
                          "data")
    few = sorted(c for c in np.unique(np.concatenate([y_train, y_test]))
                 if (y_test == c).sum() < MIN_TEST_PER_CLASS)
    if few:
        warnings.warn(f"classes {', '.join(few[:5])} have fewer than {MIN_TEST_PER_CLASS} held-out "
                      "examples each: their part of the accuracies rests on one example or none",
                      ProbeWarning, stacklevel=3)
    return sizes


class ProbeWarning(UserWarning):
    """A probe ran but on little data: its figures are rough."""


def probe(features: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray,
          y_test: np.ndarray | None = None, test_fraction: float = 0.25,
          seed: int = 0) -> dict[str, Any]:
    """features: name -> (train, test) arrays (test None: a seeded stratified split of train).
    Returns {name: {dim, n_train, n_test, n_classes, logreg_accuracy, knn_accuracy, kmeans_ari,
    kmeans_nmi}}; refuses fewer than MIN_TEST_EXAMPLES held-out examples."""
    y = np.asarray([str(v) for v in y])
    if len(np.unique(y)) < 2:
        raise VaekitError("probing needs labels of at least two classes")
    split = y_test is None
    if split:  # one seeded split for every feature set
        tr, te = split_labelled(len(y), y, test_fraction, seed)
        y_train, y_test = y[tr], y[te]
    else:
        y_train, y_test = y, np.asarray([str(v) for v in y_test])
    sizes = check_sizes(y_train, y_test)
    results = {}
    for name, (a, b) in features.items():
        parts = (a[tr], y_train, a[te], y_test) if split else (a, y_train, b, y_test)
        results[name] = {"dim": int(a.shape[1]), **sizes, **probe_features(*parts, seed=seed)}
    return results
