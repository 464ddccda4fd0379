"""Likelihoods for count data (non-negative integers, e.g. scRNA-seq counts as scvi-tools models
them): Poisson and negative binomial. The data is modelled as given (no scaling, no
standardization): both are probability mass functions of the counts themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Gamma

from .errors import VaekitError
from .likelihoods import Likelihood, sum_event

CHECK_ROWS = 1024  # check() reads the data in chunks of this many examples
MIN_MEAN = 1e-3  # params_for_mean: log of a mean of zero (an all-zero feature) is clamped here


def check_counts(x: Tensor, name: str, likelihood: str) -> None:
    """Counts only: one line naming the first offending value and the fix."""
    for rows in x.split(CHECK_ROWS):  # in chunks: the temporaries of a large table need not be
        bad = rows[(rows < 0) | (rows != torch.round(rows))]
        if len(bad):
            raise VaekitError(f"{name} has non-integer or negative values (e.g. {float(bad[0]):g}) but "
                              f"--likelihood {likelihood} models counts (non-negative integers); "
                              "give raw counts, not normalized or log-transformed ones (or use "
                              "--likelihood gaussian)")


def log_mean_start(mean: Tensor) -> Tensor:
    return torch.log(mean.clamp(min=MIN_MEAN))


class Poisson(Likelihood):
    """p(x|z) = prod_d Poisson(x_d; rate_d), the decoder giving log-rates (one per value)."""

    continuous = False

    def log_prob(self, x: Tensor, log_rate: Tensor) -> Tensor:
        x = x.to(log_rate.dtype)
        return sum_event(x * log_rate - torch.exp(log_rate) - torch.lgamma(x + 1), len(self.event_shape))

    def mean(self, log_rate: Tensor) -> Tensor:
        return torch.exp(log_rate)

    def sample(self, log_rate: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.poisson(torch.exp(log_rate), generator=generator)

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return log_mean_start(mean)

    def check(self, x: Tensor, name: str) -> None:
        check_counts(x, name, "poisson")


class NegativeBinomial(Likelihood):
    """p(x|z) = prod_d NB(x_d; mean mu_d, total count r_d): the decoder gives log-means, and the
    inverse dispersion r is one learned parameter per value (scvi-tools' per-gene dispersion), so
    Var x = mu + mu^2 / r. In torch.distributions' terms: NegativeBinomial(r, logits=log mu - log r)."""

    continuous = False

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__(event_shape)
        self.log_total_count = nn.Parameter(torch.zeros(self.event_shape))  # r = 1 to start

    def log_prob(self, x: Tensor, log_mean: Tensor) -> Tensor:
        x = x.to(log_mean.dtype)
        log_r = self.log_total_count.to(log_mean.dtype)
        r, logits = log_r.exp(), log_mean - log_r
        # log C(x + r - 1, x) + r log(1 - p) + x log p, p = sigmoid(logits) = mu / (mu + r)
        log_pmf = (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)
                   + r * F.logsigmoid(-logits) + x * F.logsigmoid(logits))
        return sum_event(log_pmf, len(self.event_shape))

    def mean(self, log_mean: Tensor) -> Tensor:
        return torch.exp(log_mean)

    def sample(self, log_mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A gamma-Poisson draw: rate ~ Gamma(r, r / mu), x ~ Poisson(rate)."""
        r = self.log_total_count.detach().to(log_mean).exp().expand_as(log_mean)
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            if generator is not None:  # torch's gamma sampler takes no generator: seed from it
                torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            rate = Gamma(r, r / torch.exp(log_mean), validate_args=False).sample()
        return torch.poisson(rate, generator=generator)

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return log_mean_start(mean)

    def check(self, x: Tensor, name: str) -> None:
        check_counts(x, name, "negative-binomial")
