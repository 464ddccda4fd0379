"""The likelihoods for 8-bit and count data against independent oracles: pmfs that sum to one,
log-probabilities written out with torch.distributions, samples whose frequencies match the pmf."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import (
    AffineTransform,
    Categorical,
    NegativeBinomial,
    Poisson,
    SigmoidTransform,
    TransformedDistribution,
    Uniform,
)

from vaekit.errors import VaekitError
from vaekit.likelihoods import LIKELIHOODS, LikelihoodOptions, build_likelihood

D64 = torch.float64
LEVELS = torch.arange(256, dtype=D64)


def logistic(k: int, coupled: bool = True, shape=(3, 2, 2)):
    return build_likelihood("discretized-logistic", shape, LikelihoodOptions(mixtures=k, coupled=coupled))


def random_params(lik, lead=(), g=None, log_scale=(-1.5, 0.5), centre=1.2) -> torch.Tensor:
    """Random parameters in the documented layout: logits, centres, log-scales, coupling."""
    g = g or torch.Generator().manual_seed(0)
    k, c, t = lik.k, lik.c, len(lik.pairs)
    spatial = lik.param_shape()[1:]
    logits = torch.randn(*lead, k, *spatial, generator=g, dtype=D64)
    centres = (torch.rand(*lead, c * k, *spatial, generator=g, dtype=D64) * 2 - 1) * centre
    lo, hi = log_scale
    log_s = lo + (hi - lo) * torch.rand(*lead, c * k, *spatial, generator=g, dtype=D64)
    coupling = torch.randn(*lead, t * k, *spatial, generator=g, dtype=D64)
    return torch.cat([logits, centres, log_s, coupling], dim=len(lead))


def logistic_cdf(v: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    base = Uniform(torch.zeros((), dtype=D64), torch.ones((), dtype=D64))
    return TransformedDistribution(base, [SigmoidTransform().inv, AffineTransform(loc, scale)]).cdf(v)


def oracle_log_prob(levels: torch.Tensor, params: torch.Tensor, k: int, c: int,
                    coupled: bool) -> torch.Tensor:
    """log p of levels (B, C, S) under params (B, P, S), written out: mixture over components of the
    product over channels of CDF differences on the bin edges (edge bins: the tails)."""
    pairs = [(cc, j) for cc in range(1, c) for j in range(cc)] if coupled else []
    t = len(pairs)
    logits, centres, log_s, coupling = params.split([k, c * k, c * k, t * k], dim=1)
    w = torch.softmax(logits, dim=1)  # (B, K, S)
    y = 2 * levels / 255 - 1
    total = torch.zeros_like(w)
    for m in range(k):
        prob = w[:, m]
        for ch in range(c):
            loc = centres[:, ch * k + m].clone()
            for i, (cc, j) in enumerate(pairs):
                if cc == ch:
                    loc += torch.tanh(coupling[:, i * k + m]) * y[:, j]
            scale = log_s[:, ch * k + m].exp()
            upper = torch.where(levels[:, ch] == 255, torch.ones_like(loc),
                                logistic_cdf(y[:, ch] + 1 / 255, loc, scale))
            lower = torch.where(levels[:, ch] == 0, torch.zeros_like(loc),
                                logistic_cdf(y[:, ch] - 1 / 255, loc, scale))
            prob = prob * (upper - lower)
        total[:, m] = prob
    return torch.log(total.sum(1)).sum(-1)


@pytest.mark.parametrize("coupled", [True, False])
def test_discretized_logistic_matches_logistic_cdf_oracle(coupled):
    lik = logistic(3, coupled)
    g = torch.Generator().manual_seed(1)
    params = random_params(lik, (2, 5), g)  # (samples, B, P, H, W)
    levels = torch.randint(0, 256, (5, 3, 2, 2), generator=g).to(D64)
    levels[0], levels[1, 0], levels[2, 1:] = 0, 255, 255  # the edge bins
    x = (levels / 255).float()  # model space as the data arrives: float32 k/255
    got = lik.log_prob(x, params)
    assert got.shape == (2, 5) and got.dtype == D64
    for s in range(2):
        want = oracle_log_prob(levels.reshape(5, 3, 4), params[s].reshape(5, -1, 4), 3, 3, coupled)
        torch.testing.assert_close(got[s], want, rtol=1e-9, atol=1e-9)


def test_pmf_of_one_channel_sums_to_one_edges_included():
    lik = logistic(4, shape=(1, 1, 1))
    g = torch.Generator().manual_seed(2)
    params = random_params(lik, (6, 1), g, log_scale=(-7, 1.5), centre=3.0)  # beyond [-1, 1]: tails
    x = (LEVELS / 255).reshape(256, 1, 1, 1)
    log_p = lik.log_prob(x, params.expand(6, 256, -1, -1, -1))  # (6, 256)
    torch.testing.assert_close(torch.logsumexp(log_p, dim=1), torch.zeros(6, dtype=D64),
                               rtol=0, atol=1e-10)


def test_joint_pmf_of_two_coupled_channels_sums_to_one():
    lik = logistic(3, shape=(2, 1, 1))
    params = random_params(lik, (1,), torch.Generator().manual_seed(3))
    grid = torch.cartesian_prod(LEVELS, LEVELS).reshape(-1, 2, 1, 1) / 255  # all 256^2 pixels
    log_p = lik.log_prob(grid, params.expand(len(grid), -1, -1, -1))
    assert abs(float(torch.logsumexp(log_p, 0))) < 1e-10


def test_each_channel_conditional_sums_to_one_given_earlier_channels():
    """RGB: the joint is prod_c p(x_c | x_<c, k) mixed over k, so each conditional must sum to one
    over the 256 levels of its channel whatever the earlier channels hold."""
    lik = logistic(3, shape=(3, 1, 1))
    g = torch.Generator().manual_seed(4)
    params = random_params(lik, (1,), g, log_scale=(-7, 1.0), centre=2.0)
    for c in range(3):
        x = torch.randint(0, 256, (1, 3, 1, 1), generator=g).to(D64).repeat(256, 1, 1, 1)
        x[:, c] = LEVELS.reshape(256, 1, 1)
        log_w, per_channel = lik.channel_log_probs(x / 255, params.expand(256, -1, -1, -1))
        total = torch.logsumexp(per_channel[:, c], dim=0)  # (K, S): one per component
        torch.testing.assert_close(total, torch.zeros_like(total), rtol=0, atol=1e-10)
        torch.testing.assert_close(log_w.exp().sum(1), torch.ones(256, 1, dtype=D64))


@settings(max_examples=40, deadline=None)
@given(centre=st.floats(-4, 4), log_scale=st.floats(-12, 4), logit=st.floats(-30, 30),
       coef=st.floats(-10, 10), first=st.integers(0, 255))
def test_pmf_sums_to_one_for_any_parameters(centre, log_scale, logit, coef, first):
    """Extreme centres, scales below the floor and above, lopsided weights: a finite pmf summing
    to one over the second channel (coupled to the first) and over single-channel pixels."""
    lik = logistic(2, shape=(2, 1, 1))
    # components: (logit, 0); centres (centre, -centre) per channel; log-scales; coupling coef, 0
    p = torch.tensor([logit, 0, centre, -centre, -centre, centre, log_scale, 0.0, 0.0, log_scale,
                      coef, 0.0], dtype=D64).reshape(1, 12, 1, 1)
    x = torch.stack([torch.full((256,), first / 255, dtype=D64), LEVELS / 255], 1).reshape(256, 2, 1, 1)
    log_w, per_channel = lik.channel_log_probs(x, p.expand(256, -1, -1, -1))
    assert torch.isfinite(per_channel).all() and (per_channel <= 1e-12).all()
    total = torch.logsumexp(per_channel[:, 1], dim=0)
    torch.testing.assert_close(total, torch.zeros_like(total), rtol=0, atol=1e-9)
    one = logistic(2, shape=(1, 1, 1))
    q = torch.tensor([logit, 0, centre, -centre, log_scale, 0.0], dtype=D64).reshape(1, 6, 1, 1)
    q.requires_grad_(True)
    log_p = one.log_prob((LEVELS / 255).reshape(256, 1, 1, 1), q.expand(256, -1, -1, -1))
    assert abs(float(torch.logsumexp(log_p.detach(), 0))) < 1e-9
    log_p.sum().backward()
    assert torch.isfinite(q.grad).all()  # no NaN from the branches a bin does not take


def test_log_scale_is_floored_at_minus_seven():
    lik = logistic(1, shape=(1, 1, 1))
    x = torch.tensor([0.4]).reshape(1, 1, 1, 1)
    at_floor, below = (torch.tensor([0.0, -0.2, s], dtype=D64).reshape(1, 3, 1, 1) for s in (-7, -20))
    assert lik.log_prob(x, below) == lik.log_prob(x, at_floor)


def chi_square(counts: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic over cells expecting >= 5 draws, the rest pooled; (statistic, dof)."""
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


