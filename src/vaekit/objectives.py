"""Losses as pure functions of model outputs, and the registry of training objectives.

All quantities are nats per example. `Terms` holds per-example values of one pass over a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from .errors import VaekitError


@dataclass
class Terms:
    """Per-example pieces of the ELBO for a batch of B examples."""

    reconstruction: Tensor  # (B,) E_q[log p(x|z)], averaged over the MC draws
    kl: Tensor  # (B,) KL(q(z|x) || p(z)): closed form, or a Monte Carlo estimate from the draws
    kl_per_dim: Tensor | None  # (B, L) the KL of each latent dimension, where it is defined
    posterior: Distribution  # q(z|x) of the batch: .mean (B, L), .log_prob, ...
    kl_analytic: bool = True  # False: kl is a Monte Carlo estimate (it has a standard error)

    def elbo(self, beta: float = 1.0) -> Tensor:
        return self.reconstruction - beta * self.kl


# The mean over the whole global batch of per-example values (n, L) given this process's part,
# as a constant (L,): what data-parallel training passes (`distributed.GlobalMean`), else None.
BatchMean = Callable[[Tensor], Tensor]


def kl_penalty(terms: Terms, free_bits: float, batch_mean: BatchMean | None = None) -> Tensor:
    """The KL term of the loss, a scalar batch mean; with free bits each dimension's batch-mean KL
    counts as max(free_bits, KL_u) (Kingma et al. 2016, IAF paper, eq. 15).

    Under data parallelism (`batch_mean` given) the floor is decided on the global batch's mean
    KL_u, and this process's part counts its own mean in the dimensions where the global mean is
    above the floor, the floor in the others: weighted by their shares, the processes' losses and
    gradients sum to the loss and gradient of the whole batch, as one process would take them."""
    if free_bits <= 0:
        return terms.kl.mean()
    if terms.kl_per_dim is None:
        raise VaekitError("--free-bits needs the KL of each latent dimension, which this "
                          "posterior and prior do not have in closed form; drop --free-bits")
    local = terms.kl_per_dim.mean(0)
    if batch_mean is None:
        return torch.clamp(local, min=free_bits).sum()
    above = batch_mean(terms.kl_per_dim) > free_bits
    return torch.where(above, local, torch.full_like(local, free_bits)).sum()


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k w_k per example from log-weights (K, B): Burda et al. (2015), eq. 8."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def trimmed_mean(values: Tensor, trim: float) -> Tensor:
    """The mean of per-example objective values (B,) without the fraction `trim` of the batch
    with the lowest values (at most B - 1 dropped): the least-trimmed estimator (Rousseeuw 1984).
    Examples the model explains worst, such as anomalies mixed into the training rows, then pull
    on no gradient. trim 0: the plain mean. Decided on this process's batch: `train` refuses
    --trim under data parallelism, where a global order would be needed."""
    if trim <= 0:
        return values.mean()
    keep = max(1, len(values) - math.floor(trim * len(values)))
    return values.topk(keep).values.mean()


def elbo_objective(model, x: Tensor, beta: float, cfg,
                   batch_mean: BatchMean | None = None) -> tuple[Tensor, Terms]:
    """Loss = -(E_q log p(x|z) - beta * KL), averaged over the batch (with cfg.trim, over the
    examples left by `trimmed_mean`)."""
    terms = model.elbo_terms(x, cfg.mc_samples)
    if cfg.trim > 0:
        return -trimmed_mean(terms.elbo(beta), cfg.trim), terms
    loss = beta * kl_penalty(terms, cfg.free_bits, batch_mean) - terms.reconstruction.mean()
    return loss, terms


def iwae_objective(model, x: Tensor, beta: float, cfg,
                   batch_mean: BatchMean | None = None) -> tuple[Tensor, Terms]:
    """Loss = -IWAE bound with k = cfg.iw_train_samples (beta does not enter a valid bound; the
    mean of every process's part is the global batch's mean as it is), averaged as elbo's."""
    log_w, terms = model.log_weights(x, cfg.iw_train_samples, with_terms=True)
    return -trimmed_mean(iwae_bound(log_w), cfg.trim), terms


OBJECTIVES: dict[str, Callable] = {"elbo": elbo_objective, "iwae": iwae_objective}


def beta_at(epoch: int, beta: float, warmup: int) -> float:
    """KL weight for a 0-based epoch (or step): linear from 0 (epoch 0) to beta (epoch warmup)."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, epoch / warmup)


def epoch_betas(t, epoch: int, n_batches: int) -> list[float]:
    """The KL weight of each of the n_batches gradient steps of a 0-based epoch, by TrainConfig
    t: the epoch's beta_at under --kl-warmup (epochs), or beta_at of the step (epoch * n_batches
    + i) under --kl-warmup-steps."""
    if t.kl_warmup_steps > 0:
        first = epoch * n_batches
        return [beta_at(first + i, t.beta, t.kl_warmup_steps) for i in range(n_batches)]
    return [beta_at(epoch, t.beta, t.kl_warmup)] * n_batches
