"""The model's maths against independent oracles (torch.distributions, closed forms, Monte Carlo)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Laplace, Normal, kl_divergence

from vaekit import VAE, ModelConfig
from vaekit.distributions import DiagonalGaussian, StandardNormal, gaussian_kl
from vaekit.likelihoods import build_likelihood
from vaekit.objectives import iwae_bound


def make_model(likelihood="bernoulli", dim=6, **kw) -> VAE:
    cfg = ModelConfig(likelihood=likelihood, hidden=(16,), latent_dim=3, **kw)
    return VAE(cfg, (dim,))


def test_closed_form_kl_matches_torch_distributions_and_monte_carlo():
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    ours = gaussian_kl(mu, logvar)
    q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)
    assert torch.allclose(ours, kl_divergence(q, p), atol=1e-5)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(ours, mc, atol=0.03)


def test_log_normals_match_torch_distributions():
    z, mu, logvar = torch.randn(7, 3), torch.randn(7, 3), torch.randn(7, 3)
    ref = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(DiagonalGaussian(mu, logvar).log_prob(z), ref, atol=1e-5)
    ours = StandardNormal(3).log_prob(z)
    assert torch.allclose(ours, Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)


def test_bernoulli_log_prob_matches_torch_distributions():
    logits, x = torch.randn(4, 9) * 5, torch.randint(0, 2, (4, 9)).float()
    ours = build_likelihood("bernoulli", 9, 1.0).log_prob(x, logits)
    assert torch.allclose(ours, Bernoulli(logits=logits).log_prob(x).sum(-1), atol=1e-5)


@pytest.mark.parametrize("name,sigma", [("gaussian", None), ("gaussian-fixed", 0.3),
                                        ("gaussian-shared", None)])
def test_gaussian_log_prob_matches_torch_distributions(name, sigma):
    lik = build_likelihood(name, 5, sigma or 1.0)
    if sigma is None:
        with torch.no_grad():
            lik.log_sigma.copy_(torch.randn(lik.log_sigma.shape) * 0.5)
    mean, x = torch.randn(3, 5), torch.randn(3, 5)
    std = torch.exp(lik.sigma_log())
    ref = Normal(mean, std).log_prob(x).sum(-1)
    assert torch.allclose(lik.log_prob(x, mean), ref, atol=1e-5)
    if sigma is not None:
        assert torch.allclose(std, torch.full((5,), sigma))
    if name == "gaussian-shared":  # one parameter, the same sigma for every value
        assert lik.log_sigma.numel() == 1 and torch.allclose(std, std[0].expand(5))


def test_laplace_log_prob_matches_torch_distributions_and_its_samples_follow_it():
    lik = build_likelihood("laplace-fixed", 5, 0.7)
    mean, x = torch.randn(3, 5), torch.randn(3, 5) * 3
    ref = Laplace(mean, 0.7).log_prob(x).sum(-1)
    assert torch.allclose(lik.log_prob(x, mean), ref, atol=1e-5)
    draws = lik.sample(torch.full((20000, 5), 2.0), torch.Generator().manual_seed(0))
    # Kolmogorov-Smirnov distance to Laplace(2, 0.7)'s CDF (1% critical value: 1.63 / sqrt(n))
    flat = draws.flatten().sort().values
    ecdf = torch.arange(1, len(flat) + 1) / len(flat)
    assert float((ecdf - Laplace(2.0, 0.7).cdf(flat)).abs().max()) < 1.63 / len(flat) ** 0.5
    assert abs(float((draws - 2.0).abs().mean()) - 0.7) < 0.01  # E|x - mu| = b


def test_laplace_draws_are_finite_where_a_uniform_draw_lands_on_zero():
    """2^25 values, seeded so that a float32 U[0, 1) draw of that size holds exact zeros (3 of
    them), where an inverse-CDF sampler takes log(0)."""
    g = torch.Generator().manual_seed(1)
    assert int((torch.rand(2**25, generator=g) == 0).sum()) > 0  # the case is there
    lik = build_likelihood("laplace-fixed", 2**25, 1.0)
    draws = lik.sample(torch.zeros(1, 2**25), torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(draws).all())


def test_learned_sigma_has_a_floor_of_1e_3_and_a_fixed_sigma_is_taken_as_given():
    """A learned per-feature sigma never goes below 1e-3 (model units), so a constant pixel
    cannot drive log p(x|z) to +inf; --sigma is the user's and is not floored."""
    lik = build_likelihood("gaussian", 3, 1.0)
    with torch.no_grad():
        lik.log_sigma.copy_(torch.log(torch.tensor([1e-6, 1e-3, 0.5])))
    mean, x = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 0.0], [2e-3, -1e-3, 0.7]])
    ref = Normal(mean, torch.tensor([1e-3, 1e-3, 0.5])).log_prob(x).sum(-1)
    assert torch.allclose(lik.log_prob(x, mean), ref, rtol=1e-5)
    fixed = build_likelihood("gaussian-fixed", 3, 1e-4)
    assert torch.allclose(fixed.log_prob(x, mean), Normal(mean, 1e-4).log_prob(x).sum(-1),
                          rtol=1e-5)


