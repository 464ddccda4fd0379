"""Decoder likelihoods p(x|z), looked up by name. Log-densities are in nats, constants included.

A likelihood is built for examples of one shape, `event_shape` ((D,) tables, (C, H, W) images). It
declares the shape of the parameters it needs from the decoder (`param_shape`, per example) and
turns them into a distribution over x:
- `log_prob(x, params)`: x (B, *event_shape), params (..., B, *param_shape) -> (..., B), summed over
  the event dimensions;
- `mean(params)`, `sample(params, generator)`: (..., B, *event_shape), model space;
- `params_for_mean(mean)`: parameters whose mean is `mean` (event_shape), to start the decoder at the
  data's mean; `check(x, name)`: refuse data outside the support in one line.
`continuous` says whether log_prob is a density (then the model adds the log-Jacobian of its
preprocessing) or a probability mass function. Adding one is one registry entry.

Here: bernoulli, the gaussians and laplace-fixed; pixels.py: the 8-bit pmfs (discretized-logistic,
categorical); counts.py: poisson and negative-binomial. The registry LIKELIHOODS below holds them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from .errors import VaekitError

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_SIGMA = math.log(1e-3)  # a floor keeps a learned sigma from collapsing on constant pixels


def sum_event(values: Tensor, event_dims: int) -> Tensor:
    """(..., B, *event) -> (..., B): the sum over the last `event_dims` dimensions."""
    return values.flatten(-event_dims).sum(-1) if event_dims else values


class Likelihood(nn.Module):
    """What every likelihood shares: the example shape it was built for."""

    continuous = True

    def __init__(self, event_shape: tuple[int, ...] | int):
        super().__init__()
        shape = (event_shape,) if isinstance(event_shape, int) else event_shape
        self.event_shape = tuple(int(s) for s in shape)

    def param_shape(self) -> tuple[int, ...]:
        return self.event_shape  # one parameter per value unless the likelihood says otherwise

    def check(self, x: Tensor, name: str) -> None:
        pass


class Bernoulli(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)); x in [0, 1] (binary for a true pmf)."""

    continuous = False

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        """(..., B): x (B, *event) against logits (..., B, *event). torch's fused BCE with logits:
        one kernel each way instead of the seven of x l - softplus(l) written out (6% more
        training images/s on the CPU for the 784-400-20 MLP), and exact in float64 (F.softplus's
        linear branch above 20 is off by 2e-9, and a float64 pmf then no longer sums to 1)."""
        logits, x = torch.broadcast_tensors(logits, x)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return -sum_event(bce, len(self.event_shape))

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


