"""The learned priors (mog, vamp) against independent oracles: torch.distributions' mixtures and
Gaussian KLs, logsumexp written out; and the commands that consume a prior."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

import vaekit
from vaekit import latent
from vaekit.config import Config, ModelConfig
from vaekit.distributions import kl_terms
from vaekit.model import VAE
from vaekit.priors import GaussianMixture

F64 = torch.float64


def oracle_mixture(loc, logvar, logits) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(logits=logits),
                             Independent(Normal(loc, torch.exp(0.5 * logvar)), 1))


def test_mixture_log_density_equals_torch_mixture_same_family():
    torch.manual_seed(0)
    loc, logvar = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    logits = torch.randn(5, dtype=F64)
    z = 2 * torch.randn(7, 4, 3, dtype=F64)
    ours = GaussianMixture(loc, logvar, logits).log_prob(z)
    assert ours.shape == (7, 4)
    assert torch.allclose(ours, oracle_mixture(loc, logvar, logits).log_prob(z), rtol=0, atol=1e-12)


def test_mixture_log_density_in_float32_near_narrow_components_far_from_the_origin():
    """The squared distances are matrix products whose terms nearly cancel near a narrow
    component's centre: float32 parameters and draws (as in training and evaluation) must still
    give the float64 oracle's density there, within float32's rounding of the result."""
    torch.manual_seed(0)
    loc = 4 + torch.randn(500, 50)
    logvar = torch.full((500, 50), math.log(1e-3 ** 2))  # sd 0.001 at distance ~29 from 0
    logits = torch.zeros(500)
    z = loc[torch.randint(500, (300,))] + 1e-3 * torch.randn(300, 50)
    ours = GaussianMixture(loc, logvar, logits).log_prob(z)
    oracle = oracle_mixture(loc.double(), logvar.double(), logits.double()).log_prob(z.double())
    assert ours.dtype == torch.float32
    assert torch.allclose(ours.double(), oracle, rtol=1e-6, atol=1e-4), (ours.double() - oracle).abs().max()


def test_mixture_samples_follow_the_weights_and_the_components():
    loc = torch.tensor([[-10.0, 0.0], [10.0, 5.0]], dtype=F64)
    logvar = torch.log(torch.tensor([[1.0, 4.0], [0.25, 1.0]], dtype=F64))
    p = GaussianMixture(loc, logvar, torch.log(torch.tensor([0.3, 0.7], dtype=F64)))
    z = p.sample((40_000,), generator=torch.Generator().manual_seed(0))
    right = z[:, 0] > 0
    share = float(right.double().mean())
    assert abs(share - 0.7) < 4 * math.sqrt(0.7 * 0.3 / len(z))
    for k, mask in ((0, ~right), (1, right)):  # each component's mean and sd, within ~4 s.e.
        part = z[mask]
        sd = torch.exp(0.5 * logvar[k])
        assert ((part.mean(0) - loc[k]).abs() < 4 * sd / math.sqrt(len(part))).all()
        assert ((part.std(0) / sd - 1).abs() < 0.05).all()


def test_mixture_marginal_quantiles_invert_the_marginal_cdf():
    loc = torch.tensor([[-2.0, 0.0], [3.0, 1.0], [0.5, -1.0]], dtype=F64)
    logvar = torch.tensor([[0.0, 0.5], [-1.0, 0.0], [0.3, -0.2]], dtype=F64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    p = torch.tensor([0.001, 0.1, 0.5, 0.9, 0.999], dtype=F64)
    for d in (0, 1):
        q = GaussianMixture(loc, logvar, w.log()).marginal_icdf(p, d)
        cdf = sum(w[k] * Normal(loc[k, d], torch.exp(0.5 * logvar[k, d])).cdf(q) for k in range(3))
        assert torch.allclose(cdf, p, atol=1e-10)


def tiny_model(prior: str, latent: int = 2, d: int = 5, **kw) -> VAE:
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(6,), latent_dim=latent, prior=prior, **kw),
                (d,))
    return model.double()


def test_mog_with_one_component_at_the_standard_normal_gives_the_standard_elbo_in_expectation():
    torch.manual_seed(0)
    model = tiny_model("mog", prior_components=1)
    with torch.no_grad():
        model.prior.loc.zero_()
        model.prior.logvar.zero_()
    z0 = torch.randn(9, 2, dtype=F64)
    standard = Independent(Normal(torch.zeros(2, dtype=F64), 1.0), 1).log_prob(z0)
    assert torch.allclose(model.prior.dist().log_prob(z0), standard, rtol=0, atol=1e-12)
    x = torch.bernoulli(torch.full((3, 5), 0.4, dtype=F64))
    S = 20_000
    torch.manual_seed(1)
    terms = model.elbo_terms(x, S)
    assert not terms.kl_analytic
    torch.manual_seed(1)  # the same draws z, written out here: the oracle ELBO
    q = model.encode(x)
    z = q.rsample((S,))
    rec = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)  # (S, B)
    qn = Independent(Normal(q.loc, torch.exp(0.5 * q.logvar)), 1)
    pn = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    oracle = rec.mean(0) - kl_divergence(qn, pn)
    mc = rec - (qn.log_prob(z) - pn.log_prob(z))  # per-draw ELBO values
    stderr = mc.std(0) / math.sqrt(S)
    assert ((terms.elbo() - oracle).abs() < 4 * stderr).all(), (terms.elbo(), oracle, stderr)
    assert ((terms.kl - kl_divergence(qn, pn)).abs() < 4 * stderr).all()
    assert stderr.max() < 0.02  # tight enough that a wrong term (a missing constant) breaks it


def test_monte_carlo_kl_to_a_one_component_mixture_matches_the_gaussian_kl():
    torch.manual_seed(2)
    mu, logvar = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    m, lv = torch.randn(1, 3, dtype=F64), torch.randn(1, 3, dtype=F64)
    q = vaekit.distributions.DiagonalGaussian(mu, logvar)
    p = GaussianMixture(m, lv, torch.zeros(1, dtype=F64))
    z = q.rsample((20_000,))
    kl = kl_terms(q, p, z)
    exact = kl_divergence(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1),
                          Independent(Normal(m[0], torch.exp(0.5 * lv[0])), 1))
    stderr = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(len(z))
    assert not kl.analytic and kl.per_dim is None
    assert ((kl.total - exact).abs() < 4 * stderr).all()


def test_vamp_log_density_is_the_logsumexp_over_the_pseudo_inputs_posteriors():
    torch.manual_seed(3)
    model = tiny_model("vamp", latent=3, d=6, prior_components=7)
    model.init_output_bias(torch.rand(20, 6, dtype=F64))
    z = torch.randn(11, 3, dtype=F64)
    ours = model.prior.dist().log_prob(z)
    mu, logvar = model.encoder(model.prior.pseudo_inputs).chunk(2, -1)  # (K, L) each
    comp = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z[:, None, :]).sum(-1)  # (11, K)
    oracle = torch.logsumexp(comp, 1) - math.log(7)
    assert torch.allclose(ours, oracle, rtol=0, atol=1e-12)
    loss = -ours.sum()  # the pseudo-inputs are learned: the density has gradients to them
    loss.backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_iwae_terms_take_the_kl_from_the_weights_draws_without_a_second_prior_density(monkeypatch):
    """Under a VampPrior the IWAE step's logged KL is the mean over its K draws of
    log q(z|x) - log p(z) (torch.distributions' mixture as the oracle), and the mixture density is
    evaluated once a step: the weights already hold it."""
    torch.manual_seed(4)
    model = tiny_model("vamp", latent=3, d=6, prior_components=7)
    model.init_output_bias(torch.rand(20, 6, dtype=F64))
    x = torch.bernoulli(torch.full((5, 6), 0.4, dtype=F64))
    calls = []
    density = GaussianMixture.log_prob
    monkeypatch.setattr(GaussianMixture, "log_prob", lambda self, z: calls.append(1) or density(self, z))
    torch.manual_seed(5)
    log_w, terms = model.log_weights(x, 4, with_terms=True)
    assert len(calls) == 1
    torch.manual_seed(5)  # the same draws z, written out here
    q = model.encode(x)
    z = q.rsample((4,))  # (K, B, L)
    mu, logvar = model.encoder(model.prior.pseudo_inputs).chunk(2, -1)
    prior = oracle_mixture(mu, logvar, torch.zeros(7, dtype=F64))
    qn = Independent(Normal(q.loc, torch.exp(0.5 * q.logvar)), 1)
    log_ratio = qn.log_prob(z) - prior.log_prob(z)  # (K, B)
    assert torch.allclose(terms.kl, log_ratio.mean(0), rtol=0, atol=1e-10)
    assert not terms.kl_analytic and terms.kl_per_dim is None
    rec = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    assert torch.allclose(log_w, rec - log_ratio, rtol=0, atol=1e-10)
    assert torch.allclose(terms.reconstruction, rec.mean(0), rtol=0, atol=1e-10)


def test_vamp_pseudo_inputs_start_at_training_examples():
    model = tiny_model("vamp", latent=2, d=4, prior_components=3)
    x = torch.arange(40, dtype=F64).reshape(10, 4)
    model.init_output_bias(x / 40)
    rows = {tuple(r) for r in (x / 40).tolist()}
    assert all(tuple(u) in rows for u in model.prior.pseudo_inputs.tolist())


def test_vamp_needs_the_gaussian_posterior():
    with pytest.raises(vaekit.VaekitError, match="--posterior gaussian"):
        quick_config(prior="vamp", posterior="iaf")


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_train_and_use_a_learned_prior_on_images(prior, tiny_images, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", tiny_images, "--prior", prior,
                           "--prior-components", "5", "--epochs", "1", "--hidden", "16",
                           "--latent-dim", "2", "--batch-size", "50", "--out", run, "--threads", "1")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", "10", "--json")
    assert code == 0, err
    assert "kl_per_dim" in out
    for argv in (["sample", run, "-n", "8", "--out", tmp_path / "s.npy"],
                 ["manifold", run, "--steps", "3", "--out", tmp_path / "m.npy"],
                 ["traverse", run, "--dims", "0,1", "--steps", "3", "--out", tmp_path / "t.npy"],
                 ["interpolate", run, "--from", "0", "--to", "1", "--steps", "3",
                  "--out", tmp_path / "i.npy"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
    grid = np.load(tmp_path / "m.npy")
    assert np.isfinite(grid).all() and len(grid) == 9


def test_train_vamp_on_a_table(tiny_table, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", tiny_table, "--prior", "vamp",
                           "--prior-components", "4", "--epochs", "2", "--out", tmp_path / "run",
                           "--threads", "1")
    assert code == 0, err
    for method in ("elbo", "iw-nll", "kl"):  # anomaly scores: the prior's own density
        code, _, err = run_cli(capsys, "score", tmp_path / "run", "--method", method, "--samples", "4",
                               "--out", tmp_path / f"{method}.csv")
        assert code == 0, (method, err)
        scores = np.genfromtxt(tmp_path / f"{method}.csv", delimiter=",", names=True)["score"]
        assert np.isfinite(scores).all()
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--iw-samples", "10", "--json")
    assert code == 0, err


def test_commands_say_what_a_mixture_prior_changes(tiny_images, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", tiny_images, "--prior", "mog",
                           "--prior-components", "3", "--epochs", "1", "--hidden", "16",
                           "--latent-dim", "2", "--batch-size", "50", "--out", run, "--threads", "1")
    assert code == 0, err
    code, _, err = run_cli(capsys, "interpolate", run, "--from", "0", "--to", "1", "--spherical",
                           "--out", tmp_path / "i.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--spherical" in err
    code, out, err = run_cli(capsys, "traverse", run, "--steps", "3", "--out", tmp_path / "t.npy")
    assert code == 0, err
    assert "code variance" in out and "prior's mean" in out
    code, _, err = run_cli(capsys, "report", run, "--out", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "KL per latent dimension is undefined" in page and "3 mixture components" in page


def test_traversal_and_manifold_codes_follow_the_mixture_marginals():
    model = tiny_model("mog", latent=2, d=4, prior_components=2)
    with torch.no_grad():
        model.prior.loc.copy_(torch.tensor([[-4.0, 1.0], [2.0, 3.0]]))
        model.prior.logvar.copy_(torch.log(torch.tensor([[1.0, 0.25], [4.0, 1.0]])))
        model.prior.logits.copy_(torch.log(torch.tensor([0.25, 0.75])))
    w, m = torch.tensor([0.25, 0.75]), torch.tensor([[-4.0, 1.0], [2.0, 3.0]])
    v = torch.tensor([[1.0, 0.25], [4.0, 1.0]])
    mean = (w[:, None] * m).sum(0)
    sd = ((w[:, None] * (v + m.square())).sum(0) - mean.square()).sqrt()
    values = latent.prior_values(model, [1, 0], torch.tensor([-3.0, 0.0, 3.0]))
    expect = torch.stack([mean[1] + sd[1] * torch.tensor([-3.0, 0, 3]),
                          mean[0] + sd[0] * torch.tensor([-3.0, 0, 3])])
    assert torch.allclose(values, expect, atol=1e-5)
    codes = latent.manifold_codes(2, 4, (0, 1), model.prior.dist())
    p = (torch.arange(4) + 0.5) / 4
    for d, column in ((0, codes[:4, 0]), (1, codes[::4, 1].flip(0))):
        cdf = sum(w[k] * Normal(m[k, d], v[k, d].sqrt()).cdf(column) for k in range(2))
        assert torch.allclose(cdf, p, atol=1e-5)


@pytest.mark.parametrize("name", ["mnist-nll-vamp", "mnist-nll-iaf", "mnist-nll-hier",
                                  "mnist-nll-hier-vamp", "mnist-nll-vamp-iwae",
                                  "mnist-nll-hier-vamp-iwae"])
def test_nll_presets_match_their_shipped_config_files(name):
    import yaml

    from vaekit.presets import PRESETS
    shipped = yaml.safe_load((Path(__file__).parents[1] / "configs" / f"{name}.yaml").read_text())
    assert shipped == PRESETS[name]
    cfg = Config.from_flat(shipped)
    assert cfg.model.prior in ("vamp", "hier", "hier-vamp") or cfg.model.posterior == "iaf"


@pytest.mark.parametrize("part", [{"prior": "mog"}, {"prior": "vamp"}, {"posterior": "iaf"}])
def test_free_bits_are_refused_where_the_kl_does_not_split_over_dimensions(part):
    with pytest.raises(vaekit.VaekitError, match="--free-bits"):
        quick_config(free_bits=0.5, **part)


def test_eval_prints_its_table_for_a_mixture_prior(tiny_table, tmp_path, capsys):
    """The KL to a mixture is estimated by draws: eval prints its standard error and says the
    per-dimension KL is undefined (it raised a TypeError on the null list)."""
    code, _, err = run_cli(capsys, "train", "--data", tiny_table, "--prior", "mog", "--epochs", "1",
                           "--out", tmp_path / "run", "--threads", "1")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", tmp_path / "run")
    assert code == 0 and "kl_per_dim  undefined" in out, err
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--json")
    result = json.loads(out)
    assert result["kl_per_dim"] is None and 0 < result["rate_stderr"] < abs(result["rate"]) + 1


def test_an_analytic_rate_has_no_standard_error(tiny_table, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", tiny_table, "--epochs", "1",
                           "--out", tmp_path / "run", "--threads", "1")
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--json")
    result = json.loads(out)
    assert code == 0 and "rate_stderr" not in result and len(result["kl_per_dim"]) > 0