def test_samples_follow_the_pmf_of_one_pixel():
    lik = logistic(2, shape=(1, 1, 1))
    # a component near the black edge (its tail piles into level 0) and one mid-range
    p = torch.tensor([0.3, -0.3, -0.97, 0.2, np.log(0.04), np.log(0.1)], dtype=D64).reshape(1, 6, 1, 1)
    n = 20000
    draws = lik.sample(p.expand(n, -1, -1, -1), torch.Generator().manual_seed(5))
    levels = torch.round(draws.flatten() * 255).long()
    assert torch.allclose(draws.flatten() * 255, levels.to(D64))  # on the grid
    pmf = lik.log_prob((LEVELS / 255).reshape(256, 1, 1, 1), p.expand(256, -1, -1, -1)).exp()
    stat, dof = chi_square(np.bincount(levels.numpy(), minlength=256), n * pmf.numpy())
    assert dof > 20 and stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)


def test_coupled_samples_follow_the_joint_pmf_of_two_channels():
    lik = logistic(2, shape=(2, 1, 1))
    p = torch.tensor([0.0, 0.5, -0.5, 0.4, 0.1, -0.2, np.log(0.03), np.log(0.02), np.log(0.02),
                      np.log(0.03), 1.2, -0.8], dtype=D64).reshape(1, 12, 1, 1)
    n = 20000
    draws = lik.sample(p.expand(n, -1, -1, -1), torch.Generator().manual_seed(6))
    lv = torch.round(draws.reshape(n, 2) * 255).long()
    grid = torch.cartesian_prod(LEVELS, LEVELS)
    pmf = lik.log_prob(grid.reshape(-1, 2, 1, 1) / 255, p.expand(len(grid), -1, -1, -1)).exp()
    counts = np.bincount((lv[:, 0] * 256 + lv[:, 1]).numpy(), minlength=256 * 256)
    stat, dof = chi_square(counts, n * pmf.numpy())
    assert dof > 30 and stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)


