"""Losses as pure functions of model outputs, and the registry of training objectives.

All quantities are nats per example. `Terms` holds per-example values of one pass over a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Terms:
    """Per-example pieces of the ELBO for a batch of B examples."""

    reconstruction: Tensor  # (B,) E_q[log p(x|z)], averaged over the MC draws
    kl_per_dim: Tensor  # (B, L) KL(q(z_u|x) || N(0, 1)) per latent dimension
    mu: Tensor  # (B, L) posterior means
    logvar: Tensor | None = None  # (B, L) posterior log-variances (None for the autoencoder)

    @property
    def kl(self) -> Tensor:
        return self.kl_per_dim.sum(-1)

    def elbo(self, beta: float = 1.0) -> Tensor:
        return self.reconstruction - beta * self.kl


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, closed form.

    Kingma & Welling (2014), Appendix B: -KL = 1/2 (1 + log sigma^2 - mu^2 - sigma^2).
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension, constants included."""
    return -0.5 * (((z - mu).square() * torch.exp(-logvar)) + logvar + math.log(2 * math.pi)).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    return -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)


def kl_penalty(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """Per-example KL term of the loss; with free bits each dimension's batch-mean KL counts as
    max(free_bits, KL_u) (Kingma et al. 2016, IAF paper, eq. 15). Returns a scalar batch mean."""
    if free_bits <= 0:
        return kl_per_dim.sum(-1).mean()
    return torch.clamp(kl_per_dim.mean(0), min=free_bits).sum()


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k w_k per example from log-weights (K, B): Burda et al. (2015), eq. 8."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def elbo_objective(model, x: Tensor, beta: float, cfg) -> tuple[Tensor, Terms]:
    """Loss = -(E_q log p(x|z) - beta * KL), averaged over the batch."""
    terms = model.elbo_terms(x, cfg.mc_samples)
    loss = beta * kl_penalty(terms.kl_per_dim, cfg.free_bits) - terms.reconstruction.mean()
    return loss, terms


def iwae_objective(model, x: Tensor, beta: float, cfg) -> tuple[Tensor, Terms]:
    """Loss = -IWAE bound with k = cfg.iw_train_samples (beta does not enter a valid bound)."""
    log_w, terms = model.log_weights(x, cfg.iw_train_samples, with_terms=True)
    return -iwae_bound(log_w).mean(), terms


OBJECTIVES: dict[str, Callable] = {"elbo": elbo_objective, "iwae": iwae_objective}


def beta_at(epoch: int, beta: float, warmup: int) -> float:
    """KL weight for a 0-based epoch: linear from 0 (epoch 0) to beta (epoch warmup)."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, epoch / warmup)
