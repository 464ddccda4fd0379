"""Posteriors q(z|x) and priors p(z) as distribution objects, looked up by name.

In the style of torch.distributions (they subclass `Distribution`): `rsample(shape)`, `sample`,
`log_prob(z)` (summed over the latent dimension), `mean`. Two additions the VAE needs:
- `from_noise(eps)`: the reparameterization z = g(eps) for given standard-normal noise eps
  (..., B, L), so callers can control the draws (anomaly scores with per-example seeds);
- `kl_terms(q, p, z)`: the KL term, analytic where torch.distributions' registry (or ours, below)
  has a closed form for the pair, else the Monte Carlo estimate log q(z|x) - log p(z) from the same
  draws z; plus the KL of each latent dimension where it is defined (factorized q and p).

The autoencoder's code is a `PointMass`: z = the code, no density, and by convention no KL term
(its objective is the reconstruction alone; its rate is not measured and reported as 0).

The registries POSTERIORS and PRIORS are at the end; entries with more code live in their own
modules: the priors (normal, mog, vamp, hier, hier-vamp) in priors.py, the iaf posterior in
flows.py, the layered posterior in layered.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints, kl_divergence, register_kl

from .errors import VaekitError
from .flows import IAF, IAFPosterior
from .layered import LayeredHead, LayeredPosterior
from .priors import (
    GaussianMixture,
    LayeredGaussian,
    LayeredPrior,
    MixturePrior,
    Prior,
    StandardNormal,
    StandardNormalPrior,
    VampPrior,
)

if TYPE_CHECKING:
    from .config import ModelConfig

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian(Distribution):
    """q(z|x) = N(mu, diag exp(logvar)) over L dimensions; batch (B,), event (L,)."""

    arg_constraints = {"loc": constraints.real, "logvar": constraints.real}
    support = constraints.real_vector
    has_rsample = True
    has_density = True

    def __init__(self, loc: Tensor, logvar: Tensor):
        self.loc, self.logvar = loc, logvar
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def params(self) -> Tensor:
        """(B, 2L): what the encoder gave (the posterior is rebuilt from these)."""
        return torch.cat([self.loc, self.logvar], -1)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.logvar.exp()

    def from_noise(self, eps: Tensor) -> Tensor:
        return self.loc + torch.exp(0.5 * self.logvar) * eps

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        eps = torch.randn((*sample_shape, *self.loc.shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        return self.from_noise(eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; mu, diag exp(logvar)), constants included: (..., B)."""
        return -0.5 * ((z - self.loc).square() * torch.exp(-self.logvar) + self.logvar
                       + LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return 0.5 * (self.logvar + 1 + LOG_2PI).sum(-1)

    def gaussian_marginal(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """(loc, logvar) of the marginal over dimensions start..stop-1 (a VampPrior's mixture)."""
        return self.loc[..., start:stop], self.logvar[..., start:stop]


class PointMass(Distribution):
    """The autoencoder's code: all mass at `loc` (B, L); no density."""

    arg_constraints = {"loc": constraints.real}
    support = constraints.real_vector
    has_rsample = True
    has_density = False

    def __init__(self, loc: Tensor):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def params(self) -> Tensor:
        return self.loc

    @property
    def mean(self) -> Tensor:
        return self.loc

    def from_noise(self, eps: Tensor) -> Tensor:
        """The code, once: (1, B, L) for eps (S, B, L) (every draw would be the same)."""
        return self.loc[None]

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        return self.loc.expand(*sample_shape, *self.loc.shape)

    def log_prob(self, z: Tensor) -> Tensor:
        raise VaekitError("a deterministic autoencoder (--model ae) has no q(z|x) density; use a "
                          "VAE for importance sampling, the mutual information or the kl score")


@register_kl(DiagonalGaussian, StandardNormal)
def _kl_gaussian_standard(q: DiagonalGaussian, p: StandardNormal) -> Tensor:
    return gaussian_kl(q.loc, q.logvar).sum(-1)


@register_kl(PointMass, Distribution)
def _kl_point(q: PointMass, p: Distribution) -> Tensor:
    return torch.zeros(q.batch_shape, device=q.loc.device, dtype=q.loc.dtype)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, closed form.

    Kingma & Welling (2014), Appendix B: -KL = 1/2 (1 + log sigma^2 - mu^2 - sigma^2).
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def gaussian_kl_between(mu: Tensor, logvar: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(mu_p, exp(logvar_p))) per dimension, closed form."""
    return 0.5 * (logvar_p - logvar + (logvar.exp() + (mu - mu_p).square()) * torch.exp(-logvar_p)
                  - 1.0)


# KL per latent dimension, for pairs of factorized distributions: (B, L).
KL_PER_DIM: dict[tuple[type, type], Callable[[Distribution, Distribution], Tensor]] = {
    (DiagonalGaussian, StandardNormal): lambda q, p: gaussian_kl(q.loc, q.logvar),
    (PointMass, StandardNormal): lambda q, p: torch.zeros_like(q.loc),
    (PointMass, GaussianMixture): lambda q, p: torch.zeros_like(q.loc),  # the autoencoder: no KL
}


@dataclass
class KL:
    """The KL term of a batch: per example (B,), per dimension (B, L) where defined, and whether
    it is analytic (else a Monte Carlo estimate from the draws z)."""

    total: Tensor
    per_dim: Tensor | None
    analytic: bool


def closed_form_kl(q: Distribution, p: Distribution) -> KL | None:
    """KL(q(z|x) || p(z)) per example where a closed form is registered for (q, p) (ours per
    dimension, else torch.distributions'); None where there is none (mixtures, flows)."""
    per_dim = KL_PER_DIM.get((type(q), type(p)))
    if per_dim is not None:  # factorized pair: the total is the sum of its dimensions
        values = per_dim(q, p)
        return KL(values.sum(-1), values, True)
    try:
        return KL(kl_divergence(q, p), None, True)
    except NotImplementedError:
        return None


def kl_terms(q: Distribution, p: Distribution, z: Tensor | None = None) -> KL:
    """KL(q(z|x) || p(z)) per example: closed form where one is registered for (q, p), else the
    mean over the draws z (S, B, L) or (B, L) of log q(z|x) - log p(z)."""
    closed = closed_form_kl(q, p)
    if closed is not None:
        return closed
    if z is None:
        raise VaekitError(f"KL({type(q).__name__} || {type(p).__name__}) has no closed form: it is "
                          "a Monte Carlo estimate from draws of z, which this use does not take")
    reduced = KL_FROM_DRAWS.get((type(q), type(p)))
    total = reduced(q, p, z) if reduced is not None else None
    if total is not None:
        return KL(total, None, False)
    mc = q.log_prob(z) - p.log_prob(z)
    return KL(mc.mean(0) if z.dim() == 3 else mc, None, False)


def _kl_iaf(q: IAFPosterior, p: Distribution, z: Tensor) -> Tensor | None:
    """KL(q_T || p) = KL(q_0 || N(0, I)) (closed form) + E[log N(z_0; 0, I) - log p(z_T) - log-det]:
    the same expectation as log q(z_T) - log p(z_T), with the base's closed form as a control
    variate (the Monte Carlo part vanishes for an identity flow and p = N(0, I), as a `hier` prior
    is at its start); None if z is not q's draw."""
    base = q.base_of(z)
    if base is None:
        return None
    z0, logdet = base
    mc = StandardNormal(z0.shape[-1]).log_prob(z0) - p.log_prob(z) - logdet  # (S, B) or (B,)
    return gaussian_kl(q.loc, q.logvar).sum(-1) + (mc.mean(0) if z.dim() == 3 else mc)


def _kl_gaussian_layered(q: DiagonalGaussian, p: LayeredGaussian, z: Tensor) -> Tensor:
    """KL(q || p(z_2) p(z_1|z_2)) for a diagonal Gaussian q, whose layers are independent:
    KL(q(z_2) || p(z_2)) + E_q(z_2) KL(q(z_1) || p(z_1|z_2)), the second KL in closed form and the
    expectation over the z_2 of the draws z; the first in closed form under a N(0, I) top, else
    (a VampPrior top, `hier-vamp`) by `kl_terms` from the same z_2. Under a N(0, I) top only z_2's
    draw is random: at the prior's start (N(0, I)) this is the Gaussian KL exactly. The plain
    log q(z) - log p(z) over the 150 dimensions of a two-layer MNIST model was noisy enough, at the
    start, to keep the encoder from learning anything (every unit inactive after an epoch); this one
    starts as the standard VAE does."""
    b = p.bottom
    top = kl_terms(DiagonalGaussian(q.loc[..., b:], q.logvar[..., b:]), p.top_dist, z[..., b:]).total
    mu_p, logvar_p = p.conditional(z[..., b:])
    bottom = gaussian_kl_between(q.loc[..., :b], q.logvar[..., :b], mu_p, logvar_p).sum(-1)
    return top + (bottom.mean(0) if z.dim() == 3 else bottom)


def _kl_layered(q: LayeredPosterior, p: Distribution, z: Tensor) -> Tensor | None:
    """KL(q(z_2|x) q(z_1|x, z_2) || p) for p = N(0, I) or a two-layer prior of the same split:
    KL(q(z_2|x) || p(z_2)) + E_q(z_2) KL(q(z_1|x, z_2) || p(z_1|z_2)), both inner KLs between
    diagonal Gaussians in closed form, the expectation over the z_2 of the draws z (the first KL by
    `kl_terms` from the same z_2 under a VampPrior top). None where the split differs."""
    b = q.bottom
    z2 = z[..., b:]
    mu1, logvar1 = q.conditional(z2)
    if isinstance(p, StandardNormal):
        top = gaussian_kl(*q.top()).sum(-1)
        bottom = gaussian_kl(mu1, logvar1).sum(-1)
    elif p.bottom == b:
        top = kl_terms(DiagonalGaussian(*q.top()), p.top_dist, z2).total
        bottom = gaussian_kl_between(mu1, logvar1, *p.conditional(z2)).sum(-1)
    else:
        return None
    return top + (bottom.mean(0) if z.dim() == 3 else bottom)


# Monte Carlo KL estimates with less variance than log q(z) - log p(z), per pair (None: not here).
KL_FROM_DRAWS: dict[tuple[type, type], Callable[[Distribution, Distribution, Tensor], Tensor | None]] = {
    (IAFPosterior, StandardNormal): _kl_iaf,
    (IAFPosterior, LayeredGaussian): _kl_iaf,
    (DiagonalGaussian, LayeredGaussian): _kl_gaussian_layered,
    (LayeredPosterior, StandardNormal): _kl_layered,
    (LayeredPosterior, LayeredGaussian): _kl_layered,
}


def kl_per_dim(q: Distribution, p: Distribution) -> Tensor | None:
    """KL of each latent dimension (B, L) for a factorized pair, else None (e.g. a mixture prior
    or a flow posterior: the KL does not split over dimensions)."""
    per_dim = KL_PER_DIM.get((type(q), type(p)))
    return None if per_dim is None else per_dim(q, p)


def _pairwise_gaussian(q: DiagonalGaussian, z: Tensor) -> Tensor:
    # log q(z|x_n) = -1/2 [z^2 . p_n - 2 z . (mu_n p_n) + sum(mu_n^2 p_n + logvar_n) + L log 2pi],
    # as matrix products: no (b, N, L) tensor. float64 keeps the expansion accurate unless posterior
    # variances are extreme (error about 1e-16 |z|^2 / sigma^2 nats).
    prec = torch.exp(-q.logvar)  # (N, L)
    const = (q.loc.square() * prec + q.logvar).sum(-1) + q.loc.shape[-1] * LOG_2PI  # (N,)
    return -0.5 * (z.square() @ prec.T - 2 * z @ (q.loc * prec).T + const)


PAIRWISE: dict[type, Callable[[Distribution, Tensor], Tensor]] = {DiagonalGaussian: _pairwise_gaussian}


def has_pairwise(q: Distribution) -> bool:
    """Whether log q(z_b | x_n) of every pair is cheap (a closed form in PAIRWISE): not for the
    iaf posterior, whose density at another example's draw inverts the flow (O(L) passes)."""
    return type(q) in PAIRWISE


def pairwise_log_prob(q: Distribution, z: Tensor) -> Tensor:
    """log q(z_b | x_n) for every draw z_b (b, L) and every example n of q's batch (N,): (b, N)."""
    fast = PAIRWISE.get(type(q))
    return fast(q, z) if fast is not None else q.log_prob(z[:, None, :])


# --- registries -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PosteriorEntry:
    """How to turn the encoder's output (B, params(L)) into q(z|x); `head(config)` builds the
    posterior's own learned module (the IAF's flow), handed to `build` as its third argument."""

    params: Callable[[int], int]  # encoder outputs needed for L latent dimensions
    build: Callable[[Tensor, int, nn.Module | None], Distribution]
    about: str
    has_density: bool = True  # log q(z|x) exists (importance sampling, MI, the kl score)
    head: Callable[[ModelConfig], nn.Module] | None = None
    factorized: bool = True  # independent dimensions: the KL of each one exists (--free-bits)


def _gaussian(h: Tensor, latent_dim: int, head: nn.Module | None = None) -> DiagonalGaussian:
    mu, logvar = h.chunk(2, dim=-1)  # mean and log-variance share one output layer
    return DiagonalGaussian(mu, logvar)


def _point(h: Tensor, latent_dim: int, head: nn.Module | None = None) -> PointMass:
    return PointMass(h)


def _iaf(h: Tensor, latent_dim: int, head: nn.Module | None = None) -> IAFPosterior:
    """The base's log-variance is bounded above by 0 (sigma_0 <= 1, the prior's scale), smoothly:
    -softplus(-a). Unbounded, a latent dimension the decoder ignores drifts along a direction the
    ELBO cannot see (sigma_0 up, the gates g down, sigma_0 * g fixed), where the Monte Carlo KL's
    variance grows as sigma_0^4 (`distributions.KL_FROM_DRAWS`): on `mnist-nll-iaf` the base's
    largest log-variance rose to 5.7 by epoch 10 and training blew up in epoch 12."""
    mu, raw, context = h.split(latent_dim, dim=-1)  # context: the paper's h, L values
    return IAFPosterior(mu, -nn.functional.softplus(-raw), context, head)


def _iaf_head(config: ModelConfig) -> IAF:
    return IAF(config.latent_dim, config.flow_steps, config.flow_hidden)


def _layered_posterior(h: Tensor, latent_dim: int,
                       head: nn.Module | None = None) -> LayeredPosterior:
    mu, logvar = h.chunk(2, dim=-1)
    return LayeredPosterior(mu, logvar, head)


def _layered_head(config: ModelConfig) -> LayeredHead:
    """The conditional q(z_1|x, z_2) of --top-latent top dimensions (the two-layer priors' split),
    two ReLU layers as wide as the last --hidden layer (256 for a conv backbone)."""
    top = top_latent(config)
    return LayeredHead(config.latent_dim - top, top, config.hidden[-1] if config.hidden else 256)


def _two_per_dim(latent_dim: int) -> int:
    return 2 * latent_dim


def _three_per_dim(latent_dim: int) -> int:
    return 3 * latent_dim


def _one_per_dim(latent_dim: int) -> int:
    return latent_dim


POSTERIORS: dict[str, PosteriorEntry] = {  # named functions, not lambdas: models stay picklable
    "gaussian": PosteriorEntry(_two_per_dim, _gaussian, "diagonal Gaussian N(mu(x), sigma(x)^2)"),
    "point": PosteriorEntry(_one_per_dim, _point, "point mass at the code (the plain autoencoder)",
                            has_density=False),
    "iaf": PosteriorEntry(_three_per_dim, _iaf, "inverse autoregressive flow: --flow-steps MADE "
                          "steps of --flow-hidden units on a diagonal Gaussian (Kingma et al. "
                          "2016)", head=_iaf_head, factorized=False),
    "layered": PosteriorEntry(_two_per_dim, _layered_posterior, "two stochastic layers, "
                              "q(z_2|x) q(z_1|x, z_2): z_2 on the last --top-latent dimensions a "
                              "diagonal Gaussian, z_1 given z_2 a diagonal Gaussian from a learned "
                              "MLP (Tomczak & Welling 2018's two-layer posterior; for --prior hier "
                              "or hier-vamp)", head=_layered_head, factorized=False),
}


@dataclass(frozen=True)
class PriorEntry:
    build: Callable[[ModelConfig, tuple[int, ...]], Prior]
    about: str
    components: int = 0  # default --prior-components (0: the prior has none)
    layered: bool = False  # two stochastic layers (--top-latent)
    posteriors: tuple[str, ...] = ()  # the posteriors it takes (built from the posteriors of
    # pseudo-inputs: those whose marginal there is a diagonal Gaussian); empty: any


def _normal(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    return StandardNormalPrior(config.latent_dim)


def _mog(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    return MixturePrior(config.latent_dim, config.prior_components or PRIORS["mog"].components)


def _vamp(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    return VampPrior(config.latent_dim, config.prior_components or PRIORS["vamp"].components,
                     input_shape)


def _layered(config: ModelConfig, top_prior: Prior | None = None) -> LayeredPrior:
    """The two-layer prior of --top-latent top dimensions (default a third of L), its net as wide
    as the last --hidden layer (256 for a conv backbone), over `top_prior` (default N(0, I))."""
    top = top_latent(config)
    return LayeredPrior(config.latent_dim, top, config.hidden[-1] if config.hidden else 256,
                        top_prior)


def top_latent(config: ModelConfig) -> int:
    """The top layer's dimensions of a layered prior: --top-latent, default a third of L."""
    return config.top_latent or max(1, config.latent_dim // 3)


def _hier(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    return _layered(config)


def _hier_vamp(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    top = top_latent(config)
    return _layered(config, VampPrior(top, config.prior_components or PRIORS["hier-vamp"].components,
                                      input_shape, start=config.latent_dim - top))


PRIORS: dict[str, PriorEntry] = {
    "normal": PriorEntry(_normal, "standard normal N(0, I)"),
    "mog": PriorEntry(_mog, "a learned mixture of --prior-components diagonal Gaussians", 10),
    "vamp": PriorEntry(_vamp, "VampPrior: the mixture of the posteriors of --prior-components "
                       "learned pseudo-inputs (Tomczak & Welling 2018; needs --posterior gaussian)",
                       500, posteriors=("gaussian",)),
    "hier": PriorEntry(_hier, "two stochastic layers: z_2 ~ N(0, I) on the last --top-latent "
                       "dimensions of z, z_1 ~ N(mu(z_2), sigma(z_2)^2) on the others from a learned "
                       "MLP as wide as the last --hidden layer (the generative side of Burda et al. "
                       "2015's two-layer model; the decoder reads all of z)", layered=True),
    "hier-vamp": PriorEntry(_hier_vamp, "hier with a VampPrior on the top layer z_2: the mixture of "
                            "the top-layer posteriors of --prior-components learned pseudo-inputs "
                            "(Tomczak & Welling 2018's two-layer model; needs --posterior "
                            "gaussian or layered)", 500, layered=True,
                            posteriors=("gaussian", "layered")),
}


def build_prior(config: ModelConfig, input_shape: tuple[int, ...]) -> Prior:
    if config.prior not in PRIORS:
        raise VaekitError(f"unknown prior {config.prior!r}; choose one of {', '.join(PRIORS)}")
    return PRIORS[config.prior].build(config, input_shape)


def posterior_entry(name: str) -> PosteriorEntry:
    if name not in POSTERIORS:
        raise VaekitError(f"unknown posterior {name!r}; choose one of {', '.join(POSTERIORS)}")
    return POSTERIORS[name]


def described(registry: dict, lead: str = "") -> str:
    """'name (about) | name (about) ...' of a registry: the --help text of its option."""
    return lead + " | ".join(f"{name} ({entry.about})" for name, entry in registry.items())