def test_mean_is_the_pmf_mean_within_half_a_level():
    lik = logistic(3, shape=(1, 1, 1))
    params = random_params(lik, (8,), torch.Generator().manual_seed(7), log_scale=(-4, 0.5))
    x = (LEVELS / 255).reshape(256, 1, 1, 1)
    for p in params:
        pmf = lik.log_prob(x, p.expand(256, -1, -1, -1)).exp()
        exact = float((pmf * LEVELS / 255).sum())
        assert float(lik.mean(p[None])) == pytest.approx(exact, abs=0.5 / 255)


def test_params_for_mean_start_at_the_data_mean():
    for coupled in (True, False):
        lik = logistic(5, coupled, shape=(3, 4, 4))
        m = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(8))
        params = lik.params_for_mean(m)
        assert params.shape == lik.param_shape() == (5 * (1 + 6 + 3 * coupled), 4, 4)
        torch.testing.assert_close(lik.mean(params[None])[0], m, rtol=0, atol=0.02)


def test_8bit_check_refuses_off_grid_data_in_one_line():
    lik = logistic(2, shape=(3, 2, 2))
    lik.check(torch.randint(0, 256, (4, 3, 2, 2)).float() / 255, "the train data")
    for bad in (torch.full((4, 3, 2, 2), 0.5), torch.full((4, 3, 2, 2), 2.0)):
        with pytest.raises(VaekitError, match="8-bit") as err:
            lik.check(bad, "the train data")
        assert "\n" not in str(err.value) and "uint8" in str(err.value)


