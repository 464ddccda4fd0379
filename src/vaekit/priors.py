"""Learned priors p(z): a mixture of Gaussians (`mog`) and the VampPrior (`vamp`).

Both are mixtures of K diagonal Gaussians, one distribution class (`GaussianMixture`):
- `mog`: K free components, loc and log-variance (K, L) and mixture logits (K,) learned with the
  model (as scvi-tools' MogPrior);
- `vamp`: Tomczak & Welling (2018), "VAE with a VampPrior": p(z) = 1/K sum_k q(z | u_k), the
  posteriors of K learned pseudo-inputs u_k shaped like the data (model space), through the
  model's own encoder. The pseudo-inputs start at K random training examples (`init_from_data`,
  drawn with torch's seeded generator; with replacement when there are fewer than K), else at
  small noise around 0. They are not clipped to the data's range.

The KL term to a mixture has no closed form: `distributions.kl_terms` takes the Monte Carlo
estimate log q(z|x) - log p(z) from the same draws z as the reconstruction term.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, constraints

from .errors import VaekitError

LOG_2PI = math.log(2 * math.pi)
BLOCK = 1 << 22  # rows x K values (float64) of one block of the mixture density (memory bound)


class GaussianMixture(Distribution):
    """sum_k w_k N(loc_k, diag exp(logvar_k)) over L dimensions (broadcasts against any batch)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False  # the choice of component is discrete
    has_density = True

    def __init__(self, loc: Tensor, logvar: Tensor, logits: Tensor):
        self.loc, self.logvar = loc, logvar  # (K, L)
        self.log_weights = torch.log_softmax(logits, -1)  # (K,)
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=False)

    @property
    def components(self) -> int:
        return self.loc.shape[0]

    @property
    def mean(self) -> Tensor:
        return (self.log_weights.exp()[:, None] * self.loc).sum(0)

    @property
    def variance(self) -> Tensor:
        """Of each dimension's marginal (L,): sum_k w_k (sigma_k^2 + mu_k^2) - mean^2."""
        w = self.log_weights.exp()[:, None]
        return (w * (self.logvar.exp() + self.loc.square())).sum(0) - self.mean.square()

    @property
    def component_means(self) -> Tensor:
        """(K, L): the components' centres (drawn on the report's latent map)."""
        return self.loc

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log w_k + log N(z; loc_k, sigma_k^2) for z (n, L): (n, K), in float64.

        The squared distances as matrix products, sum_l (z_l - m_kl)^2 / s_kl^2 =
        z^2 @ (1/s^2)^T - 2 z @ (m/s^2)^T + sum_l m_kl^2 / s_kl^2: no (n, K, L) tensor (which took
        4x the time of the rest of a VampPrior's importance-sampled log p(x)). The three terms
        nearly cancel near a narrow component's centre, so they are taken in float64 (in float32
        they were hundreds of nats off near components of sd 0.001 far from the origin)."""
        zd, loc = z.double(), self.loc.double()
        prec = torch.exp(-self.logvar.double())  # (K, L)
        sq = (zd.square() @ prec.T - 2 * zd @ (loc * prec).T
              + (loc.square() * prec).sum(-1))  # (n, K)
        log_norm = self.logvar.double().sum(-1) + z.shape[-1] * LOG_2PI  # (K,)
        return self.log_weights.double() - 0.5 * (sq.clamp(min=0) + log_norm)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = logsumexp_k [log w_k + log N(z; loc_k, sigma_k^2)]: (...,) for z (..., L),
        in z's dtype, in blocks of rows so that memory stays bounded whatever the batch."""
        flat = z.reshape(-1, z.shape[-1])
        rows = max(1, BLOCK // self.components)
        out = [torch.logsumexp(self.component_log_prob(flat[i:i + rows]), -1)
               for i in range(0, len(flat), rows)]
        return torch.cat(out).to(z.dtype).reshape(z.shape[:-1])

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = loc_k + sigma_k * eps with k ~ w drawn (by `generator`, on the CPU) per row of eps
        (..., L): scaling eps (a temperature) narrows each component, not the choice among them."""
        n = math.prod(eps.shape[:-1])
        k = torch.multinomial(self.log_weights.detach().exp().cpu().float(), n, replacement=True,
                              generator=generator).to(self.loc.device).reshape(eps.shape[:-1])
        return self.loc[k] + torch.exp(0.5 * self.logvar[k]) * eps.to(self.loc)

    def sample(self, sample_shape: torch.Size | tuple = (),
               generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            eps = torch.randn((*sample_shape, self.loc.shape[-1]), generator=generator)
            return self.from_noise(eps.to(self.loc.dtype), generator)

    def marginal_icdf(self, p: Tensor, dim: int) -> Tensor:
        """Quantiles of the marginal of dimension `dim` (a mixture of 1-D Gaussians) at
        probabilities p (S,): bisection on its CDF in float64, to 1e-12 of the bracket."""
        loc, logvar = self.loc.detach()[:, dim].double().cpu(), self.logvar.detach()[:, dim].double()
        sd, w = torch.exp(0.5 * logvar).cpu(), self.log_weights.detach().double().cpu().exp()
        lo = torch.full_like(p, float((loc - 12 * sd).min()), dtype=torch.float64)
        hi = torch.full_like(p, float((loc + 12 * sd).max()), dtype=torch.float64)
        for _ in range(64):
            mid = (lo + hi) / 2
            cdf = (w * Normal(loc, sd).cdf(mid[:, None])).sum(-1)
            below = cdf < p
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2


class Prior(nn.Module):
    """A prior p(z) as a module (a learned prior keeps its parameters here): `dist()` gives the
    distribution object on the module's device."""

    caption = "z ~ p(z)"
    isotropic = False  # a centred isotropic Gaussian (the spherical interpolation path assumes it)

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # device and dtype

    def dist(self) -> Distribution:
        raise NotImplementedError

    def dist_like(self, like: Tensor) -> Distribution:
        """The prior on another tensor's device and dtype (e.g. float64 on the CPU for
        evaluation), leaving this module where it is."""
        return copy.deepcopy(self).to(like.device, like.dtype).dist()

    def bind(self, model: nn.Module) -> None:
        """Called once by the VAE that owns this prior (the VampPrior encodes through it)."""

    def init_from_data(self, x: Tensor) -> None:
        """Called with the training data (model space, (N, D)) before training starts."""


class MixturePrior(Prior):
    """`mog`: a learned mixture of K diagonal Gaussians; components start at N(0, I) draws."""

    def __init__(self, latent_dim: int, components: int):
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.randn(components, latent_dim))
        self.logvar = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))
        self.caption = f"z ~ p(z), a learned mixture of {components} Gaussians"

    def dist(self) -> GaussianMixture:
        return GaussianMixture(self.loc, self.logvar, self.logits)


