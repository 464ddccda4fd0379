"""Priors p(z): the standard normal (`normal`), learned mixtures (`mog`, `vamp`) and two
stochastic layers (`hier`, `hier-vamp`).

The mixtures are of K diagonal Gaussians, one distribution class (`GaussianMixture`):
- `mog`: K free components, loc and log-variance (K, L) and mixture logits (K,) learned with the
  model (as scvi-tools' MogPrior);
- `vamp`: Tomczak & Welling (2018), "VAE with a VampPrior": p(z) = 1/K sum_k q(z | u_k), the
  posteriors of K learned pseudo-inputs u_k shaped like the data (model space), through the
  model's own encoder. The pseudo-inputs start at K random training examples (`init_from_data`,
  drawn with torch's seeded generator; with replacement when there are fewer than K), else at
  small noise around 0. They are not clipped to the data's range.

The layered prior (`LayeredGaussian`) is p(z_2) p(z_1 | z_2) with a learned Gaussian
p(z_1 | z_2); its top p(z_2) is another prior of this module: N(0, I) (`hier`) or a VampPrior on
the top layer's dimensions (`hier-vamp`).

The KL term to a mixture has no closed form: `distributions.kl_terms` takes the Monte Carlo
estimate log q(z|x) - log p(z) from the same draws z as the reconstruction term (for the layered
priors, with the closed-form parts taken exactly: `distributions.KL_FROM_DRAWS`).
"""

from __future__ import annotations

import copy
import math
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, constraints

from .errors import VaekitError

LOG_2PI = math.log(2 * math.pi)
BLOCK = 1 << 22  # rows x K values (float64) of one block of the mixture density (memory bound)


