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


def probe(features: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray,
          y_test: np.ndarray | None = None, test_fraction: float = 0.25,
          seed: int = 0) -> dict[str, Any]:
    """features: name -> (train, test) arrays (test None: a seeded stratified split of train).
    Returns {name: {dim, logreg_accuracy, knn_accuracy, kmeans_ari, kmeans_nmi}}."""
    y = np.asarray([str(v) for v in y])
    if len(np.unique(y)) < 2:
        raise VaekitError("probing needs labels of at least two classes")
    results = {}
    for name, (a, b) in features.items():
        if b is None:
            tr, te = split_labelled(len(a), y, test_fraction, seed)
            parts = (a[tr], y[tr], a[te], y[te])
        else:
            parts = (a, y, b, np.asarray([str(v) for v in y_test]))
        results[name] = {"dim": int(a.shape[1]), **probe_features(*parts, seed=seed)}
    return results
