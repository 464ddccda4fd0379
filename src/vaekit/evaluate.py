"""Evaluation of a trained model on data, in nats per example of the data as the user gave it.

- `evaluate`: ELBO, reconstruction E_q log p(x|z), KL; rate R = E_x KL(q(z|x) || p(z)) and
  distortion D = -E_x E_q log p(x|z) (Alemi et al. 2018, "Fixing a broken ELBO"); bounds and an
  estimate of the encoder's mutual information I(X;Z); active units and the KL of each dimension.
- `log_likelihood`: importance-sampled log p(x) per example (Burda et al. 2015), batched over
  examples and draws, memory bounded by a chunk size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm import tqdm

from .distributions import has_pairwise, kl_terms, pairwise_log_prob
from .errors import VaekitError
from .model import VAE
from .runtime import release_memory

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015): unit u is active if Cov_x(E_q[z_u]) > 0.01
CHUNK_SIZE = 2048  # draws of z decoded in one pass by log_likelihood (examples x samples)
MI_BLOCK = 512  # draws of z per block of the (block, N) density matrix in aggregate_mi


def batches(x: Tensor, batch_size: int):
    """Slices x[i:i + batch_size] in order; between two, freed heap pages go back to the system
    (`runtime.release_memory`: without it, multi-threaded evaluation loops grow without bound)."""
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]
        release_memory()


def active_mask(mu: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> Tensor:
    """(L,) bool: unit u is active if Cov_x(E_q[z_u]) > threshold, from posterior means (N, L)."""
    if len(mu) < 2:
        return torch.zeros(mu.shape[1], dtype=torch.bool)
    return mu.var(0, unbiased=True) > threshold


@torch.no_grad()
def evaluate(model: VAE, x: Tensor, mc_samples: int = 1, batch_size: int = 1000,
             active_threshold: float = ACTIVE_UNIT_THRESHOLD, *, data_entropy: float | None = None,
             information: bool = True, mi_examples: int = 4096) -> dict[str, Any]:
    """ELBO and its parts over x (model space), with rate, distortion and per-dimension KL.

    Information about the encoder (None for the autoencoder): `mutual_information_upper` = rate
    (I(X;Z) <= R); `mutual_information`, an estimate of I(X;Z) = R - KL(q(z) || p(z)) with the
    aggregate posterior q(z) = mean_x q(z|x) (see `aggregate_mi`: from the first `mi_examples`
    examples, as its cost grows with N^2; skipped when information=False), clipped to [0, R],
    with `mutual_information_stderr`, the Monte Carlo standard error of the unclipped estimate;
    with the data's entropy H in nats per example, `mutual_information_lower` = H - D.
    """
    was_training = model.training
    model.eval()
    rec_sum, kl_sum, kl_dims = 0.0, 0.0, torch.zeros(model.latent_dim, dtype=torch.float64)
    params, per_dim, kls, analytic = [], True, [], True
    for xb in batches(x, batch_size):
        xb = xb.to(model.device)
        terms = model.elbo_terms(xb, mc_samples)
        rec_sum += float(terms.reconstruction.double().sum())
        kl_sum += float(terms.kl.double().sum())
        kls.append(terms.kl.detach().double().cpu())
        analytic = analytic and terms.kl_analytic
        per_dim = per_dim and terms.kl_per_dim is not None
        if per_dim:
            kl_dims += terms.kl_per_dim.double().sum(0).cpu()
        params.append(terms.posterior.params.cpu())
    model.train(was_training)
    n = len(x)
    rec, kl = rec_sum / n, kl_sum / n
    q = model.posterior(torch.cat(params).double())  # q(z|x) of every example, float64
    elbo = rec - kl if model.stochastic else None
    out = {
        "elbo": elbo,
        **({"bits_per_dim": bits_per_dim(elbo, model.input_shape)} if model.image else {}),
        "reconstruction": rec,
        "kl": kl,
        "n": n,
        "rate": kl,
        **({} if analytic else {"rate_stderr": stderr_of_mean(torch.cat(kls))}),
        "distortion": -rec,
        "mutual_information_upper": kl if model.stochastic else None,
        **information_estimate(model, q, kl, mi_examples if information else 0),
        "active_units": int(active_mask(q.mean, active_threshold).sum()),
        "kl_per_dim": (kl_dims / n).tolist() if per_dim else None,
    }
    if data_entropy is not None:
        out["mutual_information_lower"] = data_entropy + rec if model.stochastic else None
    return out


def stderr_of_mean(v: Tensor) -> float | None:
    """Standard error of the mean of per-example values (a Monte Carlo rate: KL by draws); None
    for a single example (no spread to measure; JSON has no NaN)."""
    return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else None


def information_estimate(model: VAE, q: Distribution, rate: float,
                         examples: int) -> dict[str, float | None]:
    """`mutual_information` from the first `examples` encodings, clipped to [0, rate] (I(X;Z) lies
    in [0, R]; clipping moves a noisy estimate toward that interval), and the standard error of the
    unclipped estimate; None for both without a posterior density (autoencoder) or examples, or
    where the posterior's density at another example's draw is costly (iaf: an O(L) inversion per
    pair)."""
    if not model.stochastic or examples <= 0 or not has_pairwise(q):
        return {"mutual_information": None, "mutual_information_stderr": None}
    est, stderr = aggregate_mi(model.posterior(q.params[:examples]), model.prior.dist_like(q.mean),
                               rate)
    return {"mutual_information": min(max(est, 0.0), rate), "mutual_information_stderr": stderr}


def aggregate_mi(q: Distribution, prior: Distribution, rate: float | None = None,
                 generator: torch.Generator | None = None) -> tuple[float, float]:
    """(estimate, Monte Carlo standard error) of I(X;Z) = R - KL(q(z) || p(z)), in nats.

    The rate R = E_x KL(q(z|x) || p(z)) splits into I(X;Z) and the marginal KL from the aggregate
    posterior q(z) = mean_x q(z|x) to the prior (Hoffman & Johnson 2016, "ELBO surgery"). R is
    exact (`rate`, or the closed form over these examples). The marginal KL is estimated over the
    N encoded examples, `q` (a posterior of batch (N,)): q(z) is their mixture; two draws
    z_ik ~ q(z|x_i) per example (together, exact draws from q(z)); t_ik = log q(z_ik) - log p(z_ik);
    KL ~= mean(t). Its standard error comes from the two draws' differences (the spread of t across
    examples is not Monte Carlo noise). With R over the same examples this is the InfoNCE estimate
    with the encoder's density as critic (van den Oord et al. 2018; Poole et al. 2019) with its
    Monte Carlo rate replaced by the exact one: the same expectation, less noise (5x less on a
    digits model). A mixture of N encodings overstates KL(q(z) || p(z)) for a model that uses many
    nats, so the estimate is biased low and saturates near log N (MNIST, 784-200-200-50: rate
    18.2, estimate 7.6 on N = 2000, log N = 7.60); it is accurate when I(X;Z) << log N. Not
    clipped here: noise can take it below 0 or above R (`evaluate` clips it).
    """
    n, latent = q.batch_shape[0], q.event_shape[0]
    if rate is None:
        rate = float(kl_terms(q, prior).total.mean())
    eps = torch.randn((2, n, latent), generator=generator, dtype=q.mean.dtype)
    z = q.from_noise(eps).reshape(2 * n, latent)  # draw k of example i: k*N + i
    t = torch.empty(2 * n, dtype=z.dtype)
    for i in range(0, 2 * n, MI_BLOCK):
        zb = z[i:i + MI_BLOCK]  # (b, L)
        log_q = torch.logsumexp(pairwise_log_prob(q, zb), dim=1) - math.log(n)  # log q(z), (b,)
        t[i:i + len(zb)] = log_q - prior.log_prob(zb)
    t = t.reshape(2, n)
    stderr = float((t[0] - t[1]).square().sum().sqrt()) / (2 * n)  # Var(t0 - t1) = 2 Var(t)
    return rate - float(t.mean()), stderr


@torch.no_grad()
def log_likelihood(model: VAE, x: Tensor, k: int, batch_size: int = 100, *,
                   chunk_size: int = CHUNK_SIZE, progress: bool = False) -> Tensor:
    """Importance-sampled log p(x) per example (N,), with K draws from q(z|x) as proposal:
    logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K (Burda et al. 2015).

    Examples go up to batch_size at a time, fewer when K is large, each batch with as many of its
    K draws per pass as keep examples x draws <= chunk_size; passes are combined by a running
    logsumexp, so memory is O(chunk_size * widest layer) whatever K is, and each example is
    encoded once per pass. progress: a tqdm bar (on stderr)."""
    if not model.stochastic:
        raise VaekitError("a deterministic autoencoder (--model ae) has no q(z|x) to "
                          "importance-sample; evaluate it without --iw-samples")
    if k < 1 or chunk_size < 1:
        raise VaekitError("the number of importance samples and the chunk size must be >= 1")
    was_training = model.training
    model.eval()
    batch_size = max(1, min(batch_size, chunk_size // k))  # examples that share a pass
    per_pass = max(1, min(k, chunk_size // min(batch_size, max(1, len(x)))))  # draws each
    per_pass = math.ceil(k / math.ceil(k / per_pass))  # equal passes (the last one's few surplus
    # draws are dropped): ragged shapes grew the allocator's heap by ~0.2 MB per example
    out = []
    with tqdm(total=len(x) * k, disable=not progress, unit="draw", unit_scale=True,
              desc=f"log p(x), K={k}", mininterval=0.5, leave=False) as bar:
        for xb in batches(x, batch_size):
            xb = xb.to(model.device)
            acc = torch.full((len(xb),), -math.inf, device=model.device)
            for start in range(0, k, per_pass):
                n = min(per_pass, k - start)
                log_w = model.log_weights(xb, per_pass)[:n]
                acc = torch.logaddexp(acc, torch.logsumexp(log_w, dim=0))
                bar.update(n * len(xb))
            out.append((acc - math.log(k)).cpu())
    model.train(was_training)
    return torch.cat(out)


def summarize_log_likelihood(ll: Tensor, k: int, shape: tuple[int, ...] | None = None
                             ) -> dict[str, Any]:
    """Mean over examples, its standard error, and K: the keys `vaekit eval` reports; for image
    examples of `shape` (C, H, W) also `log_likelihood_bits_per_dim` (of -log p(x))."""
    ll = ll.double()
    stderr = float(ll.std(unbiased=True) / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    out = {"log_likelihood": float(ll.mean()), "log_likelihood_stderr": stderr, "iw_samples": k}
    if shape is not None and len(shape) == 3:
        out["log_likelihood_bits_per_dim"] = bits_per_dim(out["log_likelihood"], shape)
    return out


def bits_per_dim(log_p: float | None, shape: tuple[int, ...]) -> float | None:
    """-log p(x) in bits per value, for examples of shape (C, H, W): -nats / (C H W ln 2)."""
    return None if log_p is None else -log_p / (math.prod(shape) * math.log(2))


@torch.no_grad()
def elbo_per_example(model: VAE, x: Tensor, mc_samples: int = 1, batch_size: int = 1000) -> Tensor:
    """Per-example ELBO (N,) (E_q log p(x|z) for the autoencoder)."""
    was_training = model.training
    model.eval()
    out = [model.elbo(xb.to(model.device), mc_samples).cpu() for xb in batches(x, batch_size)]
    model.train(was_training)
    return torch.cat(out)