class StandardNormal(Distribution):
    """p(z) = N(0, I) over L dimensions (broadcasts against any batch of z)."""

    support = constraints.real_vector
    arg_constraints: dict = {}
    has_rsample = True
    has_density = True

    def __init__(self, latent_dim: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.latent_dim, self.device, self.dtype = latent_dim, torch.device(device), dtype
        super().__init__(torch.Size(), torch.Size([latent_dim]), validate_args=False)

    @property
    def mean(self) -> Tensor:
        return torch.zeros(self.latent_dim, device=self.device, dtype=self.dtype)

    @property
    def variance(self) -> Tensor:
        return torch.ones(self.latent_dim, device=self.device, dtype=self.dtype)

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return eps

    def marginal_icdf(self, p: Tensor, dim: int) -> Tensor:
        """Quantiles of one dimension's marginal, N(0, 1), at probabilities p (S,)."""
        return Normal(0.0, 1.0).icdf(p.double())

    def rsample(self, sample_shape: torch.Size | tuple = (),
                generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn((*sample_shape, self.latent_dim), generator=generator, dtype=self.dtype)
        return eps.to(self.device)

    def sample(self, sample_shape: torch.Size | tuple = (),
               generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.square() + LOG_2PI).sum(-1)


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


class StandardNormalPrior(Prior):
    caption = "z ~ N(0, I)"
    isotropic = True

    def dist(self) -> StandardNormal:
        return StandardNormal(self.latent_dim, self.anchor.device, self.anchor.dtype)


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
    """`vamp`: p(z) = 1/K sum_k q(z | u_k) over K learned pseudo-inputs u_k (K, *input_shape).

    `start`: the prior is over the posterior's dimensions start .. start + latent_dim - 1 (the
    marginal of q(z | u_k) there; `hier-vamp` puts it on the top layer, the last dimensions)."""

    def __init__(self, latent_dim: int, components: int, input_shape: tuple[int, ...],
                 start: int = 0):
        super().__init__(latent_dim)
        self.start = start
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
        if not hasattr(q, "gaussian_marginal"):
            raise VaekitError("--prior vamp is a mixture of diagonal-Gaussian posteriors: use "
                              "--posterior gaussian")
        return q.gaussian_marginal(self.start, self.start + self.latent_dim)

    def dist(self) -> GaussianMixture:
        loc, logvar = self.mixture()
        return GaussianMixture(loc, logvar, torch.zeros(len(loc), device=loc.device, dtype=loc.dtype))

    def dist_like(self, like: Tensor) -> GaussianMixture:
        loc, logvar = (t.to(like.device, like.dtype) for t in self.mixture())
        return GaussianMixture(loc, logvar, torch.zeros(len(loc), device=like.device, dtype=like.dtype))


class LayeredGaussian(Distribution):
    """p(z) over z = (z_1, z_2), B + K dimensions: z_2 ~ `top_dist` (a distribution over K
    dimensions: N(0, I_K) by default, or a VampPrior's mixture), and z_1 | z_2 ~ N(mu(z_2), diag
    exp(logvar(z_2))) from `net` (K -> 2B). Its density is exact (log p(z_2) + log p(z_1|z_2)).
    z_2's marginals are the top's; z_1's have no closed form, so its `mean`, `variance` and
    `marginal_icdf` are those of MARGINAL_DRAWS ancestral draws with a fixed seed (the same figures
    at every call)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True
    has_density = True

    def __init__(self, net: nn.Module, bottom: int, top: int, top_dist: Distribution | None = None):
        self.net, self.bottom, self.top = net, bottom, top
        p = next(net.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.top_dist = top_dist if top_dist is not None else StandardNormal(top, p.device, p.dtype)
        super().__init__(torch.Size(), torch.Size([bottom + top]), validate_args=False)

    def conditional(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of z_1 given z_2 (..., K): each (..., B)."""
        return self.net(z2).chunk(2, -1)

    def log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z[..., :self.bottom], z[..., self.bottom:]
        mu, logvar = self.conditional(z2)
        bottom = -0.5 * ((z1 - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)
        return self.top_dist.log_prob(z2) + bottom

    def from_noise(self, eps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral: z_2 = the top's draw from eps_2 (eps_2 itself under N(0, I); a mixture also
        draws its component, by `generator`), z_1 = mu(z_2) + sigma(z_2) * eps_1, for eps = (eps_1,
        eps_2) (..., L); a scaled eps (a temperature) scales the noise of both layers."""
        eps = eps.to(self.device, self.dtype)
        z2 = self.top_dist.from_noise(eps[..., self.bottom:], generator)
        mu, logvar = self.conditional(z2)
        return torch.cat([mu + torch.exp(0.5 * logvar) * eps[..., :self.bottom], z2], -1)

    def rsample(self, sample_shape: torch.Size | tuple = (),
                generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn((*sample_shape, self.bottom + self.top), generator=generator)
        return self.from_noise(eps.to(self.dtype), generator)

    def sample(self, sample_shape: torch.Size | tuple = (),
               generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    @cached_property
    def marginal_draws(self) -> Tensor:
        """MARGINAL_DRAWS draws (n, L) with a fixed seed, as constants: drawn once per distribution
        object, which `mean`, `variance` and `marginal_icdf` share (a traversal reads the first
        two, the manifold all three)."""
        return self.sample((MARGINAL_DRAWS,), torch.Generator().manual_seed(0))

    @property
    def mean(self) -> Tensor:
        """Of the marginal (L,): z_1's the mean of the fixed draws, z_2's the top's (exact)."""
        z1 = self.marginal_draws[:, :self.bottom]
        return torch.cat([z1.mean(0), self.top_dist.mean.to(z1)])

    @property
    def variance(self) -> Tensor:
        """Of the marginal (L,): z_1's the variance of the fixed draws, z_2's the top's (exact)."""
        z1 = self.marginal_draws[:, :self.bottom]
        return torch.cat([z1.var(0), self.top_dist.variance.to(z1)])

    def marginal_icdf(self, p: Tensor, dim: int) -> Tensor:
        """Quantiles of dimension `dim`'s marginal at probabilities p (S,): the top's for z_2, the
        fixed draws' empirical quantiles for z_1."""
        if dim >= self.bottom:
            return self.top_dist.marginal_icdf(p, dim - self.bottom)
        return torch.quantile(self.marginal_draws[:, dim].double().cpu(), p.double())


MARGINAL_DRAWS = 20_000


class LayeredPrior(Prior):
    """`hier`: two stochastic layers, z_2 ~ `top_prior` on the last `top` of the L dimensions
    (default N(0, I); `hier-vamp`: a VampPrior) and z_1 | z_2 ~ N(mu(z_2), sigma(z_2)^2) from a
    2-hidden-layer MLP of `width` units (ReLU). Its output layer starts at zero, so p(z_1|z_2)
    starts as N(0, I) whatever z_2 (and the whole prior as N(0, I_L) under the default top)."""

    def __init__(self, latent_dim: int, top: int, width: int, top_prior: Prior | None = None):
        super().__init__(latent_dim)
        if not 1 <= top < latent_dim:
            raise VaekitError(f"the hier prior needs 1 <= --top-latent < --latent-dim; got "
                              f"--top-latent {top} of --latent-dim {latent_dim}")
        self.top, self.bottom = top, latent_dim - top
        self.net = nn.Sequential(nn.Linear(top, width), nn.ReLU(), nn.Linear(width, width),
                                 nn.ReLU(), nn.Linear(width, 2 * self.bottom))
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        self.top_prior = top_prior if top_prior is not None else StandardNormalPrior(top)
        if self.top_prior.latent_dim != top:
            raise VaekitError(f"the hier prior's top layer has {top} dimensions; its prior has "
                              f"{self.top_prior.latent_dim}")
        top_caption = (f"N(0, I_{top})" if isinstance(self.top_prior, StandardNormalPrior)
                       else f"the VampPrior of {len(self.top_prior.pseudo_inputs)} pseudo-inputs"
                       if isinstance(self.top_prior, VampPrior) else "a learned prior")
        self.caption = (f"z_2 ~ {top_caption}, z_1 ~ p(z_1|z_2) (learned), {self.bottom} + {top} "
                        "dimensions")

    def bind(self, model: nn.Module) -> None:
        self.top_prior.bind(model)

    def init_from_data(self, x: Tensor) -> None:
        self.top_prior.init_from_data(x)

    def dist(self) -> LayeredGaussian:
        return LayeredGaussian(self.net, self.bottom, self.top, self.top_prior.dist())

    def dist_like(self, like: Tensor) -> LayeredGaussian:
        """On like's device and dtype: a copy of the net, and the top prior's own `dist_like` (a
        VampPrior encodes through its model, which is not copied)."""
        net = copy.deepcopy(self.net).to(like.device, like.dtype)
        return LayeredGaussian(net, self.bottom, self.top, self.top_prior.dist_like(like))