class Gaussian(Likelihood):
    """p(x|z) = prod_d N(x_d; mu_d, sigma_d^2), sigma learned (one per value, or with shared=True
    one for all values) or fixed."""

    def __init__(self, event_shape: tuple[int, ...] | int, sigma: float | None = None,
                 shared: bool = False):
        super().__init__(event_shape)
        dim = 1 if shared else math.prod(self.event_shape)
        self.learned = sigma is None
        log_sigma = torch.zeros(dim) if sigma is None else torch.full((dim,), math.log(sigma))
        if self.learned:  # flat (D,) or (1,): (D,) is the name and shape of vaekit 0.1 checkpoints
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def sigma_log(self) -> Tensor:
        """log sigma (*event_shape), with the floor for a learned sigma."""
        log_sigma = self.log_sigma.clamp(min=MIN_LOG_SIGMA) if self.learned else self.log_sigma
        return log_sigma.expand(math.prod(self.event_shape)).reshape(self.event_shape)

    def log_prob(self, x: Tensor, mean: Tensor) -> Tensor:
        log_sigma = self.sigma_log()
        z = (x - mean) * torch.exp(-log_sigma)
        return sum_event(-0.5 * z.square() - log_sigma - 0.5 * LOG_2PI, len(self.event_shape))

    def mean(self, mean: Tensor) -> Tensor:
        return mean

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return mean

    def sample(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + noise * self.sigma_log().exp()


class Laplace(Likelihood):
    """p(x|z) = prod_d Laplace(x_d; mu_d, b) = prod_d exp(-|x_d - mu_d| / b) / (2b), with a fixed
    scale b (the variance is 2b^2). Its log-density falls linearly, not quadratically, with the
    distance from the mean, so no single value far from its reconstruction (a rare level of a
    near-constant feature, an outlier in the training data) dominates the loss or a score."""

    def __init__(self, event_shape: tuple[int, ...] | int, scale: float):
        super().__init__(event_shape)
        self.register_buffer("log_scale", torch.tensor(math.log(scale)))

    def log_prob(self, x: Tensor, mean: Tensor) -> Tensor:
        values = -(x - mean).abs() * torch.exp(-self.log_scale) - self.log_scale - math.log(2)
        return sum_event(values, len(self.event_shape))

    def mean(self, mean: Tensor) -> Tensor:
        return mean

    def params_for_mean(self, mean: Tensor) -> Tensor:
        return mean

    def sample(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x = mu + b (e_1 - e_2), e_1 and e_2 standard exponentials: finite for every draw (the
        inverse CDF takes log(0) where a uniform draw lands on its lower end)."""
        e = torch.empty((2, *mean.shape), dtype=mean.dtype, device=mean.device)
        e.exponential_(generator=generator)
        return mean + self.log_scale.exp() * (e[0] - e[1])


@dataclass(frozen=True)
class LikelihoodOptions:
    """What the likelihoods read from the model config (each takes what it needs)."""

    sigma: float = 1.0  # gaussian-fixed: the standard deviation; laplace-fixed: the scale b (model units)
    mixtures: int = 10  # discretized-logistic: logistic components per pixel
    coupled: bool = True  # discretized-logistic: later channels' centres depend on earlier ones

    @classmethod
    def from_config(cls, config: Any) -> LikelihoodOptions:
        """The options a config (ModelConfig) holds under these names; the rest keep their defaults."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})


@dataclass(frozen=True)
class Entry:
    build: Callable[[tuple[int, ...], LikelihoodOptions], Likelihood]
    about: str
    standardize: bool = False  # tabular data is standardized by default for this likelihood
    scaled: bool = True  # unstandardized data is divided by its maximum (255 for uint8); False:
    # modelled as given (counts)


# The entries of other modules import this one's base class: imported once it is defined.
from .counts import NegativeBinomial, Poisson  # noqa: E402
from .pixels import Categorical256, DiscretizedLogistic  # noqa: E402

LIKELIHOODS: dict[str, Entry] = {
    "bernoulli": Entry(lambda shape, o: Bernoulli(shape), "binary data (or values in [0, 1])"),
    "gaussian": Entry(lambda shape, o: Gaussian(shape), "a learned standard deviation per value",
                      standardize=True),
    "gaussian-fixed": Entry(lambda shape, o: Gaussian(shape, o.sigma), "a fixed --sigma",
                            standardize=True),
    "gaussian-shared": Entry(lambda shape, o: Gaussian(shape, shared=True),
                             "one learned standard deviation shared by all values (the calibrated "
                             "decoder of the sigma-VAE, Rybkin et al. 2021)", standardize=True),
    "laplace-fixed": Entry(lambda shape, o: Laplace(shape, o.sigma), "a Laplace density of fixed "
                           "scale --sigma (heavier tails than the gaussian: a value far from its "
                           "reconstruction costs its distance, not its square)", standardize=True),
    "discretized-logistic": Entry(lambda shape, o: DiscretizedLogistic(shape, o.mixtures, o.coupled),
                                  "8-bit images: a mixture of --mixtures discretized logistics per "
                                  "pixel, colour channels coupled (PixelCNN++)"),
    "categorical": Entry(lambda shape, o: Categorical256(shape),
                         "8-bit images: a free 256-way categorical per value"),
    "poisson": Entry(lambda shape, o: Poisson(shape), "counts (non-negative integers)", scaled=False),
    "negative-binomial": Entry(lambda shape, o: NegativeBinomial(shape),
                               "overdispersed counts: a learned dispersion per value", scaled=False),
}


def build_likelihood(name: str, event_shape: tuple[int, ...] | int,
                     options: LikelihoodOptions | float | None = None) -> Likelihood:
    """The likelihood `name` for examples of shape event_shape (an int D means (D,)); options: its
    LikelihoodOptions, or just the gaussian-fixed sigma."""
    if name not in LIKELIHOODS:
        raise VaekitError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if not isinstance(options, LikelihoodOptions):
        options = LikelihoodOptions() if options is None else LikelihoodOptions(sigma=float(options))
    return LIKELIHOODS[name].build(shape, options)
