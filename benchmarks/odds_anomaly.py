"""ODDS anomaly detection: vaekit's VAEAnomalyDetector (defaults) vs pyod's VAE (defaults).

Protocol: for each table and each of 5 seeds, a stratified 60/40 split; both detectors are fit on
the same 60% without labels and scored on the same 40%; AUROC (scikit-learn). Prints one table of
mean +- std per dataset. The tables are read from REPO/../shared/data/odds/*.npz (X, y; 1 = anomaly).

--dev never touches the 40% test part: it splits the 60% again (stratified 60/40) and reports
AUROC on that inner part; use it, not the test figures, to choose defaults.

    python benchmarks/odds_anomaly.py --threads 1                # the benchmark
    python benchmarks/odds_anomaly.py --dev --scores --no-pyod   # choosing vaekit's defaults
pyod is optional (pip install pyod, e.g. in a venv with --system-site-packages); without it the
pyod column is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from vaekit import VAEAnomalyDetector
from vaekit.anomaly import SCORES, score

ODDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "odds"
TABLES = ["cardio", "thyroid", "satellite", "pendigits", "shuttle"]


def pyod_factory():
    """pyod's VAE with its defaults (quiet), or the reason it cannot be used."""
    try:
        from pyod.models.vae import VAE
    except ImportError as e:
        return None, f"pyod is not importable ({e}); pip install pyod to compare"
    return (lambda seed: VAE(verbose=0, random_state=seed)), None


def splits(x: np.ndarray, y: np.ndarray, seed: int, dev: bool):
    """(fit part, evaluation part, its labels): the 60/40 split, or in --dev a split of the 60%."""
    xa, xb, ya, yb = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    if dev:
        xa, xb, _, yb = train_test_split(xa, ya, test_size=0.4, stratify=ya, random_state=seed)
    return xa, xb, yb


def run_table(name: str, seeds: list[int], dev: bool, make_pyod, all_scores: bool) -> dict:
    data = np.load(ODDS / f"{name}.npz", allow_pickle=False)
    x, y = data["X"].astype(np.float32), data["y"].astype(np.int64)
    results: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for seed in seeds:
        xa, xb, yb = splits(x, y, seed, dev)
        tick = time.perf_counter()
        det = VAEAnomalyDetector(random_state=seed).fit(xa)
        results.setdefault("vaekit", []).append(roc_auc_score(yb, -det.score_samples(xb)))
        seconds["vaekit"] = seconds.get("vaekit", 0) + time.perf_counter() - tick
        if all_scores:
            xm = det.model_.prepare(xb)
            for method in SCORES:
                s = score(det.model_, xm, method, seed=seed).numpy()
                results.setdefault(f"vaekit:{method}", []).append(roc_auc_score(yb, s))
        if make_pyod is not None:
            tick = time.perf_counter()
            model = make_pyod(seed).fit(xa)
            results.setdefault("pyod", []).append(roc_auc_score(yb, model.decision_function(xb)))
            seconds["pyod"] = seconds.get("pyod", 0) + time.perf_counter() - tick
        print(f"  {name} seed {seed}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in results.items()),
              flush=True)
    return {"n": len(x), "d": x.shape[1], "auroc": results, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", default=",".join(TABLES), help="comma list of ODDS tables")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1; default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--dev", action="store_true", help="evaluate on a split of the 60%% fit "
                   "part (for choosing defaults), never on the 40%% test part")
    p.add_argument("--scores", action="store_true", help="also report every vaekit score")
    p.add_argument("--no-pyod", action="store_true", help="skip pyod")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    make_pyod, reason = (None, "--no-pyod") if args.no_pyod else pyod_factory()
    if make_pyod is None:
        print(f"pyod skipped: {reason}")
    print(f"{'DEV (inner split of the 60%)' if args.dev else 'TEST (the 40%)'} AUROC, "
          f"{args.seeds} seeds, tables in {ODDS}")
    rows = {name: run_table(name, list(range(args.seeds)), args.dev, make_pyod, args.scores)
            for name in args.tables.split(",")}
    columns = list(next(iter(rows.values()))["auroc"])
    print()
    print("| dataset | n | d | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    means: dict[str, list[float]] = {c: [] for c in columns}
    for name, r in rows.items():
        cells = []
        for c in columns:
            a = np.asarray(r["auroc"][c])
            means[c].append(a.mean())
            cells.append(f"{a.mean():.4f} +- {a.std():.4f}")
        print(f"| {name} | {r['n']} | {r['d']} | " + " | ".join(cells) + " |")
    print("| **mean** | | | " + " | ".join(f"{np.mean(means[c]):.4f}" for c in columns) + " |")
    print()
    for name, r in rows.items():
        print(f"{name}: seconds for {args.seeds} fits+scores: "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()))


if __name__ == "__main__":
    main()
