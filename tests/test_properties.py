"""Property-based tests (hypothesis) of the decoder likelihoods, over random parameters:
each is a normalized distribution over its support (a brute-force sum over {0,1}^D, a numerical
integral), and its log-density stays finite for any finite parameter at the extremes of the data."""

from __future__ import annotations

import itertools
import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vaekit.likelihoods import MIN_LOG_SIGMA, Bernoulli, Gaussian, build_likelihood

SETTINGS = settings(max_examples=50, deadline=None)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


def logit_vectors(max_dim: int, bound: float = 50.0):
    return st.integers(1, max_dim).flatmap(
        lambda d: st.lists(finite.filter(lambda v: abs(v) <= bound), min_size=d, max_size=d))


def gaussian(log_sigma: float, learned: bool, dim: int = 1) -> Gaussian:
    """A gaussian likelihood with log sigma set (a learned parameter, floored, or a fixed one)."""
    lik = Gaussian(dim) if learned else Gaussian(dim, sigma=math.exp(log_sigma))
    with torch.no_grad():
        lik.log_sigma.fill_(log_sigma)
    return lik.double()


def trapezoid_mass(lik: Gaussian, mean: torch.Tensor, sd: torch.Tensor, n: int) -> float:
    """Integral of exp(log_prob) over mean +- 12 sd per dimension, on an n^D grid (D = 1 or 2)."""
    axes = [torch.linspace(float(m - 12 * s), float(m + 12 * s), n, dtype=torch.float64)
            for m, s in zip(mean, sd, strict=True)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    with torch.no_grad():
        density = lik.log_prob(grid, mean.expand_as(grid)).exp().reshape([n] * len(axes))
    for axis in reversed(axes):  # integrate out the last dimension, then the one before
        density = torch.trapezoid(density, axis, dim=-1)
    return float(density)


@SETTINGS
@given(logit_vectors(max_dim=8))
@example([50.0] * 8)
@example([-50.0, 50.0, 0.0])
@example([21.0])  # torch's F.softplus returns x above 20: the pmf summed to 1 + 7.6e-10
def test_bernoulli_pmf_sums_to_one_over_all_binary_vectors(logits):
    d = len(logits)
    support = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    params = torch.tensor(logits, dtype=torch.float64).expand(len(support), d)
    log_p = Bernoulli(support.shape[-1]).log_prob(support, params)  # (2^D,)
    assert abs(float(torch.logsumexp(log_p, 0))) < 1e-12


@SETTINGS
@given(mean=st.floats(-100, 100), log_sigma=st.floats(-12.0, 4.0), learned=st.booleans())
@example(mean=3.0, log_sigma=-12.0, learned=True)  # under the floor: sigma = 1e-3
@example(mean=3.0, log_sigma=-12.0, learned=False)  # a fixed sigma is the user's, not floored
def test_gaussian_density_integrates_to_one_in_1d(mean, log_sigma, learned):
    lik = gaussian(log_sigma, learned)
    # the sd the likelihood should use: the floor applies to a learned sigma only
    sd = math.exp(max(log_sigma, MIN_LOG_SIGMA) if learned else log_sigma)
    mass = trapezoid_mass(lik, torch.tensor([mean], dtype=torch.float64),
                          torch.tensor([sd], dtype=torch.float64), 4001)
    assert abs(mass - 1) < 1e-6


@SETTINGS
@given(mean=st.tuples(st.floats(-10, 10), st.floats(-10, 10)),
       log_sigma=st.floats(-3.0, 2.0), learned=st.booleans())
def test_gaussian_density_integrates_to_one_in_2d(mean, log_sigma, learned):
    """Two features: the normalizing constant is paid once per feature."""
    lik = gaussian(log_sigma, learned, dim=2)
    sd = torch.full((2,), math.exp(log_sigma), dtype=torch.float64)
    mass = trapezoid_mass(lik, torch.tensor(mean, dtype=torch.float64), sd, 401)
    assert abs(mass - 1) < 1e-4


@SETTINGS
@given(logits=logit_vectors(max_dim=16), grey=st.floats(0.0, 1.0))
def test_bernoulli_log_prob_is_finite_at_the_ends_of_the_data_range(logits, grey):
    """x = 0, x = 1 (and a grey level) under logits up to +-50, in float32 as in training."""
    params = torch.tensor([[*logits], [*logits], [*logits]], dtype=torch.float32)
    params[:, 0] = torch.tensor([50.0, -50.0, 0.0])  # the extremes, always present
    for x_value in (0.0, 1.0, grey):
        x = torch.full_like(params, x_value)
        log_p = Bernoulli(x.shape[-1]).log_prob(x, params)
        assert torch.isfinite(log_p).all()
        if x_value in (0.0, 1.0):
            assert (log_p <= 0).all()  # a pmf: log p <= 0
    # the far end costs what it should: log sigmoid(-50) = -50 - log(1 + e^-50)
    one = Bernoulli(1).log_prob(torch.ones(1, 1), torch.full((1, 1), -50.0))
    assert float(one) == float(torch.tensor(-50.0))


@SETTINGS
@given(log_sigma=st.floats(-1e4, 20.0), mean=st.floats(-1e3, 1e3),
       x=st.sampled_from([-1e3, 0.0, 1e3]))
@example(log_sigma=-1e4, mean=-1e3, x=1e3)
def test_learned_gaussian_log_prob_is_finite_at_the_sigma_floor(log_sigma, mean, x):
    """Any finite log sigma parameter, however small: the floor (sigma >= 1e-3) keeps the density
    finite at the ends of a standardized data range, in float32 as in training."""
    lik = Gaussian(1).requires_grad_(False)
    lik.log_sigma.fill_(log_sigma)
    log_p = lik.log_prob(torch.tensor([[x]]), torch.tensor([[mean]]))
    assert torch.isfinite(log_p).all()
    # at the floor, the density at the mean is that of N(0, 1e-3^2)
    at_mean = lik.log_prob(torch.tensor([[mean]]), torch.tensor([[mean]]))
    log_sd = max(log_sigma, MIN_LOG_SIGMA)
    assert abs(float(at_mean) + log_sd + 0.5 * math.log(2 * math.pi)) < 1e-5 * max(1.0, log_sd)


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
       st.sampled_from(["bernoulli", "gaussian", "gaussian-fixed"]))
def test_params_for_mean_inverts_mean(means, name):
    """The decoder's output bias starts at the data mean: mean(params_for_mean(m)) = m, with the
    Bernoulli mean kept in [1e-3, 1 - 1e-3] so the logits stay finite."""
    lik = build_likelihood(name, len(means), 1.0)
    m = torch.tensor(means, dtype=torch.float64)
    back = lik.mean(lik.params_for_mean(m))
    want = m.clamp(1e-3, 1 - 1e-3) if name == "bernoulli" else m
    torch.testing.assert_close(back, want, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(lik.params_for_mean(m)).all()
