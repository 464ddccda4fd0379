"""`VAEAnomalyDetector`: a scikit-learn outlier detector trained by vaekit's one training loop.

Tabular data: features standardized with the training statistics (kept in the model), a Laplace
likelihood of fixed unit variance in standardized units (LIKELIHOOD: a learned variance per feature
collapses onto discrete-valued features, whose reconstruction then dominates every score; and under
a Gaussian one rare level of a near-constant feature, its square in the exponent, can outweigh the
rest of a row), net and batch sizes by the same rule as `vaekit train` (`config.default_sizes`, on
the rows trained on), and a short, trimmed fit: STEPS gradient steps (the training rule's ~20000
let the model learn the anomalies in its training data as well; see docs/anomaly.md), each leaving
the fraction TRIM of its batch with the lowest ELBO out of the loss, so the rows the model explains
worst (the outliers among them) do not pull it toward themselves, and whose first KL_WARMUP_STEPS
steps weigh the KL term up from 0 to 1 (so the short fit uses its latent code). Scores are
`anomaly.PER_EXAMPLE` (nats), averaged over `ensemble` models trained with seeds random_state,
random_state + 1, ...; or `neighbours`, the mean L1 distance of the standardized row to its
NEIGHBOURS nearest training rows other than itself, among those the -ELBO does not set apart (so
that a cluster of anomalies cannot vouch for its own members), for anomalies that lie in a gap
between clusters of normal rows, which a smooth density does not see. The default, `auto`, chooses
between the -ELBO and `neighbours` at fit time, without labels: the one that sets apart the larger
share of the training rows (robust z-score above ISOLATED; the distance's share counted over all
the training rows). scikit-learn's sign convention is kept:
`score_samples` is higher for more normal examples. How the defaults were chosen
(leave-one-table-out and dev/confirm halves of 20 ODDS tables), and how they compare with
IsolationForest: docs/anomaly.md.

A fitted detector is saved as a folder (`save`, `VAEAnomalyDetector.load`, `vaekit detect --save`):
detector.json (parameters and fitted attributes), config.yaml (the fit's config), model-K.pt per
ensemble member (weights, read back with torch.load(weights_only=True)) and, for auto and
neighbours, reference.npz (the neighbours' standardized reference rows, those the -ELBO vouches
for; read without pickle).
Nothing in it is unpickled.
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
from dataclasses import replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .anomaly import PER_EXAMPLE, score
from .config import Config, default_sizes
from .data import dataset_from_arrays
from .detector_defaults import (
    ISOLATED,
    KL_WARMUP_STEPS,
    LIKELIHOOD,
    MAX_REFERENCE,
    METHODS,
    NEIGHBOURS,
    STEPS,
    TRIM,
    UNIT_VARIANCE,
)
from .errors import VaekitError
from .runs import atomic_write, load_torch, model_of, read_config, save_torch, write_config
from .tempfiles import new_temp_dir, remove_temp, replace_folder
from .train import train

FORMAT = "vaekit-detector"  # detector.json's "format": what `load` accepts (version FORMAT_VERSION)
FORMAT_VERSION = 1
# k of the neighbours of detectors saved before detector.json recorded it: NEIGHBOURS was 10 then
SAVED_BEFORE_K = 10
# fitted attributes that only some fits set: a refit (say with method="elbo" after "auto") drops
# them first, so that neither the detector nor `save` keeps the last fit's shares or training rows
ONE_FIT_ONLY = ("isolated_", "center_", "scale_", "reference_", "reference_rows_", "neighbours_")

__all__ = ["VAEAnomalyDetector", "default_sizes"]  # default_sizes: the rule `vaekit train` uses too


class VAEAnomalyDetector(OutlierMixin, BaseEstimator):
    """Unsupervised outlier detection with a VAE: fit(X) on (mostly) normal rows, then
    score_samples(X) = -score (higher = more normal), decision_function(X) = score_samples(X) -
    offset_ (negative = outlier), predict(X) in {1 inlier, -1 outlier}.

    method: auto (the default), neighbours, or a per-example score of the VAE
        (`vaekit.anomaly.PER_EXAMPLE`: elbo, -ELBO in nats, ...). neighbours: the mean L1 distance
        of the row, standardized by the training rows' mean and standard deviation, to its {k}
        nearest training rows other than itself (up to {reference} of them, a seeded random subset
        beyond; an identical training row counts as the row itself, once), among those whose
        -ELBO the rule below does not set apart (a cluster of anomalies the VAE isolates would
        otherwise vouch for its own members). auto: elbo or neighbours, chosen in fit without
        labels as the one whose scores of the training rows set the larger share apart (robust
        z-score, (s - median) / (1.4826 MAD), above 3; elbo on a tie; the distances for this
        share are to all the reference rows); method_ says which, isolated_ the two shares. See
        docs/anomaly.md for how it was chosen.
    contamination: expected fraction of outliers in the training data; sets offset_.
    steps: gradient steps of each fit (epochs = steps / steps per epoch, at least 1; no early
    stopping, the best epoch by validation ELBO is kept). None: `vaekit train`'s rule (about 20000
    steps with early stopping), which lets the model learn the anomalies in its training data too.
    latent_dim, hidden, epochs, batch_size, patience: None = `config.default_sizes` of the training
    rows (patience: early stopping on the validation ELBO after about 500 steps without progress);
    epochs given override steps, and patience given stops a steps-long fit early.
    likelihood: laplace-fixed (the default: a Laplace density of fixed scale sigma),
        gaussian-fixed (a Gaussian of fixed standard deviation sigma), gaussian (a learned sigma
        per feature) or gaussian-shared (one learned sigma for all features).
    sigma: the fixed likelihood's scale, standardized units; None (the default): the scale of
        unit variance (1 for gaussian-fixed, 1/sqrt(2) for laplace-fixed).
    prior: p(z): normal (the default, N(0, I)), mog (a learned mixture of Gaussians) or vamp (the
        VampPrior, a mixture of the posteriors of learned pseudo-inputs); `--prior` of train.
    dropout: dropout rate after each hidden layer of the nets, in training only (0: none).
    weight_decay: decoupled weight decay of the fit (AdamW; 0: plain Adam).
    trim: the fraction of each training batch with the lowest ELBO left out of the loss (`--trim`:
        rows the model explains worst, such as the outliers, pull on no gradient; default 0.2;
        0: a plain fit).
    kl_warmup_steps: gradient steps over which the KL term's weight rises linearly from 0 to 1
        at the start of the fit (`--kl-warmup-steps`; default {warmup}: a short fit that starts
        with the KL at full weight may leave the latent code little used; 0: none). A fit of
        fewer steps ends before the weight reaches 1; its scores are still the -ELBO at weight 1.
    ensemble: models trained with consecutive seeds; their scores (nats) are averaged.
    samples: Monte Carlo draws per score (None: the score's default); random_state: int seed.

    Fitted: method_, isolated_ (auto), offset_, models_ (model_ the first), and
    train_score_samples_, score_samples of the training rows as fit computed them (what offset_
    is the percentile of; fit_predict uses them; not saved by `save`).
    """

    _parameter_constraints: dict = {
        "method": [StrOptions(METHODS)],
        "contamination": [Interval(Real, 0, 0.5, closed="neither")],
        "latent_dim": [Interval(Integral, 1, None, closed="left"), None],
        "hidden": ["array-like", None],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "patience": [Interval(Integral, 0, None, closed="left"), None],
        "steps": [Interval(Integral, 1, None, closed="left"), None],
        "likelihood": [StrOptions({"gaussian", "gaussian-fixed", "gaussian-shared",
                                   "laplace-fixed"})],
        "sigma": [Interval(Real, 0, None, closed="neither"), None],
        "prior": [StrOptions({"normal", "mog", "vamp"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "trim": [Interval(Real, 0, 1, closed="left")],
        "kl_warmup_steps": [Interval(Integral, 0, None, closed="left")],
        "ensemble": [Interval(Integral, 1, None, closed="left")],
        "samples": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, method: str = "auto", contamination: float = 0.1,
                 latent_dim: int | None = None, hidden: tuple[int, ...] | None = None,
                 epochs: int | None = None, batch_size: int | None = None, lr: float = 1e-3,
                 patience: int | None = None, steps: int | None = STEPS, samples: int | None = None,
                 likelihood: str = LIKELIHOOD, sigma: float | None = None, prior: str = "normal",
                 dropout: float = 0.0,
                 weight_decay: float = 0.0, trim: float = TRIM,
                 kl_warmup_steps: int = KL_WARMUP_STEPS, ensemble: int = 1,
                 random_state: int | None = 0):
        self.method = method
        self.contamination = contamination
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.steps = steps
        self.samples = samples
        self.likelihood = likelihood
        self.sigma = sigma
        self.prior = prior
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.trim = trim
        self.kl_warmup_steps = kl_warmup_steps
        self.ensemble = ensemble
        self.random_state = random_state

    def _seed(self) -> int:
        return int(self.random_state) if isinstance(self.random_state, Integral) else 0

    def _sigma(self) -> float:
        """sigma, or the fixed likelihood's scale of unit variance (a learned one ignores it)."""
        return UNIT_VARIANCE.get(self.likelihood, 1.0) if self.sigma is None else float(self.sigma)

    def _config(self, member: int) -> Config:
        """The sizes given here; those left None are set by the training loop from the data.
        Ensemble member k trains with seed + k (its own validation split and initialization)."""
        sizes = {"latent_dim": self.latent_dim, "epochs": self.epochs,
                 "batch_size": self.batch_size, "patience": self.patience,
                 "hidden": None if self.hidden is None else [int(h) for h in self.hidden]}
        return Config.from_flat({**{k: v for k, v in sizes.items() if v is not None},
                                 "likelihood": self.likelihood, "sigma": self._sigma(),
                                 "prior": self.prior,
                                 "dropout": self.dropout, "trim": self.trim,
                                 "kl_warmup_steps": self.kl_warmup_steps,
                                 "weight_decay": self.weight_decay,
                                 "standardize": "on", "lr": self.lr,
                                 "seed": self._seed() + member})

    def _with_steps(self, cfg: Config, n: int, d: int) -> Config:
        """cfg with the epochs `steps` takes on its n training rows of d features (and no early
        stop unless patience was given); unchanged when epochs were given or steps is None."""
        if self.steps is None or cfg.train.epochs is not None:
            return cfg
        batch = cfg.train.batch_size or default_sizes(n, d)["batch_size"]
        epochs = max(1, math.ceil(self.steps / math.ceil(n / batch)))
        patience = epochs if cfg.train.patience is None else cfg.train.patience
        return replace(cfg, train=replace(cfg.train, epochs=epochs, patience=patience))

    def fit(self, X, y=None):
        """Train on X (n, d) without labels (y is ignored); sets method_ (and, for auto,
        isolated_) and offset_ from contamination."""
        self._validate_params()
        X = validate_data(self, X, dtype=np.float64)
        if len(X) < 2:
            raise ValueError(f"got {len(X)} sample(s); fitting needs at least 2 (one is held out "
                             "for validation)")
        x = np.array(X, dtype=np.float32)
        for name in ONE_FIT_ONLY:  # a previous fit's, which this fit may not set again
            self.__dict__.pop(name, None)
        self.models_ = []
        for member in range(self.ensemble):
            ds, cfg = dataset_from_arrays(x, self._config(member), x_test=x[:1])
            cfg = self._with_steps(cfg, len(ds.x_train), x.shape[1])  # the rows of its own split
            with tempfile.TemporaryDirectory(prefix="vaekit-detector-") as tmp:
                run = train(cfg, out=tmp, dataset=ds, quiet=True, hooks=[])
            self.models_.append(run.model.double().eval())  # float64: the same whatever the batch
        self.config_ = run.config  # as trained: the sizes resolved
        self.model_ = self.models_[0]
        self.method_ = self.method
        if self.method not in ("auto", "neighbours"):
            self.train_score_samples_ = self.score_samples(X)
        else:
            elbo = self.member_scores(X, "elbo").mean(axis=0)
            self._keep_reference(X)  # every reference row, for auto's share
            if self.method == "auto":
                self._index_reference()
                own = self._neighbour_distances(self.reference_)  # each leaves itself out
                self.isolated_ = {"elbo": isolated_share(elbo[self.reference_rows_]),
                                  "neighbours": isolated_share(own)}
                self.method_ = max(self.isolated_, key=self.isolated_.get)  # elbo on a tie
            if self.method_ == "elbo":
                self.train_score_samples_ = -elbo
            else:  # the reference the -ELBO vouches for; every training row's distance to it
                self._vouch_reference(elbo[self.reference_rows_])
                self.train_score_samples_ = self.score_samples(X)
        # scikit-learn's contract: predict(X) flags the share `contamination` of X itself (and,
        # a row never counting itself among its neighbours, about that share of new rows too)
        self.offset_ = float(np.percentile(self.train_score_samples_, 100.0 * self.contamination))
        return self

    def _vouch_reference(self, elbo: np.ndarray) -> None:
        """Keep, of the reference rows, those whose -ELBO (`elbo`, theirs) the rule of `auto`
        does not set apart (robust z-score at most ISOLATED), and index them: a cluster of
        anomalies that the density model isolates cannot then vouch for its own members, as more
        than k of them close together otherwise do (their distances to each other are small)."""
        vouched = ~isolated(elbo)
        if vouched.sum() > 1:  # a search needs 2 rows; with fewer, every reference row is kept
            self.reference_ = self.reference_[vouched]
        self._index_reference()

    def close_call(self) -> bool:
        """After an `auto` fit: whether its two shares (isolated_) differ by at most one
        standard error of the difference of two proportions over the rows they were counted on,
        sqrt((p1 (1 - p1) + p2 (1 - p2)) / n). Then the choice rests on a few rows, and a fit with
        another seed may keep the other score; on the ODDS tables such choices went wrong far more
        often than the others (docs/anomaly.md)."""
        check_is_fitted(self, "offset_")
        if not hasattr(self, "isolated_"):
            raise ValueError(f"close_call() is about method='auto''s choice; this detector was "
                             f"fit with method={self.method!r}")
        p, q = self.isolated_["elbo"], self.isolated_["neighbours"]
        se = math.sqrt((p * (1 - p) + q * (1 - q)) / len(self.reference_rows_))
        return abs(p - q) <= se  # a tie, even at 0 (neither sets a row apart), is a close call

    def fit_predict(self, X, y=None) -> np.ndarray:
        """fit(X).predict(X), from the training rows' scores fit computed (no second pass)."""
        return self.fit(X)._labels(self.train_score_samples_)

    def _labels(self, normal: np.ndarray) -> np.ndarray:
        """predict's labels from score_samples: -1 below offset_ (outliers), 1 otherwise."""
        return np.where(normal - self.offset_ < 0, -1, 1)

    def _keep_reference(self, X: np.ndarray) -> None:
        """The neighbours' reference: the training rows (a seeded random subset of MAX_REFERENCE
        of them beyond that), standardized by the mean and standard deviation of all of them."""
        self.center_, std = X.mean(axis=0), X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        rows = np.arange(len(X))
        if len(X) > MAX_REFERENCE:
            rows = np.sort(np.random.default_rng(self._seed()).choice(len(X), MAX_REFERENCE,
                                                                      replace=False))
        self.reference_rows_ = rows
        self.reference_ = self._standardized(X[rows])  # indexed where it is searched

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        """Rows in the neighbours' units: standardized by the training rows' mean and std."""
        return (X - self.center_) / self.scale_

    def _index_reference(self, k: int | None = None) -> None:
        """neighbours_: the search index over reference_ (L1, k neighbours, default NEIGHBOURS,
        fewer on tiny data)."""
        k = min(NEIGHBOURS if k is None else k, len(self.reference_) - 1)
        self.neighbours_ = NearestNeighbors(n_neighbors=k, metric="manhattan").fit(self.reference_)

    def _neighbour_distances(self, u: np.ndarray) -> np.ndarray:
        """Mean L1 distance of each standardized row of u to its nearest reference rows other
        than itself: a reference row identical to it counts as the row itself, once (a training
        row's own entry; a new row identical to a training row scores as that training row
        does). So the training rows' scores, which set offset_, are on the footing of new rows',
        and `contamination` flags the same share of both."""
        k = self.neighbours_.n_neighbors
        d = self.neighbours_.kneighbors(u, n_neighbors=k + 1)[0]
        return np.where(d[:, 0] == 0, d[:, 1:].mean(axis=1), d[:, :k].mean(axis=1))

    def member_scores(self, X, method: str | None = None) -> np.ndarray:
        """The VAE's anomaly scores (nats, higher = more anomalous) of each ensemble member,
        (ensemble, N), by `method` of `anomaly.PER_EXAMPLE` (default: the detector's method_ when
        it is one of them, else elbo); member k scores as a detector seeded seed + k."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        x = np.array(X, dtype=np.float32)
        if method is None:
            chosen = getattr(self, "method_", self.method)
            method = chosen if chosen in PER_EXAMPLE else "elbo"
        return np.stack([score(m, m.prepare(x), method, self.samples,
                               seed=self._seed() + k).double().numpy()
                         for k, m in enumerate(self.models_)])

    def score_samples(self, X) -> np.ndarray:
        """Negated anomaly score per row (N,) by method_: higher = more normal."""
        if getattr(self, "method_", None) == "neighbours":
            check_is_fitted(self, "reference_")
            X = validate_data(self, X, dtype=np.float64, reset=False)
            return -self._neighbour_distances(self._standardized(X))
        return -self.member_scores(X).mean(axis=0)

    def decision_function(self, X) -> np.ndarray:
        """score_samples(X) - offset_: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """1 for inliers, -1 for outliers."""
        return self._labels(self.score_samples(X))

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder `path` (created; a detector saved there before
        is replaced, any other non-empty folder refused): written whole beside it, then renamed,
        so an interrupted or failed save leaves the folder as it was. Returns the path."""
        check_is_fitted(self, "model_")
        path = check_save_target(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        work = new_temp_dir(path)
        try:
            self._write(Path(work))
            replace_folder(work, path)  # the detector saved before, if any, stays until then
        finally:
            remove_temp(work)
        return path

    def _write(self, folder: Path) -> None:
        fitted = {"method_": self.method_, "isolated_": getattr(self, "isolated_", None),
                  "offset_": self.offset_, "n_features_in_": int(self.n_features_in_),
                  "members": len(self.models_)}
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        if hasattr(self, "neighbours_"):  # the k it was fit with: offset_ holds only under it
            fitted["neighbours"] = int(self.neighbours_.n_neighbors)
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        write_config(folder, self.config_)
        for k, m in enumerate(self.models_):
            save_torch(folder / f"model-{k}.pt", {"spec": m.spec(), "model": m.state_dict()})
        if hasattr(self, "reference_"):
            def arrays(f) -> None:
                np.savez(f, center=self.center_, scale=self.scale_, reference=self.reference_,
                         rows=self.reference_rows_)
            atomic_write(folder / "reference.npz", arrays)
        body = {"format": FORMAT, "version": FORMAT_VERSION, "params": params, "fitted": fitted}
        atomic_write(folder / "detector.json", json.dumps(body, indent=2) + "\n")  # last: complete

    @classmethod
    def load(cls, path: str | Path) -> VAEAnomalyDetector:
        """A detector written by `save` (or `vaekit detect --save`), ready to score; the same
        scores as the one saved. Any file missing, corrupt or of another kind is one VaekitError."""
        path = Path(path)
        meta = path / "detector.json"
        if not meta.is_file():
            raise VaekitError(f"{path} is not a saved detector (no detector.json); give the folder "
                              "that `vaekit detect --save` or VAEAnomalyDetector.save wrote")
        try:
            body = json.loads(meta.read_text())
            if body.get("format") != FORMAT or body.get("version") != FORMAT_VERSION:
                raise ValueError("another format")
            # a detector saved before the KL warm-up was a parameter was fit without one
            params = {"kl_warmup_steps": 0, **body["params"]}
            det = cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()})
            fitted = body["fitted"]
            det.method_, det.offset_ = str(fitted["method_"]), float(fitted["offset_"])
            det.n_features_in_, members = int(fitted["n_features_in_"]), int(fitted["members"])
            if fitted["isolated_"] is not None:
                det.isolated_ = {str(k): float(v) for k, v in fitted["isolated_"].items()}
            if "feature_names_in_" in fitted:
                det.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
            k = int(fitted.get("neighbours", SAVED_BEFORE_K))
            if k < 1:
                raise ValueError("neighbours < 1")
            det._validate_params()
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise VaekitError(f"{meta} is corrupt or not a vaekit detector's ({type(e).__name__}); "
                              "save the detector again") from None
        files = [path / f"model-{k}.pt" for k in range(members)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise VaekitError(f"{path} lacks {', '.join(missing)} of its {members} model(s); "
                              "save the detector again")
        det.models_ = [model_of(load_torch(f), f, "save the detector again").double().eval()
                       for f in files]
        det.model_ = det.models_[0]
        det.config_ = read_config(path)
        if det.method_ == "neighbours" or det.method == "auto":
            det._read_reference(path / "reference.npz", k)
        return det

    def _read_reference(self, file: Path, k: int) -> None:
        try:
            with open(file, "rb") as f, np.load(f, allow_pickle=False) as z:  # closed even when
                self.center_, self.scale_ = z["center"], z["scale"]         # the zip is corrupt
                self.reference_, self.reference_rows_ = z["reference"], z["rows"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise VaekitError(f"{file} is missing or corrupt ({type(e).__name__}); save the "
                              "detector again") from None
        d = self.n_features_in_
        if self.reference_.ndim != 2 or self.reference_.shape[1] != d or self.center_.shape != (d,):
            raise VaekitError(f"{file} holds rows of another shape than the detector's {d} "
                              "features; save the detector again")
        self._index_reference(k)


# the docstring states the defaults as they are (`help(VAEAnomalyDetector)`; none under python -OO)
if VAEAnomalyDetector.__doc__:
    VAEAnomalyDetector.__doc__ = VAEAnomalyDetector.__doc__.replace(
        "{k}", str(NEIGHBOURS)).replace("{reference}", f"{MAX_REFERENCE:,}").replace(
        "{warmup}", str(KL_WARMUP_STEPS))


def check_save_target(path: str | Path) -> Path:
    """Where `save` may write: a new or empty folder, or one holding a saved detector (replaced);
    anything else is one clear error, before any work."""
    path = Path(path)
    if path.exists() and not (path / "detector.json").is_file() and (
            not path.is_dir() or any(path.iterdir())):
        raise VaekitError(f"{path} exists and is not a saved detector; give a new folder (a "
                          "saved detector there is replaced)")
    return path


def isolated(scores: np.ndarray, threshold: float = ISOLATED) -> np.ndarray:
    """Which `scores` a robust z-score, (s - median) / (1.4826 MAD), puts above threshold; where
    the MAD is 0, the scale is 1.2533 x the mean absolute deviation from the median (both estimate
    a normal's standard deviation); where that is 0 too, none."""
    deviation = scores - np.median(scores)
    scale = 1.4826 * np.median(np.abs(deviation))
    if scale == 0:
        scale = 1.2533 * np.mean(np.abs(deviation))
    return deviation > threshold * scale if scale > 0 else np.zeros(len(scores), dtype=bool)


def isolated_share(scores: np.ndarray, threshold: float = ISOLATED) -> float:
    """The share of `scores` that `isolated` sets apart."""
    return float(np.mean(isolated(scores, threshold)))
