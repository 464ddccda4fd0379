"""ODDS anomaly detection: vaekit's VAEAnomalyDetector (defaults) beside scikit-learn's IsolationForest
and pyod's VAE and AutoEncoder (defaults), on tables split by the protocol of issue 12 ([anomaly]).

Protocol. The 20 tables of ../shared/data/odds are split once, by the rule below, into two halves:
- dev: the 5 tables vaekit's defaults were chosen on (cardio, thyroid, satellite, pendigits, shuttle)
  and 5 of the 15 others; defaults may be chosen on this half;
- confirm: the other 10 tables, never used to choose anything; the figures that say whether a
  default generalizes.
The 5 others in dev are fixed by their size alone, before any figure on them was seen: sort the 15
by the number of rows and take the middle table of each run of three (wine, wbc, yeast, wilt,
satimage-2), so both halves span small and large tables (and satimage-2 sits with satellite, the
table it was derived from).

For each table and each seed, one stratified 60/40 split (random_state = the seed), the same for
every detector: each is fit on the 60% without labels and scored on the 40%. Reports, per half, AUROC
and average precision (scikit-learn; anomaly = positive) as mean +- std over seeds per table, their
mean over the half's tables, and the mean fit time (seconds, this machine, --threads torch threads).
--inner never touches the 40%: it splits the 60% again (stratified 60/40) and reports on that part.

    python benchmarks/odds_anomaly.py --threads 1                      # both halves, 5 seeds
    python benchmarks/odds_anomaly.py --half confirm --seeds 5
    python benchmarks/odds_anomaly.py --tables wine,glass --seeds 2 --detectors vaekit,iforest
    python benchmarks/odds_anomaly.py --first-seed 5 --seeds 5        # a replicate: seeds 5-9
pyod is optional (pip install pyod, e.g. in a venv with --system-site-packages); without it its
columns are skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from vaekit import VAEAnomalyDetector
from vaekit.anomaly import PER_EXAMPLE

ODDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "odds"
HALVES = {
    "dev": ["cardio", "thyroid", "satellite", "pendigits", "shuttle",
            "wine", "wbc", "yeast", "wilt", "satimage-2"],
    "confirm": ["hepatitis", "lymphography", "glass", "pima", "vowels",
                "letter", "spambase", "optdigits", "pageblocks", "mammography"],
}


@dataclass(frozen=True)
class Detector:
    """make(seed) -> an unfitted estimator; anomaly(fitted, x) -> scores, higher = more anomalous."""

    make: Callable[[int], object]
    anomaly: Callable[[object, np.ndarray], np.ndarray]


def pyod_detector(cls_name: str) -> Detector | str:
    """pyod.models.<module>.<cls> with its defaults (quiet), or the reason it cannot be used."""
    module = {"VAE": "vae", "AutoEncoder": "auto_encoder"}[cls_name]
    try:
        cls = getattr(__import__(f"pyod.models.{module}", fromlist=[cls_name]), cls_name)
    except ImportError as e:
        return f"pyod is not importable ({e}); pip install pyod to compare"
    return Detector(lambda seed: cls(verbose=0, random_state=seed),
                    lambda det, x: det.decision_function(x))


def detectors() -> dict[str, Detector | str]:
    """Every detector by name, or the reason it is not available."""
    return {
        "vaekit": Detector(lambda seed: VAEAnomalyDetector(random_state=seed),
                           lambda det, x: -det.score_samples(x)),
        "iforest": Detector(lambda seed: IsolationForest(random_state=seed),
                            lambda det, x: -det.score_samples(x)),
        "pyod-vae": pyod_detector("VAE"),
        "pyod-ae": pyod_detector("AutoEncoder"),
    }


def warm_up(dets: dict[str, Detector]) -> None:
    """One untimed fit of each detector on 200 random rows, so no fit time carries import or
    first-call costs."""
    x = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    for det in dets.values():
        det.anomaly(det.make(0).fit(x), x)


def half_of(name: str) -> str:
    return next((h for h, tables in HALVES.items() if name in tables), "other")


def splits(x: np.ndarray, y: np.ndarray, seed: int, inner: bool):
    """(fit part, evaluation part, its labels): the 60/40 split, or with --inner a split of the 60%."""
    xa, xb, ya, yb = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    if inner:
        xa, xb, _, yb = train_test_split(xa, ya, test_size=0.4, stratify=ya, random_state=seed)
    return xa, xb, yb


def collect_splits(results: dict, out: Path, odds_dir: Path, tables: list[str], seeds: int,
                   variants: dict[str, object], measure: Callable) -> Iterator[tuple[str, dict]]:
    """The choice protocol's loop (odds_protocol.py, odds_lengths.py, odds_scores.py): for each
    table, seed and variant whose key ("table|seed|suffix", or "table|seed" for the suffix "") is
    not in `results`, measure(fit rows, evaluation rows, their labels, seed, variant) -> {column:
    AUROC} on the inner split and on the test split, stored as {"inner", "test", "seconds"}; `out`
    is rewritten after each (through a temporary file, so a killed run loses at most the fit under
    way). Yields (key, record) of each new one."""
    for table in tables:
        with np.load(odds_dir / f"{table}.npz", allow_pickle=False) as data:
            x, y = data["X"].astype(np.float32), data["y"].astype(np.int64)
        for seed in range(seeds):
            inner_split, test_split = splits(x, y, seed, inner=True), splits(x, y, seed, inner=False)
            for suffix, variant in variants.items():
                key = f"{table}|{seed}" + (f"|{suffix}" if suffix else "")
                if key in results:
                    continue
                tick = time.perf_counter()
                inner = measure(*inner_split, seed, variant)
                test = measure(*test_split, seed, variant)
                results[key] = {"inner": inner, "test": test, "seconds": time.perf_counter() - tick}
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=0))
                os.replace(tmp, out)
                yield key, results[key]


def run_table(path: Path, seeds: list[int], inner: bool, dets: dict[str, Detector],
              all_scores: bool) -> dict:
    """{"n", "d", "auroc": {column: [per seed]}, "ap": {...}, "fit_s": {detector: [per seed]}}."""
    data = np.load(path, allow_pickle=False)
    x, y = data["X"].astype(np.float32), data["y"].astype(np.int64)
    out: dict = {"n": len(x), "d": x.shape[1], "auroc": {}, "ap": {}, "fit_s": {}}

    def record(column: str, labels: np.ndarray, anomaly: np.ndarray) -> None:
        out["auroc"].setdefault(column, []).append(roc_auc_score(labels, anomaly))
        out["ap"].setdefault(column, []).append(average_precision_score(labels, anomaly))

    for seed in seeds:
        xa, xb, yb = splits(x, y, seed, inner)
        for name, det in dets.items():
            tick = time.perf_counter()
            fitted = det.make(seed).fit(xa)
            out["fit_s"].setdefault(name, []).append(time.perf_counter() - tick)
            record(name, yb, det.anomaly(fitted, xb))
            if all_scores and name == "vaekit":
                for method in PER_EXAMPLE:  # of its first model, as model_ scores
                    record(f"vaekit:{method}", yb, fitted.member_scores(xb, method)[0])
        print(f"  {path.stem} seed {seed}: AUROC "
              + "  ".join(f"{k} {v[-1]:.4f}" for k, v in out["auroc"].items()), flush=True)
    return out


def print_half(half: str, rows: dict[str, dict], columns: list[str], fitted: list[str]) -> None:
    """Markdown tables of one half: AUROC, average precision (mean +- std over seeds), fit time."""
    print(f"\n### {half} ({len(rows)} tables: {', '.join(rows)})")
    for metric, label in [("auroc", "AUROC"), ("ap", "average precision")]:
        print(f"\n{label}\n\n| table | n | d | " + " | ".join(columns) + " |")
        print("|---|---|---|" + "---|" * len(columns))
        for name, r in rows.items():
            cells = [f"{np.mean(r[metric][c]):.4f} +- {np.std(r[metric][c]):.4f}" for c in columns]
            print(f"| {name} | {r['n']} | {r['d']} | " + " | ".join(cells) + " |")
        means = [np.mean([np.mean(r[metric][c]) for r in rows.values()]) for c in columns]
        print("| **mean** | | | " + " | ".join(f"**{m:.4f}**" for m in means) + " |")
    print("\nfit seconds (mean over seeds)\n\n| table | " + " | ".join(fitted) + " |")
    print("|---|" + "---|" * len(fitted))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(r['fit_s'][c]):.1f}" for c in fitted) + " |")
    print("\nmean fit seconds per seed: " + ", ".join(
        f"{c} {np.mean([np.mean(r['fit_s'][c]) for r in rows.values()]):.2f}" for c in fitted))
    if "vaekit" in columns:
        for other in (c for c in fitted if c != "vaekit"):
            wins = sum(np.mean(r["auroc"]["vaekit"]) >= np.mean(r["auroc"][other]) for r in rows.values())
            print(f"vaekit's mean AUROC >= {other}'s on {wins} of {len(rows)} tables")
        for other in (c for c in fitted if c != "vaekit"):
            print(margin_line(rows, other))


def seed_margins(rows: dict[str, dict], other: str) -> np.ndarray:
    """Per seed, the mean over the tables of vaekit's AUROC minus `other`'s on the same split."""
    return np.mean([np.subtract(r["auroc"]["vaekit"], r["auroc"][other]) for r in rows.values()],
                   axis=0)


def margin_line(rows: dict[str, dict], other: str) -> str:
    """vaekit - other on the half's mean AUROC, seed by seed, with its mean and the standard error
    over the seeds: how far a target on the margin is from the seed-to-seed noise."""
    m = seed_margins(rows, other)
    se = np.std(m, ddof=1) / np.sqrt(len(m)) if len(m) > 1 else float("nan")
    return (f"vaekit - {other}, mean AUROC by seed: " + ", ".join(f"{v:+.4f}" for v in m)
            + f" (mean {m.mean():+.4f}, standard error over the seeds {se:.4f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--half", choices=[*HALVES, "all"], default="all",
                   help="which half of the protocol to run (default: both)")
    p.add_argument("--tables", help="comma list of tables instead of --half (each reported under "
                   "its half)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--first-seed", type=int, default=0, help="the seeds are FIRST..FIRST+N-1 "
                   "(default 0: the benchmark's 0..N-1; another gives a replicate on new splits)")
    p.add_argument("--detectors", default=",".join(detectors()),
                   help="comma list (default: all: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--odds-dir", type=Path, default=ODDS, help="folder of the NAME.npz tables")
    p.add_argument("--inner", action="store_true", help="evaluate on a split of the 60%% fit "
                   "part, never on the 40%% test part")
    p.add_argument("--scores", action="store_true", help="also report every vaekit score")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    available = detectors()
    unknown = sorted(set(args.detectors.split(",")) - set(available))
    if unknown:
        p.error(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    dets = {}
    for name in args.detectors.split(","):
        if isinstance(available[name], str):
            print(f"{name} skipped: {available[name]}")
        else:
            dets[name] = available[name]
    names = (args.tables.split(",") if args.tables
             else [t for h, ts in HALVES.items() if args.half in (h, "all") for t in ts])
    missing = [n for n in names if not (args.odds_dir / f"{n}.npz").is_file()]
    if missing:
        p.error(f"no {', '.join(missing)} in {args.odds_dir}; give --odds-dir or other --tables")
    for half, tables in HALVES.items():
        print(f"{half} half: {', '.join(tables)}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(f"{'INNER (a split of the 60%)' if args.inner else 'TEST (the 40%)'}; seeds "
          f"{seeds[0]}..{seeds[-1]} (stratified 60/40 split per seed, the same for every "
          f"detector); tables in {args.odds_dir}")
    warm_up(dets)
    rows = {n: run_table(args.odds_dir / f"{n}.npz", seeds, args.inner, dets, args.scores)
            for n in names}
    columns = list(next(iter(rows.values()))["auroc"])
    for half in [*HALVES, "other"]:
        part = {n: r for n, r in rows.items() if half_of(n) == half}
        if part:
            print_half(half, part, columns, list(dets))


if __name__ == "__main__":
    main()
