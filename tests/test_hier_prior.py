"""The two-layer priors (`--prior hier`, and `hier-vamp` with a VampPrior on top) against
independent oracles: their densities integrate to 1 on a grid and agree with their own draws and
the chain rule through torch.distributions, and log p(x) by quadrature for importance sampling."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_train_refused
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaekit
from vaekit.config import ModelConfig
from vaekit.distributions import DiagonalGaussian, StandardNormal, kl_terms
from vaekit.evaluate import log_likelihood
from vaekit.model import VAE
from vaekit.priors import LayeredPrior

F64 = torch.float64


def random_prior(latent: int = 2, top: int = 1, width: int = 8, seed: int = 0) -> LayeredPrior:
    torch.manual_seed(seed)
    prior = LayeredPrior(latent, top, width).double()
    with torch.no_grad():  # far from N(0, I), so a wrong term shows
        for p in prior.parameters():
            p.normal_(0, 0.6)
    return prior


def chain_rule(net, z):
    """log N(z_2; 0, 1) + log N(z_1; mu(z_2), sigma(z_2)^2) by torch.distributions, for z (n, 2)."""
    mu, logvar = net(z[:, 1:]).chunk(2, -1)
    return (Normal(0.0, 1.0).log_prob(z[:, 1])
            + Normal(mu[:, 0], (0.5 * logvar[:, 0]).exp()).log_prob(z[:, 0]))


def assert_kl_unbiased(q, p, draws: int = 40_000) -> None:
    """kl_terms(q, p, z) from `draws` draws is a Monte Carlo estimate within 4 standard errors of
    the plain mean of log q(z) - log p(z) over as many independent draws."""
    kl = kl_terms(q, p, q.rsample((draws,)))
    z = q.rsample((draws,))
    plain = q.log_prob(z) - p.log_prob(z)
    assert not kl.analytic
    assert ((kl.total - plain.mean(0)).abs() < 4 * plain.std(0) / math.sqrt(draws)).all()


@torch.no_grad()
def test_the_prior_starts_as_the_standard_normal():
    z = torch.randn(5, 6, dtype=F64)
    p = LayeredPrior(6, 2, 16).double().dist()
    assert torch.allclose(p.log_prob(z), StandardNormal(6, dtype=F64).log_prob(z), atol=1e-12)


@torch.no_grad()
def test_density_integrates_to_one_and_is_the_chain_rule_of_its_layers():
    p = random_prior().dist()
    g = torch.linspace(-12, 12, 1201, dtype=F64)
    z = torch.cartesian_prod(g, g)  # (z_1, z_2)
    density = p.log_prob(z).exp()
    assert abs(float(density.sum()) * float(g[1] - g[0]) ** 2 - 1) < 1e-6
    assert torch.allclose(p.log_prob(z), chain_rule(p.net, z), atol=1e-10)


@torch.no_grad()
def test_draws_follow_the_density_and_the_marginal_summaries_are_theirs():
    """Ancestral draws against quadrature of the density: E[z_1], E[z_1^2], P(z_1 < 0); the
    marginal mean, variance and quantiles of z_1 (from fixed draws) against the same."""
    p = random_prior(seed=2).dist()
    g = torch.linspace(-12, 12, 1201, dtype=F64)
    z = torch.cartesian_prod(g, g)
    w = p.log_prob(z).exp() * float(g[1] - g[0]) ** 2
    m1, m2 = float((w * z[:, 0]).sum()), float((w * z[:, 0] ** 2).sum())
    below = float(w[z[:, 0] < 0].sum())
    draws = p.sample((200_000,), torch.Generator().manual_seed(1))
    sd = math.sqrt(m2 - m1 ** 2)
    assert abs(float(draws[:, 0].mean()) - m1) < 4 * sd / math.sqrt(len(draws))
    assert abs(float((draws[:, 0] < 0).double().mean()) - below) < 4 * 0.5 / math.sqrt(len(draws))
    assert abs(float(p.mean[0]) - m1) < 5 * sd / math.sqrt(20_000)
    assert abs(float(p.variance[0]) - sd ** 2) < 0.05 * sd ** 2
    assert float(p.mean[1]) == 0.0 and float(p.variance[1]) == 1.0  # z_2: exactly N(0, 1)
    median = float(p.marginal_icdf(torch.tensor([0.5]), 0))
    assert abs(float(w[z[:, 0] < median].sum()) - 0.5) < 0.01
    assert torch.allclose(p.marginal_icdf(torch.tensor([0.1, 0.9]), 1),  # z_2: exact N(0, 1)
                          Normal(0.0, 1.0).icdf(torch.tensor([0.1, 0.9], dtype=F64)))


@torch.no_grad()
def test_importance_sampled_log_px_under_the_two_layer_prior_matches_quadrature():
    torch.manual_seed(4)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=2, prior="hier",
                            top_latent=1), (6,)).double()
    with torch.no_grad():
        for p in model.prior.parameters():
            p.normal_(0, 0.6)
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=F64))
    g = torch.linspace(-12, 12, 801, dtype=F64)
    z = torch.cartesian_prod(g, g)
    log_pz = chain_rule(model.prior.net, z)
    log_joint = torch.distributions.Bernoulli(logits=model.decoder(z)[:, None, :]).log_prob(x).sum(-1) \
        + log_pz[:, None]
    exact = torch.logsumexp(log_joint, 0) + 2 * math.log(float(g[1] - g[0]))
    model.shift, model.scale = model.shift.double(), model.scale.double()
    torch.manual_seed(5)
    with torch.no_grad():
        log_w = model.log_weights(x, 20_000)
    w = torch.exp(log_w - log_w.max(0).values)
    stderr = w.std(0) / w.mean(0) / math.sqrt(len(w))
    est = torch.logsumexp(log_w, 0) - math.log(len(w))
    assert ((est - exact).abs() < 4 * stderr + 1e-3).all(), (est, exact, stderr)
    torch.manual_seed(5)
    assert torch.allclose(log_likelihood(model, x, k=200), exact.detach(), atol=0.3)


def test_samples_at_temperature_zero_decode_the_top_layers_centre(tmp_path):
    """z_2 = 0, z_1 = mu(0): every sample is the decoder mean at that one code."""
    run = vaekit.train(vaekit.Config.from_flat({"data": "digits", "prior": "hier", "latent_dim": 6,
                                                "top_latent": 2, "hidden": [32], "epochs": 2,
                                                "patience": 0, "threads": 1}),
                       out=tmp_path / "h", quiet=True)
    model = run.model
    xs = vaekit.sample(run, 3, temperature=0.0, seed=1)
    with torch.no_grad():
        mu, _ = model.prior.net(torch.zeros(1, 2)).chunk(2, -1)
        centre = model.restore(model.decode(torch.cat([mu, torch.zeros(1, 2)], -1)))
    assert np.allclose(xs, centre.numpy().repeat(3, 0), atol=1e-5)
    assert model.prior.top == 2 and model.prior.bottom == 4


@pytest.mark.parametrize(("options", "needle"), [
    (["--top-latent", "2"], "--prior hier"),
    (["--prior", "hier", "--latent-dim", "3", "--top-latent", "3"], "--top-latent"),
    (["--prior", "hier", "--latent-dim", "1"], "--latent-dim 2 or more"),
    (["--prior", "hier", "--free-bits", "0.5"], "--free-bits"),
    (["--prior", "hier-vamp", "--posterior", "iaf"], "--posterior gaussian"),
    (["--prior", "vamp", "--top-latent", "2"], "--prior hier or --prior hier-vamp"),
    (["--prior", "hier-vamp", "--latent-dim", "1"], "--latent-dim 2 or more"),
])
def test_bad_layer_options_end_in_one_line(capsys, tmp_path, options, needle):
    assert_train_refused(capsys, tmp_path, options, needle)


@torch.no_grad()
def test_kl_to_the_two_layer_prior_is_unbiased_and_exact_at_its_start():
    """The KL of a diagonal Gaussian q (closed form per layer, Monte Carlo over z_2 only) against
    the plain mean of log q(z) - log p(z) over many independent draws; and, while the prior is
    still N(0, I) (its start), exactly the closed-form Gaussian KL whatever the draws."""
    torch.manual_seed(8)
    loc, logvar = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64) - 1
    q = DiagonalGaussian(loc, logvar)
    start = LayeredPrior(3, 1, 8).double().dist()
    closed = kl_terms(q, StandardNormal(3, dtype=F64)).total
    assert torch.allclose(kl_terms(q, start, q.rsample((5,))).total, closed, atol=1e-12)
    assert_kl_unbiased(q, random_prior(3, 1, seed=9).dist())


@torch.no_grad()
def test_kl_from_an_iaf_posterior_to_the_two_layer_prior_is_unbiased_and_exact_at_the_start():
    """The control-variate estimate (`distributions._kl_iaf`): exactly the Gaussian KL for an
    identity flow while the prior is still N(0, I); against the plain mean of log q - log p over
    independent draws (log q by inverting the flow) for a random flow and prior."""
    from vaekit.flows import IAF, IAFPosterior

    torch.manual_seed(10)
    loc, logvar, ctx = (torch.randn(3, 3, dtype=F64), -torch.rand(3, 3, dtype=F64),
                        torch.randn(3, 3, dtype=F64))
    q0 = IAFPosterior(loc, logvar, ctx, IAF(3, 0, 8).double())
    closed = kl_terms(DiagonalGaussian(loc, logvar), StandardNormal(3, dtype=F64)).total
    start = LayeredPrior(3, 1, 8).double().dist()
    assert torch.allclose(kl_terms(q0, start, q0.rsample((4,))).total, closed, atol=1e-12)
    flow = IAF(3, 2, 8).double()
    for p_ in flow.parameters():
        p_.normal_(0, 0.5)
    q = IAFPosterior(loc, logvar, ctx, flow)
    p = random_prior(3, 1, seed=11).dist()
    S = 20_000
    zr = q.rsample((S,))
    kl = kl_terms(q, p, zr)
    z0, logdet = q.base_of(zr)
    spread_cv = (StandardNormal(3, dtype=F64).log_prob(z0) - p.log_prob(zr) - logdet).std(0)
    z = q.rsample((S,)).clone()  # a new tensor: log q by inversion
    plain = q.log_prob(z) - p.log_prob(z)
    stderr = (plain.var(0) + spread_cv.square()).sqrt() / math.sqrt(S)
    assert ((kl.total - plain.mean(0)).abs() < 4 * stderr).all(), (kl.total, plain.mean(0), stderr)


# --- hier-vamp: a VampPrior on the top layer ------------------------------------------------------
def vamp_top_model(latent: int = 2, top: int = 1, components: int = 4, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=latent, prior="hier-vamp",
                            top_latent=top, prior_components=components), (5,)).double()
    with torch.no_grad():
        for p in [*model.prior.parameters(), *model.encoder.parameters()]:
            p.normal_(0, 0.6)
    return model


def vamp_top_chain_rule(model: VAE, z: Tensor) -> Tensor:
    """log p(z_2) + log p(z_1|z_2) by torch.distributions: z_2's density a MixtureSameFamily of the
    pseudo-inputs' posteriors on the last `top` dimensions (read from the encoder directly)."""
    b = model.prior.bottom
    loc, logvar = model.encoder(model.prior.top_prior.pseudo_inputs).chunk(2, -1)
    k = len(loc)
    top = MixtureSameFamily(Categorical(logits=torch.zeros(k, dtype=F64)),
                            Independent(Normal(loc[:, b:], (0.5 * logvar[:, b:]).exp()), 1))
    mu, lv = model.prior.net(z[:, b:]).chunk(2, -1)
    return top.log_prob(z[:, b:]) + Independent(Normal(mu, (0.5 * lv).exp()), 1).log_prob(z[:, :b])