def test_bernoulli_logits_stay_finite_where_sigmoid_bce_saturates():
    lik = build_likelihood("bernoulli", 2, 1.0)
    lp = lik.log_prob(torch.tensor([[1.0, 0.0]]), torch.tensor([[-200.0, 200.0]]))
    assert torch.isfinite(lp).all() and torch.allclose(lp, torch.tensor([-400.0]))


def test_elbo_equals_its_definition_with_torch_distributions():
    model = make_model()
    x = torch.rand(8, 6)
    torch.manual_seed(3)
    terms = model.elbo_terms(x)
    torch.manual_seed(3)
    _q = model.encode(x)
    mu, logvar = _q.loc, _q.logvar
    z = Normal(mu, torch.exp(0.5 * logvar)).rsample()
    rec = Bernoulli(logits=model.decoder_params(z), validate_args=False).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(terms.reconstruction, rec, atol=1e-5)
    torch.manual_seed(3)
    assert torch.allclose(model.elbo(x), terms.reconstruction - terms.kl)
    assert torch.allclose(terms.kl, kl, atol=1e-5)


def test_gradients_reach_the_encoder_through_the_reparameterization():
    model = make_model()
    x = torch.rand(16, 6)
    model.elbo_terms(x).reconstruction.sum().backward()  # no KL: only the path through z
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    # the sampled path carries gradient to the log-variance head too
    mu_rows, lv_rows = model.encoder[-1].weight.grad.chunk(2, dim=0)
    assert lv_rows.abs().sum() > 0 and mu_rows.abs().sum() > 0


def test_mc_samples_average_the_reconstruction():
    model = make_model()
    x = torch.rand(4, 6)
    torch.manual_seed(0)
    many = model.elbo_terms(x, mc_samples=4000).reconstruction
    _q = model.encode(x)
    mu, logvar = _q.loc, _q.logvar
    z = Normal(mu, torch.exp(0.5 * logvar)).sample((4000,))
    ref = model.likelihood.log_prob(x, model.decoder_params(z)).mean(0)
    assert torch.allclose(many, ref, atol=0.05)


def test_log_weights_are_log_densities():
    model = make_model("gaussian-fixed", sigma=0.5)
    x = torch.randn(5, 6)
    torch.manual_seed(1)
    log_w = model.log_weights(x, 7)
    torch.manual_seed(1)
    _q = model.encode(x)
    mu, logvar = _q.loc, _q.logvar
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.rsample((7,))
    ref = (Normal(model.decoder_params(z), 0.5).log_prob(x).sum(-1)
           + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
    assert log_w.shape == (7, 5)
    assert torch.allclose(log_w, ref, atol=1e-4)
    assert torch.allclose(iwae_bound(log_w), torch.logsumexp(ref, 0) - math.log(7), atol=1e-4)


def test_log_likelihood_of_rescaled_data_includes_the_log_jacobian():
    """Pixels given in 0..255 and modelled in [0, 1]: nats are of the data as given."""
    model = make_model("gaussian-fixed", sigma=0.1)
    model.set_preprocessing(torch.zeros(6), torch.full((6,), 255.0))
    raw = torch.randint(0, 256, (4, 6)).float()
    torch.manual_seed(2)
    rec = model.elbo_terms(model.prepare(raw)).reconstruction
    torch.manual_seed(2)
    z = model.encode(raw / 255).rsample()
    mean_raw = model.decoder_params(z) * 255
    ref = Normal(mean_raw, 0.1 * 255).log_prob(raw).sum(-1)
    assert torch.allclose(rec, ref, atol=1e-3)
    assert torch.allclose(model.restore(model.prepare(raw)).reshape(4, 6), raw, atol=1e-3)


def test_autoencoder_is_deterministic_with_no_kl():
    model = make_model(model="ae")
    x = torch.rand(4, 6)
    q = model.encode(x)
    assert type(q).__name__ == "PointMass" and q.mean.shape == (4, 3)
    assert torch.equal(q.rsample(), q.mean) and not model.stochastic
    a, b = model.elbo_terms(x), model.elbo_terms(x)
    assert torch.equal(a.reconstruction, b.reconstruction) and a.kl.abs().sum() == 0


def test_sample_and_decode_shapes():
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=2), (1, 4, 4))
    g = torch.Generator().manual_seed(0)
    s = model.sample(5, generator=g)
    assert s.shape == (5, 1, 4, 4) and 0 <= float(s.min()) and float(s.max()) <= 1
    d = model.sample(5, draw=True, generator=torch.Generator().manual_seed(0))
    assert set(d.unique().tolist()) <= {0.0, 1.0}
    same = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, same)
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(model.reconstruct(x),
                       torch.sigmoid(model.decoder(model.encode(x).mean)).reshape(3, 1, 4, 4))
