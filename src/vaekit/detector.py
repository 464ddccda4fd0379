"""`VAEAnomalyDetector`: a scikit-learn outlier detector trained by vaekit's one training loop.

Tabular data done right: features standardized with the training statistics (kept in the model),
a Gaussian likelihood with a learned variance per feature, and sizes that follow the data by the
same rule as `vaekit train` (`config.default_sizes`, on the rows trained on). Scores are
`anomaly.SCORES` (nats); scikit-learn's sign convention is kept:
`score_samples` is higher for more normal examples.
"""

from __future__ import annotations

import tempfile
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .anomaly import PER_EXAMPLE, score
from .config import Config, default_sizes
from .data import dataset_from_arrays
from .train import train

__all__ = ["VAEAnomalyDetector", "default_sizes"]  # default_sizes: the rule `vaekit train` uses too


class VAEAnomalyDetector(OutlierMixin, BaseEstimator):
    """Unsupervised outlier detection with a VAE: fit(X) on (mostly) normal rows, then
    score_samples(X) = -score (higher = more normal), decision_function(X) = score_samples(X) -
    offset_ (negative = outlier), predict(X) in {1 inlier, -1 outlier}.

    method: an anomaly score of `vaekit.anomaly.SCORES` (default kl: KL(q(z|x) || p(z)) in nats,
    the best on average on a development split of the ODDS tables; see benchmarks/odds_anomaly.py).
    contamination: expected fraction of outliers in the training data; sets offset_.
    latent_dim, hidden, epochs, batch_size: None = `config.default_sizes` of the training rows.
    patience: 10 epochs unless given (not the rule's: the ODDS figures were measured with it).
    samples: Monte Carlo draws per score (None: the score's default); random_state: int seed.
    """

    _parameter_constraints: dict = {
        "method": [StrOptions(set(PER_EXAMPLE))],
        "contamination": [Interval(Real, 0, 0.5, closed="neither")],
        "latent_dim": [Interval(Integral, 1, None, closed="left"), None],
        "hidden": ["array-like", None],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "patience": [Interval(Integral, 0, None, closed="left")],
        "samples": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, method: str = "kl", contamination: float = 0.1,
                 latent_dim: int | None = None, hidden: tuple[int, ...] | None = None,
                 epochs: int | None = None, batch_size: int | None = None, lr: float = 1e-3,
                 patience: int = 10, samples: int | None = None, random_state: int | None = 0):
        self.method = method
        self.contamination = contamination
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.samples = samples
        self.random_state = random_state

    def _config(self) -> Config:
        """The sizes given here; those left None are set by the training loop from the data."""
        sizes = {"latent_dim": self.latent_dim, "epochs": self.epochs,
                 "batch_size": self.batch_size,
                 "hidden": None if self.hidden is None else [int(h) for h in self.hidden]}
        seed = self.random_state if isinstance(self.random_state, Integral) else 0
        return Config.from_flat({**sizes, "likelihood": "gaussian", "standardize": "on",
                                 "lr": self.lr, "patience": self.patience, "seed": int(seed)})

    def fit(self, X, y=None):
        """Train on X (n, d) without labels (y is ignored); sets offset_ from contamination."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        if len(X) < 2:
            raise ValueError(f"got {len(X)} sample(s); fitting needs at least 2 (one is held out "
                             "for validation)")
        x = np.array(X, dtype=np.float32)
        ds, cfg = dataset_from_arrays(x, self._config(), x_test=x[:1])
        with tempfile.TemporaryDirectory(prefix="vaekit-detector-") as tmp:
            run = train(cfg, out=tmp, dataset=ds, quiet=True, hooks=[])
        self.config_ = run.config  # as trained: the sizes resolved
        self.model_ = run.model.double().eval()  # float64 scores: the same whatever the batch
        self.offset_ = float(np.percentile(self.score_samples(X), 100.0 * self.contamination))
        return self

    def score_samples(self, X) -> np.ndarray:
        """Negated anomaly score per row (N,): higher = more normal."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        x = self.model_.prepare(np.array(X, dtype=np.float32))
        seed = self.random_state if isinstance(self.random_state, Integral) else 0
        s = score(self.model_, x, self.method, self.samples, seed=int(seed))
        return -s.double().numpy()

    def decision_function(self, X) -> np.ndarray:
        """score_samples(X) - offset_: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) < 0, -1, 1)