@torch.no_grad()
def test_vamp_top_density_is_the_chain_rule_of_its_layers_and_integrates_to_one():
    model = vamp_top_model(latent=4, top=2, seed=1)
    z = 2 * torch.randn(50, 4, dtype=F64)
    assert torch.allclose(model.prior.dist().log_prob(z), vamp_top_chain_rule(model, z), atol=1e-10)
    model = vamp_top_model()
    g = torch.linspace(-14, 14, 1401, dtype=F64)
    grid = torch.cartesian_prod(g, g)
    mass = model.prior.dist().log_prob(grid).exp().sum() * float(g[1] - g[0]) ** 2
    assert abs(float(mass) - 1) < 1e-6


@torch.no_grad()
def test_vamp_top_draws_follow_the_density_and_z2s_marginals_are_the_mixtures():
    model = vamp_top_model(seed=3)
    p = model.prior.dist()
    g = torch.linspace(-14, 14, 1401, dtype=F64)
    z = torch.cartesian_prod(g, g)
    w = p.log_prob(z).exp() * float(g[1] - g[0]) ** 2
    draws = p.sample((200_000,), torch.Generator().manual_seed(2))
    for dim in (0, 1):
        m1, m2 = float((w * z[:, dim]).sum()), float((w * z[:, dim] ** 2).sum())
        sd = math.sqrt(m2 - m1 ** 2)
        assert abs(float(draws[:, dim].mean()) - m1) < 4 * sd / math.sqrt(len(draws))
        below = float(w[z[:, dim] < 0].sum())
        assert abs(float((draws[:, dim] < 0).double().mean()) - below) < 4 * 0.5 / math.sqrt(len(draws))
    m1, m2 = float((w * z[:, 1]).sum()), float((w * z[:, 1] ** 2).sum())
    assert abs(float(p.mean[1]) - m1) < 1e-8 and abs(float(p.variance[1]) - (m2 - m1 ** 2)) < 1e-6
    median = float(p.marginal_icdf(torch.tensor([0.5]), 1))
    assert abs(float(w[z[:, 1] < median].sum()) - 0.5) < 2e-3


@torch.no_grad()
def test_kl_to_the_vamp_top_prior_is_unbiased():
    """Closed form for z_1 given z_2, Monte Carlo for z_2 against the mixture: the mean of the
    plain log q(z) - log p(z) over independent draws."""
    model = vamp_top_model(latent=3, top=1, seed=5)
    q = DiagonalGaussian(torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64) - 1)
    assert_kl_unbiased(q, model.prior.dist())


@torch.no_grad()
def test_vamp_top_prior_in_float64_is_its_float32_density():
    """`dist_like` (evaluation in float64) copies the prior's net and encodes the pseudo-inputs
    through the model itself, which stays float32."""
    model = vamp_top_model(latent=3, top=1, seed=6).float()
    z = torch.randn(7, 3, dtype=F64)
    p64 = model.prior.dist_like(z)
    assert p64.log_prob(z).dtype == F64 and next(model.parameters()).dtype == torch.float32
    assert torch.allclose(p64.log_prob(z), model.prior.dist().log_prob(z.float()).double(), atol=1e-4)
