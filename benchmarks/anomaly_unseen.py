"""VAEAnomalyDetector's default score choice (`method="auto"`) on problems outside the 20 ODDS tables
it was chosen on (issue 12: defaults must hold on data nobody tuned on): AUROC of the default
(auto), of its two candidates fixed (`elbo`, `neighbours`) and of IsolationForest.

Problems (normal rows, and anomalies subsampled to a few percent where a class plays them):
scikit-learn's built-in tables (no download): breast-cancer (benign normal, malignant 5%),
digits-no-1 and digits-no-8 (the other nine digits normal, that one 5%), wine-sk (classes 0 and 1
normal, class 2 8%), iris (versicolor and virginica normal, setosa 6%); and two synthetic ones:
clusters-gaps (8 Gaussian clusters in 6-D, sd 0.5, anomalies uniform over the box between them)
and plane-far (a 3-D plane in 10-D with noise 0.1, anomalies 4 units out along it and off it by
N(0, 1)). Per seed, the anomalies drawn, then a stratified 60/40 split: fit on the 60% without
labels, AUROC on the 40%.

    python benchmarks/anomaly_unseen.py            # 7 problems, 3 seeds, about 1 minute
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn import datasets
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from vaekit import VAEAnomalyDetector


def with_anomalies(x: np.ndarray, normal: np.ndarray, share: float, rng) -> tuple:
    """The rows where `normal`, and a random few of the others: `share` of the result."""
    xn, xa = x[normal], x[~normal]
    k = min(len(xa), max(5, int(share * len(xn) / (1 - share))))
    xa = xa[rng.choice(len(xa), k, replace=False)]
    return np.vstack([xn, xa]), np.r_[np.zeros(len(xn)), np.ones(len(xa))]


def problems(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    b = datasets.load_breast_cancer()
    out["breast-cancer"] = with_anomalies(b.data, b.target == 1, 0.05, rng)
    d = datasets.load_digits()
    for c in (1, 8):
        out[f"digits-no-{c}"] = with_anomalies(d.data, d.target != c, 0.05, rng)
    w = datasets.load_wine()
    out["wine-sk"] = with_anomalies(w.data, w.target != 2, 0.08, rng)
    iris = datasets.load_iris()
    out["iris"] = with_anomalies(iris.data, iris.target != 0, 0.06, rng)
    centers = rng.normal(0, 3, size=(8, 6))
    normal = centers[rng.integers(8, size=2000)] + rng.normal(0, 0.5, size=(2000, 6))
    out["clusters-gaps"] = (np.vstack([normal, rng.uniform(-4, 4, size=(60, 6))]),
                            np.r_[np.zeros(2000), np.ones(60)])
    plane = rng.normal(size=(3, 10))
    normal = rng.normal(size=(2000, 3)) @ plane + 0.1 * rng.normal(size=(2000, 10))
    far = rng.normal(size=(60, 3))
    far = 4 * far / np.linalg.norm(far, axis=1, keepdims=True) @ plane + rng.normal(size=(60, 10))
    out["plane-far"] = (np.vstack([normal, far]), np.r_[np.zeros(2000), np.ones(60)])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    columns = ["auto", "elbo", "neighbours", "iforest"]
    aurocs: dict[str, dict[str, list[float]]] = {}
    picks: dict[str, str] = {}
    for seed in range(args.seeds):
        for name, (x, y) in problems(np.random.default_rng(seed)).items():
            x_fit, x_test, _, y_test = train_test_split(x, y, test_size=0.4, stratify=y,
                                                        random_state=seed)
            det = VAEAnomalyDetector(random_state=seed).fit(x_fit)
            fixed = {m: VAEAnomalyDetector(method=m, random_state=seed).fit(x_fit)
                     for m in ("elbo", "neighbours")}
            forest = IsolationForest(random_state=seed).fit(x_fit)
            scores = {"auto": det.score_samples(x_test), "iforest": forest.score_samples(x_test)}
            scores |= {m: d.score_samples(x_test) for m, d in fixed.items()}
            row = aurocs.setdefault(name, {c: [] for c in columns})
            for c in columns:
                row[c].append(roc_auc_score(y_test, -scores[c]))
            picks[name] = picks.get(name, "") + det.method_[0]
            print(f"  {name} seed {seed}: auto chose {det.method_} (shares beyond 3 robust sd: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in det.isolated_.items()) + ")", flush=True)
    print(f"\nAUROC on the 40%, mean over {args.seeds} seeds (chosen: e = elbo, n = neighbours)\n")
    print("| problem | n | d | " + " | ".join(columns) + " | chosen |")
    print("|---|---|---|" + "---|" * (len(columns) + 1))
    sizes = {k: v[0].shape for k, v in problems(np.random.default_rng(0)).items()}
    for name, row in aurocs.items():
        n, d = sizes[name]
        print(f"| {name} | {n} | {d} | " + " | ".join(f"{np.mean(row[c]):.3f}" for c in columns)
              + f" | {picks[name]} |")
    print("| **mean** | | | " + " | ".join(
        f"**{np.mean([np.mean(r[c]) for r in aurocs.values()]):.4f}**" for c in columns) + " | |")


if __name__ == "__main__":
    main()
