"""The `layered` posterior q(z_2|x) q(z_1|x, z_2) against independent oracles: torch.distributions
at its start (the diagonal Gaussian), its density integrating to 1 on a grid and agreeing with its
own draws, its KL against the plain Monte Carlo mean and against quadrature, and importance-sampled
log p(x) against quadrature."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_train_refused
from test_hier_prior import assert_kl_unbiased, random_prior, vamp_top_model
from torch.distributions import Independent, Normal

import vaekit
from vaekit.config import ModelConfig
from vaekit.distributions import StandardNormal, kl_terms
from vaekit.layered import LayeredHead, LayeredPosterior
from vaekit.model import VAE

F64 = torch.float64


def random_posterior(batch: int = 3, bottom: int = 1, top: int = 1, seed: int = 0,
                     start: bool = False) -> LayeredPosterior:
    """A layered posterior of random encoder outputs; its head random too unless `start`."""
    torch.manual_seed(seed)
    head = LayeredHead(bottom, top, 8).double()
    if not start:  # far from the start, its conditional variances within the grid's reach
        with torch.no_grad():
            for p in head.parameters():
                p.normal_(0, 0.3)
    loc = torch.randn(batch, bottom + top, dtype=F64)
    return LayeredPosterior(loc, 0.5 * torch.randn(batch, bottom + top, dtype=F64) - 0.5, head)


def grid(half: float = 12.0, n: int = 1201):
    g = torch.linspace(-half, half, n, dtype=F64)
    return torch.cartesian_prod(g, g), float(g[1] - g[0]) ** 2  # (z_1, z_2), cell area


@torch.no_grad()
def test_at_its_start_it_is_the_diagonal_gaussian_of_torch_distributions():
    q = random_posterior(batch=4, bottom=3, top=2, start=True)
    z = torch.randn(6, 4, 5, dtype=F64)
    oracle = Independent(Normal(q.loc, (0.5 * q.logvar).exp()), 1)
    assert torch.allclose(q.log_prob(z), oracle.log_prob(z), atol=1e-12)
    eps = torch.randn(6, 4, 5, dtype=F64)
    assert torch.allclose(q.from_noise(eps), q.loc + (0.5 * q.logvar).exp() * eps, atol=1e-12)
    assert torch.allclose(q.mean, q.loc)
    assert torch.allclose(kl_terms(q, StandardNormal(5, dtype=F64), q.rsample((3,))).total,
                          torch.distributions.kl_divergence(oracle, Independent(Normal(
                              torch.zeros(5, dtype=F64), 1.0), 1)), atol=1e-12)


@torch.no_grad()
def test_density_integrates_to_one_is_the_chain_rule_and_matches_its_draws():
    """Each example's density on a grid sums to 1 and is N(z_2; mu_2, s_2) N(z_1; m(z_2), s(z_2))
    by torch.distributions; the ancestral draws' E[z_1], E[z_1 z_2], P(z_1 < 0) are the grid's."""
    q = random_posterior(seed=1)
    z, area = grid()
    log_q = q.log_prob(z[:, None, :])  # (grid, batch)
    assert torch.allclose(log_q.exp().sum(0) * area, torch.ones(3, dtype=F64), atol=1e-6)
    mu1, logvar1 = q.conditional(z[:, None, 1:])
    chain = (Normal(q.loc[:, 1], (0.5 * q.logvar[:, 1]).exp()).log_prob(z[:, None, 1])
             + Normal(mu1[..., 0], (0.5 * logvar1[..., 0]).exp()).log_prob(z[:, None, 0]))
    assert torch.allclose(log_q, chain, atol=1e-10)
    w = log_q.exp() * area
    draws = q.rsample((200_000,))  # (n, batch, 2)
    n = len(draws)
    for f in (lambda v: v[..., 0], lambda v: v[..., 0] * v[..., 1]):
        exact = (w * f(z[:, None, :])).sum(0)
        sd = ((w * f(z[:, None, :]) ** 2).sum(0) - exact ** 2).sqrt()
        assert ((f(draws).mean(0) - exact).abs() < 4 * sd / math.sqrt(n)).all()
    below = w[z[:, 0] < 0].sum(0)
    assert ((((draws[..., 0] < 0).double().mean(0)) - below).abs() < 4 * 0.5 / math.sqrt(n)).all()
    # the mean is the chain of conditional means: z_2 = mu_2, z_1 = the conditional mean there
    assert torch.allclose(q.mean[:, 1], q.loc[:, 1])
    assert torch.allclose(q.mean[:, :1], q.conditional(q.loc[:, 1:])[0])


@torch.no_grad()
def test_kl_to_the_standard_normal_and_to_a_two_layer_prior_is_unbiased():
    """Closed form per layer given the draws' z_2, against the plain mean of log q - log p over
    independent draws, and against the KL by quadrature on a grid."""
    q = random_posterior(batch=2, seed=2)
    for p in (StandardNormal(2, dtype=F64), random_prior(2, 1, seed=3).dist()):
        assert_kl_unbiased(q, p)
        z, area = grid()
        log_q = q.log_prob(z[:, None, :])
        exact = (log_q.exp() * (log_q - p.log_prob(z)[:, None])).sum(0) * area
        kl = kl_terms(q, p, q.rsample((40_000,))).total
        assert torch.allclose(kl, exact, atol=0.05), (kl, exact)
    assert_kl_unbiased(random_posterior(batch=2, bottom=2, top=1, seed=4),
                       vamp_top_model(latent=3, top=1, seed=5).prior.dist())


@torch.no_grad()
def test_importance_sampled_log_px_with_the_layered_posterior_matches_quadrature():
    """log p(x) by quadrature over z against the importance-sampled estimate whose proposal is a
    (random) layered posterior: valid whatever q is, as long as log q is its draws' density."""
    torch.manual_seed(6)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=2, prior="hier",
                            posterior="layered", top_latent=1), (6,)).double()
    for p in [*model.prior.parameters(), *model.posterior_head.parameters()]:
        p.normal_(0, 0.6)
    model.shift, model.scale = model.shift.double(), model.scale.double()
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=F64))
    z, area = grid(12.0, 801)
    log_joint = (torch.distributions.Bernoulli(logits=model.decoder(z)[:, None, :]).log_prob(x)
                 .sum(-1) + model.prior.dist().log_prob(z)[:, None])
    exact = torch.logsumexp(log_joint, 0) + math.log(area)
    log_w = model.log_weights(x, 20_000)
    w = torch.exp(log_w - log_w.max(0).values)
    stderr = w.std(0) / w.mean(0) / math.sqrt(len(w))
    est = torch.logsumexp(log_w, 0) - math.log(len(w))
    assert ((est - exact).abs() < 4 * stderr + 1e-3).all(), (est, exact, stderr)


