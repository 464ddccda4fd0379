"""The KL's weight in the score, chosen per table by the default detector's own rule, measured by
the protocol of docs/anomaly.md (issue 12): `auto` keeps, of the -ELBO = R + K and the neighbours'
distance, the score that sets apart the larger share of the fit rows (robust z-score above 3);
would it do better choosing among R + w K for a few weights w as well?

Per split (the splits of benchmarks/odds_anomaly.py: inner and test, as in odds_scores.py), one fit
of today's default VAEAnomalyDetector (KL warm-up and all; not odds_scores.FIT) and the AUROC of:
`auto`, the detector's own score; `elbo` and `neighbours`, its two candidates; and `auto w ...`,
the same share rule among R + w K for the listed weights (the first is 1: the -ELBO) and the
neighbours' distance, ties to the earlier entry as the detector's are to the -ELBO. R is the
`reconstruction` score, K the `kl` score of the same fit (R + K is its `elbo` score).

    python benchmarks/odds_kl_choice.py --out odds-kl-choice.json --seeds 5   # 20 tables, 5 seeds

Results per split go to --out (JSON, kept: a rerun with the same file only fits what is missing;
--seeds 10 on the same file adds seeds 5-9).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_scores import run  # noqa: E402

from vaekit import VAEAnomalyDetector  # noqa: E402
from vaekit.detector import isolated_share  # noqa: E402

RULES = {"auto w 1,2": (1, 2), "auto w 1,0.5,2": (1, 0.5, 2)}


def share_choice(fit_scores: list[np.ndarray], eval_scores: list[np.ndarray]) -> np.ndarray:
    """The evaluation rows' scores of the candidate whose fit rows' scores have the largest
    isolated share (the detector's rule); a tie keeps the earliest."""
    shares = [isolated_share(s) for s in fit_scores]
    return eval_scores[shares.index(max(shares))]


def aurocs(x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int) -> dict[str, float]:
    det = VAEAnomalyDetector(random_state=seed).fit(x_fit)
    parts = {name: {kind: det.member_scores(x, kind)[0] for kind in ("reconstruction", "kl")}
             for name, x in (("fit", x_fit), ("eval", x_eval))}
    # each reference row's distance to its neighbours other than itself, as auto's share counts it
    neighbours = {"fit": det._neighbour_distances(det.reference_),
                  "eval": det._neighbour_distances(det._standardized(x_eval))}
    cols = {"auto": -det.score_samples(x_eval),
            "elbo": det.member_scores(x_eval, "elbo")[0], "neighbours": neighbours["eval"]}
    for rule, weights in RULES.items():
        cands = {part: [p["reconstruction"] + w * p["kl"] for w in weights] + [neighbours[part]]
                 for part, p in parts.items()}
        cands["fit"] = [c[det.reference_rows_] for c in cands["fit"][:-1]] + [cands["fit"][-1]]
        cols[rule] = share_choice(cands["fit"], cands["eval"])
    return {c: float(roc_auc_score(y_eval, v)) for c, v in cols.items()}


if __name__ == "__main__":
    run(__doc__.split("\n")[0], aurocs, ("auto", "auto w 1,2"), bound=("elbo", "neighbours"),
        reference="auto")
