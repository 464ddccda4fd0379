"""Anomaly scores of a trained model: per example, higher = more anomalous, in nats.

Every score is `fn(model, x, samples, seed, batch_size, common) -> (N,)` over model-space x, looked
up by name in SCORES. The Monte Carlo scores draw z_s = mu + sigma * eps_s, s = 1..S, with each
example's eps from its own generator, seeded by the seed and the example's bytes: a score depends
only on the model, the example and the seed (not on the batch size, the order or the other
examples), and draws are independent across examples, so a score's mean over a data set estimates
its expectation without a shared offset (the `elbo` score's mean is -ELBO within its standard
error, whatever the seed). Identical examples get identical draws. common=True shares one set of S
draws among all examples instead (common random numbers): less noise in the differences between
examples, for ranking, but every score then carries the same seed-dependent offset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .distributions import kl_terms
from .errors import VaekitError
from .evaluate import batches
from .latent import label_mask

Score = Callable[..., Tensor]
MAX_ROWS = 50_000  # draws x examples decoded in one pass (S * B): memory ~ this x layer widths


def shared_noise(model, samples: int, seed: int) -> Tensor:
    """(S, 1, L) standard-normal draws, one set shared by all examples (common random numbers)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(samples, 1, model.latent_dim, generator=g).to(model.device)


def example_seed(row: np.ndarray, seed: int) -> int:
    """A 63-bit generator seed from the seed and an example's bytes."""
    h = hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8,
                        key=(int(seed) % 2**64).to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little") >> 1


def example_noise(model, xb: Tensor, samples: int, seed: int) -> Tensor:
    """(S, B, L) standard-normal draws, example b's from a generator seeded by example_seed."""
    rows = xb.detach().cpu().reshape(len(xb), -1).numpy()
    eps = torch.empty(samples, len(xb), model.latent_dim)
    for b, row in enumerate(rows):
        g = torch.Generator().manual_seed(example_seed(row, seed))
        eps[:, b] = torch.randn(samples, model.latent_dim, generator=g)
    return eps.to(model.device)


@dataclass
class Draws:
    """What the scores are made of, for S draws of z per example of a batch of B."""

    log_px_z: Tensor  # (S, B) log p(x|z_s), nats of the data as given (log-Jacobian included)
    kl: Tensor  # (B,) KL(q(z|x) || p(z)): closed form where one exists, else from the draws
    log_w: Tensor | None  # (S, B) log p(x, z_s) - log q(z_s|x) (None for the autoencoder)


def draws(model, xb: Tensor, eps: Tensor) -> Draws:
    """z_s = the posterior's reparameterization of eps (S, B or 1, L): (S, B, L); a point mass
    (the autoencoder) gives its code once."""
    q, prior = model.encode(xb), model.prior.dist()
    z = q.from_noise(eps.to(q.mean.dtype))
    log_px_z = model.log_px_z(xb, z)
    kl = kl_terms(q, prior, z).total
    if not model.stochastic:
        return Draws(log_px_z, kl, None)
    return Draws(log_px_z, kl, log_px_z + prior.log_prob(z) - q.log_prob(z))


@torch.no_grad()
def per_batch(model, x: Tensor, samples: int, seed: int, batch_size: int,
              reduce: Callable[[Draws], Tensor], common: bool = False) -> Tensor:
    """reduce(Draws) -> (B,), over x in batches of at most batch_size and MAX_ROWS // samples
    examples (the scores do not depend on it): (N,) on the CPU."""
    was_training = model.training
    model.eval()
    batch_size = max(1, min(batch_size, MAX_ROWS // samples))
    shared = shared_noise(model, samples, seed) if common else None
    out = []
    for xb in batches(x, batch_size):
        eps = shared if common else example_noise(model, xb, samples, seed)
        out.append(reduce(draws(model, xb.to(model.device).reshape(len(xb), -1), eps)).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def kl_score(model, x: Tensor, samples: int = 1, seed: int = 0, batch_size: int = 1000,
             common: bool = False) -> Tensor:
    """KL(q(z|x) || p(z)): how far the encoding is from the prior (closed form, no draws)."""
    return per_batch(model, x, 1, seed, batch_size, lambda d: d.kl, common=True)


def reconstruction_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                         batch_size: int = 1000, common: bool = False) -> Tensor:
    """-E_q log p(x|z), averaged over S draws."""
    return per_batch(model, x, samples, seed, batch_size, lambda d: -d.log_px_z.mean(0), common)


def recon_prob_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                     batch_size: int = 1000, common: bool = False) -> Tensor:
    """An & Cho (2015) reconstruction probability, as -log (1/S) sum_s p(x|z_s) (logsumexp)."""
    return per_batch(model, x, samples, seed, batch_size,
                     lambda d: math.log(len(d.log_px_z)) - torch.logsumexp(d.log_px_z, 0), common)


def elbo_score(model, x: Tensor, samples: int = 16, seed: int = 0, batch_size: int = 1000,
               common: bool = False) -> Tensor:
    """-ELBO = -E_q log p(x|z) + KL(q(z|x) || p(z))."""
    return per_batch(model, x, samples, seed, batch_size, lambda d: d.kl - d.log_px_z.mean(0),
                     common)


def iw_nll_score(model, x: Tensor, samples: int = 100, seed: int = 0, batch_size: int = 100,
                 common: bool = False) -> Tensor:
    """-log p(x), importance-sampled with S draws from q(z|x): -(logsumexp_s log w_s - log S)
    (Burda et al. 2015)."""
    if not model.stochastic:
        raise VaekitError("iw-nll needs a VAE's q(z|x); this run is a plain autoencoder: use "
                          "--method reconstruction")
    return per_batch(model, x, samples, seed, batch_size,
                     lambda d: math.log(len(d.log_w)) - torch.logsumexp(d.log_w, 0), common)


SCORES: dict[str, Score] = {
    "kl": kl_score,
    "reconstruction": reconstruction_score,
    "recon-prob": recon_prob_score,
    "elbo": elbo_score,
    "iw-nll": iw_nll_score,
}
DEFAULT_SAMPLES = {"kl": 1, "reconstruction": 16, "recon-prob": 16, "elbo": 16, "iw-nll": 100}


def score(model, x: Tensor, method: str = "elbo", samples: int | None = None, seed: int = 0,
          batch_size: int | None = None, common: bool = False) -> Tensor:
    """Anomaly scores (N,) of model-space x by a SCORES name; higher = more anomalous.

    common: the same draws of z for every example (common random numbers; for ranking), instead
    of independent draws per example (see the module's docstring)."""
    if method not in SCORES:
        raise VaekitError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")
    samples = DEFAULT_SAMPLES[method] if samples is None else samples
    if samples < 1:
        raise VaekitError("the number of draws (--samples) must be >= 1")
    if batch_size is None:
        batch_size = MAX_ROWS
    x = x.to(dtype=model.shift.dtype)  # float32, or float64 for a model made .double()
    return SCORES[method](model, x, samples=samples, seed=seed, batch_size=batch_size,
                          common=common)


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
