"""Anomaly scores of a trained model: per example, higher = more anomalous, in nats.

Every score is `fn(model, x, samples, seed, batch_size) -> (N,)` over model-space x, looked up by
name in SCORES. The Monte Carlo scores use common random numbers: the same S draws eps_s ~ N(0, I)
for every example (z_s = mu + sigma * eps_s), so an example's score does not depend on the batch it
is in, and a seed makes scores reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .errors import VaekitError
from .evaluate import batches, log_likelihood
from .latent import label_mask
from .objectives import gaussian_kl

Score = Callable[..., Tensor]


def shared_noise(model, samples: int, seed: int) -> Tensor:
    """(S, 1, L) standard-normal draws, one set shared by all examples."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(samples, 1, model.latent_dim, generator=g).to(model.device)


def log_px_given_z(model, xb: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """log p(x|z_s) for z_s = mu + sigma * eps_s (S, B), nats of the data as given; and KL (B,)."""
    mu, logvar = model.encode(xb)
    if logvar is None:  # autoencoder: the code itself, no KL
        z, kl = mu[None], torch.zeros(len(xb), device=mu.device)
    else:
        z, kl = mu + torch.exp(0.5 * logvar) * eps, gaussian_kl(mu, logvar).sum(-1)
    return model.log_px_z(xb, z), kl


@torch.no_grad()
def per_batch(model, x: Tensor, samples: int, seed: int, batch_size: int,
              reduce: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """reduce(log p(x|z_s) (S, B), KL (B,)) -> (B,), over x in batches: (N,) on the CPU."""
    was_training = model.training
    model.eval()
    eps = shared_noise(model, samples, seed)
    out = [reduce(*log_px_given_z(model, xb.to(model.device).reshape(len(xb), -1), eps)).cpu()
           for xb in batches(x, batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def kl_score(model, x: Tensor, samples: int = 1, seed: int = 0, batch_size: int = 1000) -> Tensor:
    """KL(q(z|x) || p(z)): how far the encoding is from the prior."""
    return per_batch(model, x, 1, seed, batch_size, lambda log_p, kl: kl)


def reconstruction_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                         batch_size: int = 1000) -> Tensor:
    """-E_q log p(x|z), averaged over S draws."""
    return per_batch(model, x, samples, seed, batch_size, lambda log_p, kl: -log_p.mean(0))


def recon_prob_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                     batch_size: int = 1000) -> Tensor:
    """An & Cho (2015) reconstruction probability, as -log (1/S) sum_s p(x|z_s) (logsumexp)."""
    return per_batch(model, x, samples, seed, batch_size,
                     lambda log_p, kl: math.log(log_p.shape[0]) - torch.logsumexp(log_p, 0))


def elbo_score(model, x: Tensor, samples: int = 16, seed: int = 0, batch_size: int = 1000) -> Tensor:
    """-ELBO = -E_q log p(x|z) + KL(q(z|x) || p(z))."""
    return per_batch(model, x, samples, seed, batch_size, lambda log_p, kl: kl - log_p.mean(0))


def iw_nll_score(model, x: Tensor, samples: int = 100, seed: int = 0,
                 batch_size: int = 100) -> Tensor:
    """-log p(x), importance-sampled with `samples` draws from q(z|x) (Burda et al. 2015)."""
    if not model.stochastic:
        raise VaekitError("iw-nll needs a VAE's q(z|x); this run is a plain autoencoder: use "
                          "--method reconstruction")
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nll = -log_likelihood(model, x, samples, max(1, batch_size))
    model.train(was_training)
    return nll


SCORES: dict[str, Score] = {
    "kl": kl_score,
    "reconstruction": reconstruction_score,
    "recon-prob": recon_prob_score,
    "elbo": elbo_score,
    "iw-nll": iw_nll_score,
}
DEFAULT_SAMPLES = {"kl": 1, "reconstruction": 16, "recon-prob": 16, "elbo": 16, "iw-nll": 100}


def score(model, x: Tensor, method: str = "elbo", samples: int | None = None, seed: int = 0,
          batch_size: int | None = None) -> Tensor:
    """Anomaly scores (N,) of model-space x by a SCORES name; higher = more anomalous."""
    if method not in SCORES:
        raise VaekitError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")
    samples = DEFAULT_SAMPLES[method] if samples is None else samples
    if samples < 1:
        raise VaekitError("the number of draws (--samples) must be >= 1")
    if batch_size is None:  # keep S * B draws of the decoder's output around 50k rows
        batch_size = max(1, 50_000 // samples)
    x = x.to(dtype=model.shift.dtype)  # float32, or float64 for a model made .double()
    return SCORES[method](model, x, samples=samples, seed=seed, batch_size=batch_size)


# --- thresholds and metrics -------------------------------------------------------------------
def threshold(reference_scores: Tensor | np.ndarray, rate: float) -> float:
    """The smallest reference (e.g. validation) score with at most a fraction `rate` of the
    reference scores above it. Flag x as an outlier when score(x) > threshold."""
    if not 0 <= rate < 1:
        raise VaekitError(f"--fpr/--contamination must be in [0, 1), got {rate:g}")
    ref = np.asarray(reference_scores, dtype=np.float64)
    return float(np.quantile(ref, 1 - rate, method="higher"))


def anomaly_target(y: np.ndarray, anomaly_label: str | None = None) -> np.ndarray | None:
    """Labels -> 1 for anomalies, 0 for normal: `anomaly_label` (compared as text), or 1 when the
    labels are 0/1. None when the labels do not say which examples are anomalies."""
    if anomaly_label is not None:
        return label_mask(y, anomaly_label).astype(np.int64)
    text = np.asarray([str(v) for v in y])
    return (text == "1").astype(np.int64) if set(text.tolist()) <= {"0", "1"} else None


def detection_metrics(scores: Tensor | np.ndarray, target: np.ndarray) -> dict[str, float]:
    """AUROC and average precision of scores for target (1 = anomaly), scikit-learn's metrics."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    if len(set(target.tolist())) < 2:
        raise VaekitError("AUROC needs both normal and anomalous examples in the labels")
    return {"auroc": float(roc_auc_score(target, s)),
            "average_precision": float(average_precision_score(target, s))}
