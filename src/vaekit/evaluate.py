"""Evaluation of a trained model on data: ELBO, reconstruction, KL, rate/distortion, active units.

All figures are nats per example, averaged over examples; `reconstruction` is E_q log p(x|z).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .model import VAE
from .objectives import iwae_bound

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): unit u is active if Cov_x(E_q[z_u]) > 0.01


def batches(x: Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


@torch.no_grad()
def evaluate(model: VAE, x: Tensor, mc_samples: int = 1, batch_size: int = 1000,
             active_threshold: float = ACTIVE_UNIT_THRESHOLD) -> dict[str, Any]:
    """ELBO and its parts over x (model space), with rate, distortion and per-dimension KL."""
    was_training = model.training
    model.eval()
    rec_sum, kl_dims, mus = 0.0, torch.zeros(model.latent_dim, dtype=torch.float64), []
    for xb in batches(x, batch_size):
        terms = model.elbo_terms(xb.to(model.device), mc_samples)
        rec_sum += float(terms.reconstruction.double().sum())
        kl_dims += terms.kl_per_dim.double().sum(0).cpu()
        mus.append(terms.mu.cpu())
    model.train(was_training)
    n = len(x)
    rec, kl_per_dim = rec_sum / n, (kl_dims / n).tolist()
    kl = float(sum(kl_per_dim))
    mu = torch.cat(mus).double()
    var = mu.var(0, unbiased=True) if n > 1 else torch.zeros(model.latent_dim)
    return {
        "elbo": rec - kl if model.stochastic else None,
        "reconstruction": rec,
        "kl": kl,
        "n": n,
        "rate": kl,
        "distortion": -rec,
        "active_units": int((var > active_threshold).sum()),
        "kl_per_dim": kl_per_dim,
    }


@torch.no_grad()
def log_likelihood(model: VAE, x: Tensor, k: int, batch_size: int = 100) -> Tensor:
    """Importance-sampled log p(x) per example (N,), with K draws from q(z|x) as proposal:
    logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K (Burda et al. 2015)."""
    out = []
    for xb in batches(x, batch_size):
        out.append(iwae_bound(model.log_weights(xb.to(model.device), k)).cpu())
    return torch.cat(out)
