"""Objectives and schedules as the issue documents them, against torch.distributions; presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import quick_config, run_cli
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaekit.cli.train as cli_train
from vaekit import VAE, ModelConfig, VaekitError, load, train
from vaekit.config import Config
from vaekit.data import load_for_model
from vaekit.evaluate import evaluate
from vaekit.objectives import OBJECTIVES, beta_at
from vaekit.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_and_batch():
    torch.manual_seed(3)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3), (10,))
    x = torch.bernoulli(torch.rand(8, 10))
    return model, x


def oracle_log_weights(model, x, seed, k):
    """log p(x|z) + log p(z) - log q(z|x) from torch.distributions, with the draws the model makes
    after torch.manual_seed(seed): z = mu + sigma * eps, eps ~ randn(K, B, L)."""
    _q = model.encode(x)
    mu, logvar = _q.loc, _q.logvar
    torch.manual_seed(seed)
    eps = torch.randn(k, *mu.shape)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + q.scale * eps
    log_px_z = Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    return log_px_z + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1), q


def test_log_weights_and_iwae_objective_against_torch_distributions(model_and_batch):
    model, x = model_and_batch
    cfg = quick_config(objective="iwae", iw_train_samples=6).train
    oracle, q = oracle_log_weights(model, x, seed=5, k=6)
    torch.manual_seed(5)
    loss, terms = OBJECTIVES["iwae"](model, x, 1.0, cfg)
    expected = -(torch.logsumexp(oracle, 0) - math.log(6)).mean()
    assert torch.allclose(loss, expected, atol=1e-4)
    closed_kl = kl_divergence(q, Normal(0.0, 1.0))  # (B, L)
    assert torch.allclose(terms.kl_per_dim, closed_kl, atol=1e-5)


def likelihood_model(likelihood: str) -> tuple[VAE, torch.Tensor]:
    """A small random VAE per likelihood, with a preprocessing whose log-Jacobian matters:
    pixels 0/255 for bernoulli (a pmf: no Jacobian), shifted and scaled features otherwise."""
    torch.manual_seed(4)
    model = VAE(ModelConfig(likelihood=likelihood, hidden=(16,), latent_dim=3, sigma=0.6), (5,))
    if likelihood == "bernoulli":
        model.set_preprocessing(torch.zeros(5), torch.full((5,), 255.0))
        x_data = 255 * torch.bernoulli(torch.full((8, 5), 0.5))
    else:
        model.set_preprocessing(torch.arange(5.0), torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25]))
        x_data = torch.randn(8, 5) * 2 + 1
    if likelihood == "gaussian":
        with torch.no_grad():
            model.likelihood.log_sigma.copy_(torch.tensor([-1.0, -0.5, 0.0, 0.3, -8.0]))
    return model, x_data


def data_space_log_px_z(model, likelihood: str, x_data, z) -> torch.Tensor:
    """log p(x|z) of the data as given, written out with torch.distributions: (..., B)."""
    params = model.decoder(z)
    if likelihood == "bernoulli":
        return Bernoulli(logits=params).log_prob(x_data / 255).sum(-1)
    sigma = (model.likelihood.log_sigma.exp().clamp(min=1e-3) if likelihood == "gaussian"
             else torch.full((5,), 0.6))
    return Normal(params * model.scale + model.shift, sigma * model.scale).log_prob(x_data).sum(-1)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-fixed"])
def test_each_objective_for_each_likelihood_against_torch_distributions(likelihood):
    """elbo: beta * KL - E_q log p(x|z); iwae (k=3): -log mean_k w_k; iwae with k=1 is the
    one-draw ELBO with log p(z) - log q(z|x) in place of -KL: equal for the same draw up to that
    term, and equal to the ELBO in expectation."""
    model, x_data = likelihood_model(likelihood)
    x = model.prepare(x_data)
    with torch.no_grad():
        _q = model.encode(x)
        mu, logvar = _q.loc, _q.logvar
    q = Normal(mu, torch.exp(0.5 * logvar))
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    for objective, k in (("elbo", 1), ("iwae", 3), ("iwae", 1)):
        cfg = quick_config(objective=objective, iw_train_samples=k).train
        torch.manual_seed(7)
        with torch.no_grad():
            loss, terms = OBJECTIVES[objective](model, x, 0.4 if objective == "elbo" else 1.0, cfg)
        torch.manual_seed(7)  # the same draws: eps ~ randn(B, L) or (K, B, L)
        eps = torch.randn(mu.shape if objective == "elbo" else (k, *mu.shape))
        z = mu + q.scale * eps
        with torch.no_grad():
            rec = data_space_log_px_z(model, likelihood, x_data, z)
        if objective == "elbo":
            expected = 0.4 * kl.mean() - rec.mean()
        else:
            log_w = rec + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
            expected = -(torch.logsumexp(log_w, 0) - math.log(k)).mean()
        torch.testing.assert_close(loss, expected, atol=2e-4, rtol=1e-5)
        torch.testing.assert_close(terms.reconstruction, rec.mean(0) if rec.dim() == 2 else rec,
                                   atol=2e-4, rtol=1e-5)
        torch.testing.assert_close(terms.kl, kl, atol=1e-5, rtol=1e-5)
    # in expectation, iwae with k=1 is the ELBO (beta = 1): many draws of each
    cfg1, cfg_elbo = quick_config(objective="iwae", iw_train_samples=1).train, quick_config().train
    with torch.no_grad():
        iw = torch.stack([OBJECTIVES["iwae"](model, x, 1.0, cfg1)[0] for _ in range(2000)])
        el = torch.stack([OBJECTIVES["elbo"](model, x, 1.0, cfg_elbo)[0] for _ in range(2000)])
    stderr = math.sqrt(float(iw.var() + el.var()) / 2000)
    assert abs(float(iw.mean() - el.mean())) < 4 * stderr


def test_free_bits_change_the_loss_as_documented_and_never_the_kl(model_and_batch):
    """Loss = beta * sum_j max(lambda, mean_batch KL_j) - mean E_q log p(x|z) (Kingma et al. 2016)."""
    model, x = model_and_batch
    with torch.no_grad():
        _q = model.encode(x)
        mu, logvar = _q.loc, _q.logvar
    kl_j = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).mean(0)  # (L,)
    lam = float(kl_j.median())  # floors some dimensions and not others
    beta = 0.7
    out = {}
    for fb in (0.0, lam):
        torch.manual_seed(9)
        out[fb] = OBJECTIVES["elbo"](model, x, beta, quick_config(free_bits=fb).train)
    (loss0, terms0), (loss1, terms1) = out[0.0], out[lam]
    rec = terms0.reconstruction.mean()
    assert torch.allclose(loss0, beta * kl_j.sum() - rec, atol=1e-5)
    assert torch.allclose(loss1, beta * torch.clamp(kl_j, min=lam).sum() - rec, atol=1e-5)
    assert loss1 > loss0
    for terms in (terms0, terms1):  # what is reported: the true KL, whatever the floor
        assert torch.allclose(terms.kl.mean(), kl_j.sum(), atol=1e-5)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trim_leaves_the_worst_explained_examples_out_of_the_loss_and_its_gradient(
        model_and_batch, objective):
    """--trim 0.25 on a batch of 8: the loss is minus the mean objective of the 6 best examples
    (from torch.distributions, the draws replayed), and the 2 worst have no gradient at all."""
    model, x = model_and_batch
    k = 4 if objective == "iwae" else 1
    with torch.no_grad():
        if objective == "iwae":
            log_w, _ = oracle_log_weights(model, x, seed=11, k=k)
            per_example = torch.logsumexp(log_w, 0) - math.log(k)
        else:  # E_q log p(x|z) at the replayed draw, minus the closed-form KL
            _q = model.encode(x)
            q = Normal(_q.loc, torch.exp(0.5 * _q.logvar))
            torch.manual_seed(11)
            z = q.loc + q.scale * torch.randn(1, *q.loc.shape)
            per_example = (Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)[0]
                           - kl_divergence(q, Normal(0.0, 1.0)).sum(-1))
    order = per_example.argsort()
    worst, kept = order[:2], order[2:]
    x = x.clone().requires_grad_(True)  # the Bernoulli log-pmf is linear in x: a gradient per row
    cfg = quick_config(objective=objective, iw_train_samples=k, trim=0.25).train
    torch.manual_seed(11)
    loss, _ = OBJECTIVES[objective](model, x, 1.0, cfg)
    assert torch.allclose(loss, -per_example[kept].mean(), atol=1e-4)
    loss.backward()
    assert torch.all(x.grad[worst] == 0) and torch.all(x.grad[kept].abs().sum(1) > 0)
    untrimmed = quick_config(objective=objective, iw_train_samples=k).train
    torch.manual_seed(11)
    assert torch.allclose(OBJECTIVES[objective](model, x, 1.0, untrimmed)[0],
                          -per_example.mean(), atol=1e-4)


def test_warmup_schedule_is_linear_from_zero():
    assert [beta_at(e, 2.0, 4) for e in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert beta_at(0, 2.0, 0) == 2.0


def true_rate(run, x) -> float:
    with torch.no_grad():
        _q = run.model.encode(x)
        mu, logvar = _q.loc, _q.logvar
        return float(kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
                     .sum(-1).double().mean())


@pytest.mark.parametrize("options", [{"kl_warmup": 2, "beta": 2.0}, {"free_bits": 0.5}])
def test_warmup_and_free_bits_in_training_leave_the_reported_rate_the_true_kl(
        tiny_images, tmp_path, options):
    cfg = quick_config(data=str(tiny_images), epochs=4, **options)
    train(cfg, tmp_path / "run", quiet=True)
    last = load(tmp_path / "run", "last")
    rows = last.metrics
    x_val, _ = load_for_model(last.model, last.config, None, "val")
    assert rows[-1]["val_rate"] == pytest.approx(true_rate(last, x_val), rel=1e-4)
    for row in rows:
        assert row["val_rate"] == row["val_kl"]
        assert row["beta"] == beta_at(row["epoch"] - 1, cfg.train.beta, cfg.train.kl_warmup)
        exact = row["beta"] * row["train_kl"] - row["train_reconstruction"]
        if options.get("free_bits"):  # floored dimensions only add to the loss
            assert row["train_loss"] >= exact - 1e-4
        else:  # the documented loss, exactly: beta_epoch * KL - E_q log p(x|z)
            assert row["train_loss"] == pytest.approx(exact, rel=1e-5, abs=1e-4)
    if "kl_warmup" in options:
        assert [r["beta"] for r in rows] == [0.0, 1.0, 2.0, 2.0]


def test_iwae_rejects_options_that_break_the_bound():
    for bad in ({"free_bits": 0.5}, {"kl_warmup": 3}, {"beta": 2.0}):
        with pytest.raises(VaekitError, match="objective iwae"):
            quick_config(objective="iwae", **bad)


def test_iwae_training_runs_and_reports_true_rate(tiny_images, tmp_path):
    run = train(quick_config(data=str(tiny_images), objective="iwae", iw_train_samples=4,
                             epochs=2), tmp_path / "iw", quiet=True)
    x_test, _ = load_for_model(run.model, run.config, None, "test")
    assert evaluate(run.model, x_test)["rate"] == pytest.approx(true_rate(run, x_test), rel=1e-4)


def test_preset_matches_shipped_config_file_and_is_valid():
    shipped = yaml.safe_load((REPO / "configs" / "mnist-nll.yaml").read_text())
    assert shipped == PRESETS["mnist-nll"]
    for flat in PRESETS.values():
        Config.from_flat(flat)  # every preset is a valid config


def test_preset_precedence_preset_then_config_file_then_options(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_train(cfg, **kw):
        seen["cfg"] = cfg
        raise VaekitError("resolved config captured")

    monkeypatch.setattr(cli_train, "train", fake_train)
    conf = tmp_path / "c.yaml"
    conf.write_text("latent_dim: 7\nbatch_size: 64\n")
    code, _, err = run_cli(capsys, "train", "--preset", "mnist-nll", "--config", conf,
                           "--batch-size", "32")
    assert "captured" in err, err
    cfg = seen["cfg"]
    assert cfg.model.hidden == (200, 200) and cfg.data.binarize == "dynamic"  # preset
    assert cfg.model.latent_dim == 7  # config file over preset
    assert cfg.train.batch_size == 32  # option over both
    code, _, err = run_cli(capsys, "train", "--preset", "nope")
    assert code == 2 and "invalid choice" in err