def test_categorical_is_a_pmf_matching_torch():
    lik = build_likelihood("categorical", (3, 2, 2))
    g = torch.Generator().manual_seed(9)
    params = torch.randn(2, 4, 256 * 3, 2, 2, generator=g, dtype=D64)
    levels = torch.randint(0, 256, (4, 3, 2, 2), generator=g)
    got = lik.log_prob(levels.float() / 255, params)
    logits = params.reshape(2, 4, 3, 256, 2, 2).movedim(3, -1)  # channel c's block [256c, 256c+256)
    want = Categorical(logits=logits).log_prob(levels).sum((-3, -2, -1))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lik.mean(params), (Categorical(logits=logits).probs * LEVELS / 255)
                               .sum(-1), rtol=1e-12, atol=1e-12)
    one = build_likelihood("categorical", (1, 1, 1))
    p = torch.randn(1, 256, 1, 1, dtype=D64)
    log_p = one.log_prob((LEVELS / 255).reshape(256, 1, 1, 1), p.expand(256, -1, -1, -1))
    assert abs(float(torch.logsumexp(log_p, 0))) < 1e-12


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_count_log_pmfs_equal_torch_distributions(shape):
    g = torch.Generator().manual_seed(10)
    x = torch.poisson(torch.full((4, *shape), 3.0), generator=g)
    x.view(-1)[:3] = torch.tensor([0.0, 1.0, 250.0])
    log_mean = torch.randn(2, 4, *shape, generator=g, dtype=D64)
    dims = tuple(range(-len(shape), 0))
    pois = build_likelihood("poisson", shape)
    torch.testing.assert_close(pois.log_prob(x, log_mean),
                               Poisson(log_mean.exp()).log_prob(x.to(D64)).sum(dims))
    nb = build_likelihood("negative-binomial", shape).double()
    with torch.no_grad():
        nb.log_total_count.copy_(torch.randn(shape, generator=g))
    r = nb.log_total_count.exp()
    want = NegativeBinomial(r, logits=log_mean - nb.log_total_count).log_prob(x.to(D64)).sum(dims)
    torch.testing.assert_close(nb.log_prob(x, log_mean), want)
    assert not pois.continuous and not nb.continuous  # pmfs: no log-Jacobian
    assert not LIKELIHOODS["poisson"].scaled and not LIKELIHOODS["negative-binomial"].scaled


def test_count_samples_have_the_right_mean_and_variance():
    n, mu = 40000, torch.tensor([0.5, 4.0, 30.0], dtype=D64)
    pois = build_likelihood("poisson", (3,))
    nb = build_likelihood("negative-binomial", (3,)).double()
    with torch.no_grad():
        nb.log_total_count.copy_(torch.log(torch.tensor([0.5, 2.0, 10.0])))
    r = nb.log_total_count.exp().detach()
    for lik, var in ((pois, mu), (nb, mu + mu**2 / r)):
        x = lik.sample(mu.log().expand(n, 3), torch.Generator().manual_seed(11))
        assert (x == x.round()).all() and (x >= 0).all()
        torch.testing.assert_close(x.mean(0), mu, rtol=0, atol=float(5 * (var / n).sqrt().max()))
        torch.testing.assert_close(x.var(0), var, rtol=0.1, atol=0)
        torch.testing.assert_close(lik.mean(mu.log().expand(2, 3)), mu.expand(2, 3))
    state = torch.random.get_rng_state()
    a = nb.sample(mu.log(), torch.Generator().manual_seed(12))
    assert torch.equal(a, nb.sample(mu.log(), torch.Generator().manual_seed(12)))  # reproducible
    assert torch.equal(state, torch.random.get_rng_state())  # and the global RNG untouched


@pytest.mark.parametrize("name", ["poisson", "negative-binomial"])
def test_count_check_refuses_non_integer_and_negative_data(name):
    lik = build_likelihood(name, (3,))
    lik.check(torch.tensor([[0.0, 1.0, 7.0]]), "the train data")
    for bad, shown in ((0.5, "0.5"), (-2.0, "-2")):
        with pytest.raises(VaekitError, match=f"non-integer or negative.*{shown}") as err:
            lik.check(torch.tensor([[0.0, bad, 1.0]]), "the train data")
        assert "\n" not in str(err.value) and "raw counts" in str(err.value)
    start = lik.params_for_mean(torch.tensor([0.0, 2.0, 9.0]))
    assert torch.isfinite(start).all()
    torch.testing.assert_close(lik.mean(start)[1:], torch.tensor([2.0, 9.0]))


