"""The `layered` posterior: two stochastic layers, q(z|x) = q(z_2|x) q(z_1|x, z_2).

The inference side of Tomczak & Welling (2018)'s two-layer model (their HVAE), for the two-layer
priors `hier` and `hier-vamp`: z = (z_1, z_2) with z_2 on the last K = --top-latent dimensions, as
the priors lay them out. The encoder gives a mean and log-variance for every dimension (2L values,
as the diagonal Gaussian does):

- q(z_2|x) = N(mu_2(x), diag exp(logvar_2(x))), those of the top dimensions;
- q(z_1|x, z_2) = N(mu_1(x) + a(x, z_2), diag exp(logvar_1(x) + b(x, z_2))), where (a, b) is a
  learned MLP (`LayeredHead`: two ReLU layers) of the bottom layer's (mu_1, logvar_1) and z_2. Its
  output layer starts at 0, so the posterior starts as the diagonal Gaussian exactly.

Its density is exact and cheap at any z (no inversion): log q(z_2|x) + log q(z_1|x, z_2). Draws are
ancestral: z_2 from its noise, then z_1 given z_2. Its `mean` is the chain of conditional means
(z_2 = mu_2, z_1 = the mean of q(z_1|x, mu_2)), the centre of q rather than E_q[z], which has no
closed form; it has no variance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .errors import VaekitError
from .flows import flow_like

LOG_2PI = math.log(2 * math.pi)


class LayeredHead(nn.Module):
    """(mu_1, logvar_1, z_2) -> (mu_1 + a, logvar_1 + b): the bottom layer's conditional on z_2."""

    def __init__(self, bottom: int, top: int, hidden: int):
        super().__init__()
        self.bottom, self.top = bottom, top
        self.net = nn.Sequential(nn.Linear(2 * bottom + top, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * bottom))
        nn.init.zeros_(self.net[-1].weight)  # starts as the diagonal Gaussian
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, loc: Tensor, logvar: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        lead = torch.broadcast_shapes(z2.shape[:-1], loc.shape[:-1])  # e.g. (draws, B)
        loc, logvar = loc.expand(*lead, self.bottom), logvar.expand(*lead, self.bottom)
        z2 = z2.expand(*lead, self.top)
        shift, log_scale = self.net(torch.cat([loc, logvar, z2], -1)).chunk(2, -1)
        return loc + shift, logvar + log_scale


class LayeredPosterior(Distribution):
    """q(z|x) = q(z_2|x) q(z_1|x, z_2) over L = bottom + top dimensions; batch (B,), event (L,).
    `loc`, `logvar` (B, L): the encoder's per-dimension outputs (the top's are q(z_2|x)'s)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True
    has_density = True

    def __init__(self, loc: Tensor, logvar: Tensor, head: LayeredHead):
        self.loc, self.logvar = loc, logvar
        self.head = flow_like(head, loc)
        self.bottom = head.bottom
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def params(self) -> Tensor:
        return torch.cat([self.loc, self.logvar], -1)

    def top(self) -> tuple[Tensor, Tensor]:
        """(mu_2, logvar_2) of q(z_2|x), each (B, K)."""
        return self.loc[..., self.bottom:], self.logvar[..., self.bottom:]

    def conditional(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z_1|x, z_2) for z_2 (..., B, K): each (..., B, L - K)."""
        return self.head(self.loc[..., :self.bottom], self.logvar[..., :self.bottom], z2)

    def gaussian_marginal(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(loc, logvar) of q's marginal over dimensions start..stop-1 where it is a diagonal
        Gaussian: within the top layer only (z_1's marginal is a continuous mixture)."""
        if start < self.bottom:
            raise VaekitError("the layered posterior is a diagonal Gaussian on its top layer only: "
                              "a VampPrior over all of z needs --posterior gaussian (use --prior "
                              "hier-vamp for a VampPrior on the top layer)")
        return self.loc[..., start:stop], self.logvar[..., start:stop]

    @property
    def mean(self) -> Tensor:
        """(mu_1(x, mu_2), mu_2) (B, L): the chain of conditional means, q's centre, not E_q[z].
        Differentiable when the encoder's outputs are (else a plain tensor, like theirs)."""
        with torch.set_grad_enabled(self.loc.requires_grad and torch.is_grad_enabled()):
            mu2 = self.top()[0]
            return torch.cat([self.conditional(mu2)[0], mu2], -1)

    def from_noise(self, eps: Tensor) -> Tensor:
        """Ancestral: z_2 = mu_2 + sigma_2 eps_2, then z_1 = mu_1(z_2) + sigma_1(z_2) eps_1."""
        mu2, logvar2 = self.top()
        z2 = mu2 + torch.exp(0.5 * logvar2) * eps[..., self.bottom:]
        mu1, logvar1 = self.conditional(z2)
        return torch.cat([mu1 + torch.exp(0.5 * logvar1) * eps[..., :self.bottom], z2], -1)

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        eps = torch.randn((*sample_shape, *self.loc.shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        return self.from_noise(eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z_2|x) + log q(z_1|x, z_2), exact at any z (..., B, L): (..., B)."""
        z1, z2 = z[..., :self.bottom], z[..., self.bottom:]
        mu2, logvar2 = self.top()
        mu1, logvar1 = self.conditional(z2)
        return (_log_normal(z2, mu2, logvar2) + _log_normal(z1, mu1, logvar1))


def _log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)