class VampPrior(Prior):
    """`vamp`: p(z) = 1/K sum_k q(z | u_k) over K learned pseudo-inputs u_k (K, *input_shape)."""

    def __init__(self, latent_dim: int, components: int, input_shape: tuple[int, ...]):
        super().__init__(latent_dim)
        self.pseudo_inputs = nn.Parameter(0.01 * torch.randn(components, *input_shape))
        self.caption = f"z ~ p(z), the VampPrior of {components} pseudo-inputs"

    def bind(self, model: nn.Module) -> None:
        object.__setattr__(self, "owner", model)  # a plain reference, not a submodule

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        k = len(self.pseudo_inputs)
        rows = torch.randperm(len(x))[:k] if len(x) >= k else torch.randint(len(x), (k,))
        self.pseudo_inputs.copy_(x[rows].reshape(self.pseudo_inputs.shape))

    def mixture(self) -> tuple[Tensor, Tensor]:
        """(loc, logvar), each (K, L): the posteriors of the pseudo-inputs."""
        model = getattr(self, "owner", None)
        if model is None:
            raise VaekitError("a VampPrior needs its model: build it through VAE(...)")
        q = model.posterior(model.encoder(self.pseudo_inputs))
        if not hasattr(q, "logvar"):
            raise VaekitError("--prior vamp is a mixture of diagonal-Gaussian posteriors: use "
                              "--posterior gaussian")
        return q.loc, q.logvar

    def dist(self) -> GaussianMixture:
        loc, logvar = self.mixture()
        return GaussianMixture(loc, logvar, torch.zeros(len(loc), device=loc.device, dtype=loc.dtype))

    def dist_like(self, like: Tensor) -> GaussianMixture:
        loc, logvar = (t.to(like.device, like.dtype) for t in self.mixture())
        return GaussianMixture(loc, logvar, torch.zeros(len(loc), device=like.device, dtype=like.dtype))
