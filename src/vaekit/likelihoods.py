"""Decoder likelihoods p(x|z), looked up by name. Log-densities are in nats, constants included.

Each likelihood turns the decoder's output `params` (B, D) into a distribution over x (B, D):
`log_prob` sums over features, `mean` and `sample` give data, `params_for_mean` inverts `mean`.
Adding one is one registry entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import VaekitError

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_SIGMA = math.log(1e-3)  # a floor keeps a learned sigma from collapsing on constant pixels


class Bernoulli(nn.Module):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)); x in [0, 1] (binary for a true pmf)."""

    continuous = False

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        # -BCE with logits, written out so it broadcasts over leading sample dims: (..., B)
        return (x * logits - F.softplus(logits)).sum(-1)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return torch.logit(mean.clamp(1e-3, 1 - 1e-3))

    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)

    def check(self, x: Tensor, name: str) -> None:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise VaekitError(f"{name} has values in [{lo:g}, {hi:g}] but --likelihood bernoulli "
                              "needs data in [0, 1]; rescale it or use --likelihood gaussian")


class Gaussian(nn.Module):
    """p(x|z) = prod_d N(x_d; mu_d, sigma_d^2), sigma learned (one per feature) or fixed."""

    continuous = True

    def __init__(self, dim: int, sigma: float | None = None):
        super().__init__()
        self.learned = sigma is None
        log_sigma = torch.zeros(dim) if sigma is None else torch.full((dim,), math.log(sigma))
        if self.learned:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def sigma_log(self) -> Tensor:
        return self.log_sigma.clamp(min=MIN_LOG_SIGMA) if self.learned else self.log_sigma

    def log_prob(self, x: Tensor, mean: Tensor) -> Tensor:
        log_sigma = self.sigma_log()
        z = (x - mean) * torch.exp(-log_sigma)
        return (-0.5 * z.square() - log_sigma - 0.5 * LOG_2PI).sum(-1)

    def mean(self, mean: Tensor) -> Tensor:
        return mean

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return mean

    def sample(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + noise * self.sigma_log().exp()

    def check(self, x: Tensor, name: str) -> None:
        pass


LIKELIHOODS: dict[str, Callable[[int, float], nn.Module]] = {
    "bernoulli": lambda dim, sigma: Bernoulli(),
    "gaussian": lambda dim, sigma: Gaussian(dim),
    "gaussian-fixed": lambda dim, sigma: Gaussian(dim, sigma),
}


def build_likelihood(name: str, dim: int, sigma: float) -> nn.Module:
    if name not in LIKELIHOODS:
        raise VaekitError(f"unknown likelihood {name!r}; choose one of "
                          f"{', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name](dim, sigma)
