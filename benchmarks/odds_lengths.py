"""A candidate for VAEAnomalyDetector's default, checked by the protocol of odds_protocol.py (issue 12,
[anomaly]): scores ensembled across training lengths.

For each table of ../shared/data/odds and each seed, the same stratified splits as odds_protocol.py
(60/40, then the 60% again 60/40). On each fit set, one `VAEAnomalyDetector(steps=s)` (score
`elbo`) per length s in --steps. Each member's scores are standardized by its own scores on the fit
set, then averaged over every subset of two or more lengths. Prints, per candidate, the mean AUROC
on the inner splits (what a choice may look at) per half and overall, and on the 40% (which no
choice looks at). docs/anomaly.md quotes the figures.

    python benchmarks/odds_lengths.py --out /tmp/odds-lengths.json    # 20 tables, 2 seeds, ~20 min
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_anomaly import HALVES, ODDS, collect_splits  # noqa: E402  (the same halves, folder, splits)

from vaekit import VAEAnomalyDetector  # noqa: E402


def fit_and_score(x_fit, x_eval, y_eval, steps: list[int], seed: int) -> dict[str, float]:
    """AUROC of each length alone and of each ensemble of standardized scores."""
    standardized, out = {}, {}
    for s in steps:
        det = VAEAnomalyDetector(steps=s, kl_warmup_steps=0, random_state=seed).fit(x_fit)
        on_eval, on_fit = det.member_scores(x_eval)[0], det.member_scores(x_fit)[0]
        out[str(s)] = roc_auc_score(y_eval, on_eval)
        standardized[s] = (on_eval - on_fit.mean()) / (on_fit.std() + 1e-12)
    for k in range(2, len(steps) + 1):
        for combo in itertools.combinations(steps, k):
            mean = np.mean([standardized[s] for s in combo], axis=0)
            out[" + ".join(map(str, combo))] = roc_auc_score(y_eval, mean)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results JSON (continued if it exists)")
    p.add_argument("--steps", default="100,400,1600", help="training lengths, comma list")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--tables", default=None, help="comma list (default: all 20, both halves)")
    p.add_argument("--odds-dir", type=Path, default=ODDS)
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    tables = args.tables.split(",") if args.tables else [t for ts in HALVES.values() for t in ts]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for key, record in collect_splits(results, args.out, args.odds_dir, tables, args.seeds,
                                      {args.steps: steps},
                                      lambda xf, xe, ye, seed, ls: fit_and_score(xf, xe, ye, ls, seed)):
        table, seed, _ = key.split("|", 2)
        print(f"  {table} seed {seed}: {record['seconds']:.0f}s", flush=True)
    rows = [results[f"{t}|{s}|{args.steps}"] for t in tables for s in range(args.seeds)]
    print("\n| candidate | inner dev | inner confirm | inner all | test dev | test confirm | test all |")
    print("|---|---|---|---|---|---|---|")
    for c in rows[0]["inner"]:
        cells = []
        for part in ("inner", "test"):
            for ts in (HALVES["dev"], HALVES["confirm"], tables):
                ts = [t for t in ts if t in tables]
                cells.append(np.mean([results[f"{t}|{s}|{args.steps}"][part][c]
                                      for t in ts for s in range(args.seeds)]) if ts else np.nan)
        print(f"| {c} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
    print(f"\nfit seconds in all: {sum(r['seconds'] for r in rows):.0f}")


if __name__ == "__main__":
    main()
