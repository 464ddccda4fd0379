"""Variants of the default detector's choice of score (`auto`), measured by the protocol of
docs/anomaly.md (issue 12). `auto` keeps, of the -ELBO = R + K and the neighbours' distance, the
score that sets apart the larger share of the fit rows (robust z-score above 3); the distance's
share counts r, each reference row's distance to all the others. The columns:

- `auto`: the detector's own score (today's default: where it keeps the distance, the distance to
  the rows the -ELBO vouches for, `vouched r` below); `auto (plain r)`: the same choice scoring
  with r (the default before), the column the others are paired against; `elbo`, `neighbours`
  (r) and `vouched r`: each score alone;
- `auto w ...`: the same share rule among R + w K for the listed weights (the first is 1: the
  -ELBO) and r: the KL's weight chosen per table. R is the `reconstruction` score, K the `kl`
  score of the same fit (R + K is its `elbo` score);
- `auto log r`: the -ELBO's share against the share of log r (r floored at the smallest positive
  distance among the fit rows). The nearest-neighbour density estimate is -log p(x) = d log r(x) +
  const, so log r is the distance's counterpart of a -log density; the robust z-score does not
  see the factor d;
- `auto lof`: the -ELBO against the local outlier factor (Breunig et al. 2000; scikit-learn's
  LocalOutlierFactor: its default 20 neighbours, L1 distances, over the detector's standardized
  reference rows), which divides a row's reachability distance by its neighbours', so that a row
  at the sparse edge of one smooth bulk scores about 1 and a row in a gap between clusters high;
  `auto elbo/r/lof`: the three, by the same share. `lof` is its AUROC alone;
- `auto vouched r`: the -ELBO's share against the share of `vouched r`, the distance to the
  reference rows the -ELBO does not set apart (robust z-score at most 3), so that a cluster of
  anomalies the density model isolates cannot vouch for its own members (the detector's rule for
  a row's own entry as before).

Ties go to the -ELBO, as the detector's do. Per split (the splits of benchmarks/odds_anomaly.py:
inner and test, as in odds_scores.py), one fit of today's default VAEAnomalyDetector (KL warm-up and
all; not odds_scores.FIT).

    python benchmarks/odds_auto_variants.py --out odds-auto-variants.json --seeds 5   # 20 tables
    python benchmarks/odds_auto_variants.py --null     # the shares where there is nothing to find
    python benchmarks/odds_auto_variants.py --unseen   # anomaly_unseen.py's 7 problems, 3 seeds

Results per split go to --out (JSON, kept: a rerun with the same file only fits what is missing;
--seeds 10 on the same file adds seeds 5-9). --null prints, for 2000 rows of N(0, I) in 2 to 20
dimensions, with no anomalies and with 3% of the rows scattered far out, the share each score sets
apart, and the AUROC of the two scores where there are anomalies. --unseen prints every column's
mean AUROC on the seven problems of benchmarks/anomaly_unseen.py (its splits and seeds), which no
default was chosen on.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_scores import run  # noqa: E402

from vaekit import VAEAnomalyDetector  # noqa: E402
from vaekit.detector import isolated_share  # noqa: E402

RULES = {"auto w 1,2": (1, 2), "auto w 1,0.5,2": (1, 0.5, 2)}
LOF_NEIGHBOURS = 20  # scikit-learn's default


def share_choice(fit_scores: list[np.ndarray], eval_scores: list[np.ndarray]) -> np.ndarray:
    """The evaluation rows' scores of the candidate whose fit rows' scores have the largest
    isolated share (the detector's rule); a tie keeps the earliest."""
    shares = [isolated_share(s) for s in fit_scores]
    return eval_scores[shares.index(max(shares))]


def log_distance(r: np.ndarray, fit_r: np.ndarray) -> np.ndarray:
    """log r, r floored at the smallest positive distance among the fit rows' (a row whose
    nearest rows are all copies of it has r = 0)."""
    positive = fit_r[fit_r > 0]
    return np.log(np.maximum(r, positive.min() if len(positive) else 1.0))


def fitted_scores(det: VAEAnomalyDetector, x_fit: np.ndarray, x_eval: np.ndarray) -> dict:
    """{"fit"|"eval": {"reconstruction", "kl", "elbo", "r", "vouched r", "lof"}} of an `auto`
    detector: the fit rows' as its share counts them (its reference rows; each row's distance to
    its nearest rows other than itself). r is the distance to all the reference rows (what auto's
    share counts, and the score before the reference was vouched for), "vouched r" the distance
    to those the -ELBO does not set apart (the detector's `neighbours` score since)."""
    out = {}
    for part, x in (("fit", x_fit), ("eval", x_eval)):
        out[part] = {kind: det.member_scores(x, kind)[0] for kind in ("reconstruction", "kl", "elbo")}
    out["fit"] = {k: v[det.reference_rows_] for k, v in out["fit"].items()}
    full = det._standardized(x_fit[det.reference_rows_])  # det.reference_ is vouched for if r kept
    for name in ("r", "vouched r"):
        other = copy.copy(det)  # the same detector, another reference
        other.reference_ = full
        if name == "r":
            other._index_reference()
        else:  # the detector's own rule
            other._vouch_reference(out["fit"]["elbo"])
        out["fit"][name] = other._neighbour_distances(full)
        out["eval"][name] = other._neighbour_distances(det._standardized(x_eval))
    lof = LocalOutlierFactor(n_neighbors=min(LOF_NEIGHBOURS, len(full) - 1),
                             metric="manhattan", novelty=True).fit(full)
    out["fit"]["lof"] = -lof.negative_outlier_factor_  # each reference row leaving itself out
    out["eval"]["lof"] = -lof.score_samples(det._standardized(x_eval))
    return out


def aurocs(x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int) -> dict[str, float]:
    det = VAEAnomalyDetector(random_state=seed).fit(x_fit)
    s = fitted_scores(det, x_fit, x_eval)
    cols = {"auto": -det.score_samples(x_eval), "elbo": s["eval"]["elbo"],
            "neighbours": s["eval"]["r"],
            "auto (plain r)": share_choice([s["fit"]["elbo"], s["fit"]["r"]],
                                           [s["eval"]["elbo"], s["eval"]["r"]])}
    for rule, weights in RULES.items():
        cands = {part: [p["reconstruction"] + w * p["kl"] for w in weights] + [p["r"]]
                 for part, p in s.items()}
        cols[rule] = share_choice(cands["fit"], cands["eval"])
    logs = {part: log_distance(p["r"], s["fit"]["r"]) for part, p in s.items()}
    cols["auto log r"] = share_choice([s["fit"]["elbo"], logs["fit"]],
                                      [s["eval"]["elbo"], s["eval"]["r"]])
    cols["lof"] = s["eval"]["lof"]
    cols["vouched r"] = s["eval"]["vouched r"]
    for rule, kinds in {"auto lof": ("elbo", "lof"), "auto elbo/r/lof": ("elbo", "r", "lof"),
                        "auto vouched r": ("elbo", "vouched r")}.items():
        cols[rule] = share_choice([s["fit"][k] for k in kinds], [s["eval"][k] for k in kinds])
    return {c: float(roc_auc_score(y_eval, v)) for c, v in cols.items()}


def null_report(n: int = 2000, dims: tuple[int, ...] = (2, 5, 10, 20)) -> None:
    """The shares of the -ELBO, r and log r over the fit rows of N(0, I) with no anomalies, and
    with 3% of the rows scattered at radius sqrt(d) + 4 in random directions (the bulk's rows lie
    near radius sqrt(d)); where there are anomalies, the AUROC of the -ELBO and of r."""
    print("| d | anomalies | share -ELBO | share r | share log r | auto keeps | AUROC -ELBO | AUROC r |")
    print("|---|---|---|---|---|---|---|---|")
    for d in dims:
        for frac in (0.0, 0.03):
            rng = np.random.default_rng(d)
            x = rng.normal(size=(n, d))
            m = int(frac * n)
            u = rng.normal(size=(m, d))
            x[:m] = u / np.linalg.norm(u, axis=1, keepdims=True) * (np.sqrt(d) + 4)
            det = VAEAnomalyDetector(random_state=0).fit(x.astype(np.float32))
            s = fitted_scores(det, x, x)["fit"]
            cells = [isolated_share(s["elbo"]), isolated_share(s["r"]),
                     isolated_share(log_distance(s["r"], s["r"]))]
            y = np.r_[np.ones(m), np.zeros(n - m)]
            auc = [f"{roc_auc_score(y, v):.3f}" for v in (s["elbo"], s["r"])] if m else ["", ""]
            print(f"| {d} | {frac:.0%} | " + " | ".join(f"{c:.3f}" for c in cells)
                  + f" | {det.method_} | " + " | ".join(auc) + " |", flush=True)


def unseen_report(seeds: int = 3) -> None:
    """Every column's AUROC on anomaly_unseen.py's problems: its draws, splits and seeds."""
    from anomaly_unseen import problems
    from sklearn.model_selection import train_test_split

    rows: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        for name, (x, y) in problems(np.random.default_rng(seed)).items():
            x_fit, x_test, _, y_test = train_test_split(x, y, test_size=0.4, stratify=y,
                                                        random_state=seed)
            for col, v in aurocs(x_fit, x_test, y_test, seed).items():
                rows.setdefault(name, {}).setdefault(col, []).append(v)
    cols = list(next(iter(rows.values())))
    print("| problem | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(row[c]):.3f}" for c in cols) + " |")
    print("| **mean** | " + " | ".join(
        f"{np.mean([np.mean(r[c]) for r in rows.values()]):.4f}" for c in cols) + " |")


if __name__ == "__main__":
    if "--null" in sys.argv[1:]:
        null_report()
    elif "--unseen" in sys.argv[1:]:
        unseen_report()
    else:
        run(__doc__.split("\n")[0], aurocs, ("auto (plain r)", "auto", "auto vouched r"),
            bound=("elbo", "neighbours"), reference="auto (plain r)")
