"""Scores from the default detector's latent space, measured by the protocol of docs/anomaly.md
(issue 12): does the density of the code among the fit rows' codes add to the -ELBO?

Per split (the splits of benchmarks/odds_anomaly.py: inner and test, as in odds_scores.py), one fit
of the default VAEAnomalyDetector, and these scores of the evaluation rows (higher = more
anomalous), with q_agg(z) = (1/N) sum_j q(z|x_j), the aggregate posterior of N fit rows (a random
N <= 2000 of them):

- `L`: the default, -ELBO (KL against the prior N(0, I));
- `A`: -ELBO with the KL taken against q_agg instead of N(0, I) (16 draws of z), the ELBO of the
  same encoder and decoder under the prior the encoder actually fills (no holes of the prior);
- `KA`: that KL alone; `LAT`: -log q_agg at the posterior mean; `KNN`: the mean distance of the
  posterior mean to its 10 nearest fit-row posterior means;
- `L+KNN`, `L+LAT`: sums of the two scores, each standardized over the evaluation rows (a ranking
  only; a detector would standardize by the fit rows).

    python benchmarks/odds_latent.py --out odds-latent.json          # 20 tables, 2 seeds

Results per split go to --out (JSON, kept: a rerun with the same file only fits what is missing).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_scores import FIT, run, standardized  # noqa: E402

from vaekit import VAEAnomalyDetector  # noqa: E402

DRAWS, MAX_CODES, NEIGHBOURS = 16, 2000, 10


def log_q_agg(z: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """log (1/N) sum_j N(z; mu_j, diag sd_j^2) for z (..., L), mu and sd (N, L)."""
    flat = z.reshape(-1, z.shape[-1])
    const = -0.5 * math.log(2 * math.pi) * z.shape[-1] - sd.log().sum(-1)  # (N,)
    parts = [torch.logsumexp(const - 0.5 * (((flat[i:i + 256, None] - mu) / sd) ** 2).sum(-1), -1)
             for i in range(0, len(flat), 256)]
    return (torch.cat(parts) - math.log(len(mu))).reshape(z.shape[:-1])


def aurocs(x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int) -> dict[str, float]:
    det = VAEAnomalyDetector(**FIT, random_state=seed).fit(x_fit)
    with torch.no_grad():
        return latent_aurocs(det, x_fit, x_eval, y_eval, seed)


def latent_aurocs(det, x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                  seed: int) -> dict[str, float]:
    model = det.model_
    q_fit = model.encode(model.prepare(x_fit).double())
    codes = np.random.default_rng(seed).permutation(len(x_fit))[:MAX_CODES]
    mu, sd = q_fit.mean[codes], q_fit.stddev[codes]
    xe = model.prepare(x_eval).double()
    q = model.encode(xe)
    eps = torch.randn((DRAWS, *q.mean.shape), generator=torch.Generator().manual_seed(seed),
                      dtype=q.mean.dtype)
    z = q.mean + q.stddev * eps
    log_ratio = q.log_prob(z) - log_q_agg(z, mu, sd)  # (DRAWS, B)
    cols = {"L": det.member_scores(x_eval)[0],
            "A": (log_ratio - model.log_px_z(xe, z)).mean(0).numpy(),
            "KA": log_ratio.mean(0).numpy(),
            "LAT": -log_q_agg(q.mean, mu, sd).numpy(),
            "KNN": NearestNeighbors(n_neighbors=NEIGHBOURS).fit(q_fit.mean.numpy())
            .kneighbors(q.mean.numpy())[0].mean(1)}
    z = {c: standardized(v, v) for c, v in cols.items()}  # over the evaluation rows
    cols["L+KNN"] = z["L"] + z["KNN"]
    cols["L+LAT"] = z["L"] + z["LAT"]
    return {c: float(roc_auc_score(y_eval, v)) for c, v in cols.items()}


if __name__ == "__main__":
    run(__doc__.split("\n")[0], aurocs, ("L", "A"))