def test_train_eval_sample_with_8bit_and_count_likelihoods(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rgb = tmp_path / "tiny_rgb.npy"
    np.save(rgb, rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8))  # channels-last, as numpy has it
    counts = tmp_path / "counts.npy"
    rates = np.exp(rng.normal(size=(80, 1)) + rng.normal(size=(1, 6)))
    np.save(counts, rng.poisson(rates).astype(np.float32))
    cases = [(rgb, "discretized-logistic"), (rgb, "categorical"), (counts, "poisson"),
             (counts, "negative-binomial")]
    for data, name in cases:
        run = tmp_path / name
        code, out, err = run_cli(capsys, "train", "--data", data, "--likelihood", name, "--epochs", "2",
                                 "--hidden", "32", "--latent-dim", "4", "--out", run)
        assert code == 0, err
        code, out, err = run_cli(capsys, "eval", run, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert np.isfinite(result["elbo"]) and result["reconstruction"] <= 0  # a pmf: log p <= 0
        code, out, err = run_cli(capsys, "sample", run, "-n", "4", "--draw", "--out",
                                 tmp_path / f"{name}.npy")
        assert code == 0, err
        s = np.load(tmp_path / f"{name}.npy")
        assert (s == np.round(s)).all() and s.min() >= 0  # levels / counts in data space
        if data == rgb:
            assert s.shape == (4, 3, 8, 8) and s.max() <= 255
    code, out, err = run_cli(capsys, "sample", tmp_path / "discretized-logistic", "--out",
                             tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err


def test_count_likelihood_refuses_non_counts_from_the_cli(tmp_path, capsys):
    path = tmp_path / "t.npy"
    np.save(path, np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32))
    code, out, err = run_cli(capsys, "train", "--data", path, "--likelihood", "poisson", "--epochs", "1",
                             "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1 and "non-integer or negative" in err
    assert not (tmp_path / "r").exists()


def test_uint8_counts_are_modelled_as_given(tmp_path, capsys):
    path = tmp_path / "c.npy"
    np.save(path, np.random.default_rng(2).poisson(3.0, size=(50, 4)).astype(np.uint8))
    code, out, err = run_cli(capsys, "train", "--data", path, "--likelihood", "poisson", "--epochs", "1",
                             "--hidden", "8", "--latent-dim", "2", "--out", tmp_path / "r")
    assert code == 0, err


@pytest.mark.parametrize("name,bad", [("poisson", 0.5), ("negative-binomial", -1.0),
                                      ("discretized-logistic", 0.5), ("categorical", 0.5)])
def test_checks_read_every_row_of_large_data(name, bad):
    """The checks go through the data in chunks: a bad value in the last row is still found."""
    lik = build_likelihood(name, (1, 2, 2))
    x = torch.zeros(3000, 1, 2, 2)
    lik.check(x, "the train data")
    x[-1, 0, 1, 1] = bad
    with pytest.raises(VaekitError, match="the train data"):
        lik.check(x, "the train data")


def test_options_come_from_a_config_by_field_name():
    class ModelConfigStandIn:  # a ModelConfig with the fields the registry reads, and others
        sigma, mixtures, latent_dim = 0.5, 3, 7

    opts = LikelihoodOptions.from_config(ModelConfigStandIn())
    assert opts == LikelihoodOptions(sigma=0.5, mixtures=3)
    assert build_likelihood("discretized-logistic", (3, 4, 4), opts).param_shape() == (3 * 10, 4, 4)


@pytest.mark.slow
def test_joint_pmf_of_an_rgb_pixel_sums_to_one_over_all_colours():
    """Brute force: all 256^3 colours of one coupled RGB pixel, in chunks of the first channel."""
    lik = logistic(2, shape=(3, 1, 1))
    params = random_params(lik, (1,), torch.Generator().manual_seed(14), log_scale=(-5, 0.5))
    rest = torch.cartesian_prod(LEVELS, LEVELS)  # (65536, 2): the green and blue levels
    total = torch.zeros((), dtype=D64)
    for red in range(256):
        x = torch.cat([torch.full((len(rest), 1), float(red), dtype=D64), rest], 1) / 255
        log_p = lik.log_prob(x.reshape(-1, 3, 1, 1), params.expand(len(rest), -1, -1, -1))
        total += log_p.exp().sum()
    assert abs(float(total) - 1) < 1e-9
