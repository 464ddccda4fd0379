"""Label-free rules that choose a score per table, measured by the protocol of docs/anomaly.md
(issue 12): the rules behind the detector's `method="auto"`.

Per split (the splits of benchmarks/odds_anomaly.py: inner and test, as in odds_scores.py), one fit
of the default VAEAnomalyDetector and three scores of the fit rows and of the evaluation rows: `L`,
its -ELBO; `IF`, scikit-learn's IsolationForest; `K10m`, the mean L1 distance of the standardized
row to its 10 nearest fit rows (a fit row leaving itself out), as in odds_hybrid.py. Each rule looks
at the three scores of the fit rows only and picks one; its column is the AUROC of the pick on the
evaluation rows. Statistics of a score s over the fit rows (the pick has the largest):

- `share>t`: the share of rows with (s - median) / (1.4826 MAD) above t (t = 2, 2.5, 3, 3.5, 4, 5;
  the detector's `isolated_share`);
- `spread`: (mean of the top 5% - median) / interquartile range;
- `kurtosis`, `skewness`: of s;
- `agreement`: the summed Spearman correlation with the other candidates' rankings (between two
  candidates a tie, so always L).

Each rule chooses among L, IF and K10m (`/3`) or between L and K10m (`/2`; ties go to L). The
detector's `auto` is `share>3/2`.

    python benchmarks/odds_choice_rules.py --out odds-choice-rules.json    # 20 tables, 2 seeds

Results per split go to --out (JSON, kept: a rerun with the same file only fits what is missing).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import kurtosis, skew, spearmanr
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_hybrid import isolation, knn  # noqa: E402
from odds_scores import FIT, run  # noqa: E402

from vaekit import VAEAnomalyDetector  # noqa: E402
from vaekit.detector import isolated_share  # noqa: E402


def share_above(t: float) -> Callable[[list[np.ndarray]], list[float]]:
    """The detector's own statistic (`detector.isolated_share`) at threshold t."""
    return lambda scores: [isolated_share(s, t) for s in scores]


def spread(scores: list[np.ndarray]) -> list[float]:
    def one(s):
        top = np.sort(s)[-max(1, len(s) // 20):]
        return (top.mean() - np.median(s)) / (np.subtract(*np.percentile(s, [75, 25])) + 1e-12)
    return [one(s) for s in scores]


def agreement(scores: list[np.ndarray]) -> list[float]:
    """Between two candidates agreement is symmetric: a tie (the first, L)."""
    if len(scores) == 2:
        return [0.0, 0.0]
    return list(spearmanr(np.stack(scores, 1)).statistic.sum(0))


RULES = {**{f"share>{t:g}": share_above(t) for t in (2, 2.5, 3, 3.5, 4, 5)}, "spread": spread,
         "kurtosis": lambda scores: [kurtosis(s) for s in scores],
         "skewness": lambda scores: [skew(s) for s in scores], "agreement": agreement}
CANDIDATES = {"/3": ["L", "IF", "K10m"], "/2": ["L", "K10m"]}


def aurocs(x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int) -> dict[str, float]:
    mean, std = x_fit.mean(0), x_fit.std(0)
    std[std == 0] = 1.0
    det = VAEAnomalyDetector(**FIT, random_state=seed).fit(x_fit)
    s = {"L": (det.member_scores(x_fit)[0], det.member_scores(x_eval)[0]),
         "IF": isolation(x_fit, x_eval, seed),
         "K10m": knn((x_fit - mean) / std, (x_eval - mean) / std, "manhattan")}
    auc = {k: float(roc_auc_score(y_eval, ev)) for k, (_, ev) in s.items()}
    cols = dict(auc)
    for name, rule in RULES.items():
        for suffix, names in CANDIDATES.items():
            stats = rule([s[n][0] for n in names])
            cols[name + suffix] = auc[names[int(np.argmax(stats))]]  # the first on a tie: L
    return cols


if __name__ == "__main__":
    run(__doc__.split("\n")[0], aurocs, ("L", "K10m", "share>3/2"), bound=("L", "IF", "K10m"))
