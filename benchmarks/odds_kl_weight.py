"""The weight of the KL in the default detector's score, measured by the protocol of
docs/anomaly.md (issue 12): -ELBO = R + K, with R = -E_q log p(x|z) (the `reconstruction` score)
and K = KL(q(z|x) || p(z)) (the `kl` score); is R + w K better for some w != 1?

Per split (the splits of benchmarks/odds_anomaly.py: inner and test, as in odds_scores.py), one fit
of the default VAEAnomalyDetector and the AUROC of L (its `elbo` score, R + K), R, K and R + w K
for w in WEIGHTS (w = 0 is R; as w grows, R + w K ranks as K).

    python benchmarks/odds_kl_weight.py --out odds-kl-weight.json          # 20 tables, 2 seeds

Results per split go to --out (JSON, kept: a rerun with the same file only fits what is missing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_scores import FIT, run  # noqa: E402

from vaekit import VAEAnomalyDetector  # noqa: E402

WEIGHTS = (0.25, 0.5, 2, 4, 8)


def aurocs(x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int) -> dict[str, float]:
    det = VAEAnomalyDetector(**FIT, random_state=seed).fit(x_fit)
    r = det.member_scores(x_eval, "reconstruction")[0]
    k = det.member_scores(x_eval, "kl")[0]
    cols = {"L": det.member_scores(x_eval)[0], "R": r, "K": k}
    cols |= {f"R + {w:g} K": r + w * k for w in WEIGHTS}
    return {c: float(roc_auc_score(y_eval, v)) for c, v in cols.items()}


if __name__ == "__main__":
    run(__doc__.split("\n")[0], aurocs, ("L", "R + 2 K"))
