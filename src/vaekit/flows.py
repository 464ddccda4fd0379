"""Inverse autoregressive flow posterior (`iaf`): Kingma et al. (2016), "Improved variational
inference with inverse autoregressive flow".

The encoder gives (mu, log sigma^2, h) per example, log sigma^2 <= 0 (`distributions._iaf`): a
diagonal Gaussian z_0 = mu + sigma * eps and a context h (L values). T steps follow, each a MADE
(Germain et al. 2015) with the context added to its first hidden layer, giving (m, s) where output
i sees only z_<i; with the numerically stable update of the paper (its eq. 14 and section 4),
    g = sigmoid(s),  z <- g * z + (1 - g) * m,   log|det dz'/dz| = sum_i log g_i,
and the order of z reversed between steps. So, exactly,
    log q(z_T|x) = log N(eps; 0, I) - sum_i log sigma_i - sum_t sum_i log g_t,i.

The KL to N(0, I) or a `hier` prior p (`distributions.KL_FROM_DRAWS`) uses the base's closed-form
KL as a control variate: KL(q_0 || N(0, I)) + mean(log N(z_0; 0, I) - log p(z_T) - log-det) over
the same draws.

Densities of its own draws: `from_noise` / `rsample` keep (z, log q(z|x)) of their last call, and
`log_prob` of that same tensor returns the kept value (as torch's TransformedDistribution caches
its last x <-> y pair): the ELBO, IWAE and the importance-sampled log p(x) pay nothing more. Any
other z is inverted exactly: output i depends only on z_<i, so L passes per step recover
z_{t-1} one dimension at a time (O(L) MADE passes: fine for a few points, slow for the O(N^2)
pairs of the mutual-information estimate).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

LOG_2PI = math.log(2 * math.pi)
GATE_BIAS = 2.0  # sigmoid(2) = 0.88: each step starts close to the identity (the paper: +1 or +2)


class MaskedLinear(nn.Linear):
    def __init__(self, d_in: int, d_out: int, mask: Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(z, h) (N, L), (N, C) -> (m, s) each (N, L), output i a function of z_<i and h only."""

    def __init__(self, latent_dim: int, context: int, hidden: int):
        super().__init__()
        d_in = torch.arange(1, latent_dim + 1)  # degree of input i: i
        d_hid = torch.arange(hidden) % max(1, latent_dim - 1) + 1  # in 1..L-1
        self.inp = MaskedLinear(latent_dim, hidden, d_hid[:, None] >= d_in[None, :])
        self.ctx = nn.Linear(context, hidden)
        self.mid = MaskedLinear(hidden, hidden, d_hid[:, None] >= d_hid[None, :])
        self.out = MaskedLinear(hidden, 2 * latent_dim, torch.cat([d_in, d_in])[:, None] > d_hid[None, :])
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias[latent_dim:].fill_(GATE_BIAS)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        a = nn.functional.elu(self.inp(z) + self.ctx(h))
        a = nn.functional.elu(self.mid(a))
        m, s = self.out(a).chunk(2, -1)
        return m, s


class IAF(nn.Module):
    """T autoregressive steps with order reversals: forward (z_0 -> z_T) and its exact inverse."""

    def __init__(self, latent_dim: int, steps: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.steps = nn.ModuleList(MADE(latent_dim, latent_dim, hidden) for _ in range(steps))

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z_0 (N, L), h (N, L) -> z_T (N, L), sum_t log|det dz_t/dz_{t-1}| (N,)."""
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for made in self.steps:
            m, s = made(z, h)
            g = torch.sigmoid(s)
            z = (g * z + (1 - g) * m).flip(-1)
            logdet = logdet + nn.functional.logsigmoid(s).sum(-1)
        return z, logdet

    def inverse(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z_T -> z_0 and the same log-determinant as `forward` at z_0."""
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for made in reversed(self.steps):
            y = z.flip(-1)
            x = y.clone()  # finite placeholders: masked-out inputs still meet 0 * x in the matmul
            for i in range(self.latent_dim):  # x_i from x_<i, already exact
                m, s = made(x, h)
                g = torch.sigmoid(s[..., i])
                x[..., i] = (y[..., i] - (1 - g) * m[..., i]) / g
            logdet = logdet + nn.functional.logsigmoid(made(x, h)[1]).sum(-1)
            z = x
        return z, logdet


class IAFPosterior(Distribution):
    """q(z|x): a diagonal Gaussian through an IAF; batch (B,), event (L,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True
    has_density = True

    def __init__(self, loc: Tensor, logvar: Tensor, context: Tensor, flow: IAF):
        self.loc, self.logvar, self.context = loc, logvar, context
        self.flow = flow_like(flow, loc)
        self._kept: tuple[Tensor, ...] | None = None  # (z, log q(z|x), z_0, log-det) of the last draws
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def params(self) -> Tensor:
        return torch.cat([self.loc, self.logvar, self.context], -1)

    @property
    def mean(self) -> Tensor:
        """The flow at eps = 0 (B, L): the centre of q, not E_q[z] (which has no closed form).
        Differentiable when the encoder's outputs are (else a plain tensor, like theirs)."""
        with torch.set_grad_enabled(self.loc.requires_grad and torch.is_grad_enabled()):
            return self.flow(self.loc, self.context)[0]

    def _flow(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        shape = z0.shape
        h = self.context.expand(shape)
        z, logdet = self.flow(z0.reshape(-1, shape[-1]), h.reshape(-1, shape[-1]))
        return z.reshape(shape), logdet.reshape(shape[:-1])

    def from_noise(self, eps: Tensor) -> Tensor:
        z0 = self.loc + torch.exp(0.5 * self.logvar) * eps
        z, logdet = self._flow(z0)
        base = -0.5 * (eps.square() + LOG_2PI + self.logvar).sum(-1)
        self._kept = (z, base - logdet, z0, logdet)
        return z

    def base_of(self, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """(z_0, log-det) behind z if z is this posterior's last draw, else None."""
        return self._kept[2:] if self._kept is not None and z is self._kept[0] else None

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        eps = torch.randn((*sample_shape, *self.loc.shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        return self.from_noise(eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) (..., B): kept from the draw that made z, else by inverting the flow."""
        if self._kept is not None and z is self._kept[0]:
            return self._kept[1]
        shape = torch.broadcast_shapes(z.shape, self.loc.shape)
        flat = z.expand(shape).reshape(-1, shape[-1])
        z0, logdet = self.flow.inverse(flat, self.context.expand(shape).reshape(-1, shape[-1]))
        z0, logdet = z0.reshape(shape), logdet.reshape(shape[:-1])
        base = -0.5 * ((z0 - self.loc).square() * torch.exp(-self.logvar) + self.logvar
                       + LOG_2PI).sum(-1)
        return base - logdet


def flow_like(flow: IAF, like: Tensor) -> IAF:
    """The flow on `like`'s device and dtype (float64 evaluation): a copy when they differ."""
    p = next(flow.parameters(), None)
    if p is None or (p.dtype == like.dtype and p.device == like.device):
        return flow
    return copy.deepcopy(flow).to(like.device, like.dtype)