def test_train_eval_and_use_a_two_layer_model_with_the_layered_posterior(tmp_path, capsys):
    """hier-vamp with the layered posterior trains on a table, its head leaves the start (so the
    posterior is no longer mean-field), and eval, sample and traverse run; encode --with-logvar
    says in one line that it has no variance."""
    from conftest import run_cli
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--prior", "hier-vamp",
                           "--posterior", "layered", "--prior-components", "5", "--latent-dim", "6",
                           "--top-latent", "2", "--hidden", "32", "--epochs", "3", "--patience", "0",
                           "--out", run, "--threads", "1")
    assert code == 0, err
    model = vaekit.load(run).model
    assert type(model.posterior_head) is LayeredHead and model.posterior_head.bottom == 4
    assert float(model.posterior_head.net[-1].weight.detach().abs().max()) > 0
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", "20", "--json")
    assert code == 0, err
    import json
    figures = json.loads(out)
    assert figures["log_likelihood"] >= figures["elbo"] - 4 * figures["log_likelihood_stderr"]
    assert figures["kl_per_dim"] is None  # the KL does not split over dimensions
    for argv in (["sample", run, "-n", "4", "--out", tmp_path / "s.npy"],
                 ["traverse", run, "--dims", "0,5", "--steps", "3", "--out", tmp_path / "t.npy"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, err
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()
    code, _, err = run_cli(capsys, "encode", run, "--data", "digits", "--with-logvar",
                           "--out", tmp_path / "c.npy")
    assert code == 2 and "no variance" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("options", "needle"), [
    (["--prior", "vamp", "--posterior", "layered"], "--posterior gaussian"),
    (["--posterior", "layered", "--latent-dim", "1"], "--latent-dim 2 or more"),
    (["--posterior", "layered", "--free-bits", "0.5"], "--free-bits"),
    (["--posterior", "layered", "--latent-dim", "4", "--top-latent", "4"], "--top-latent"),
])
def test_bad_layered_options_end_in_one_line(capsys, tmp_path, options, needle):
    assert_train_refused(capsys, tmp_path, options, needle)
