"""The model of named parts: distribution objects against torch.distributions, the KL analytic where
it exists and Monte Carlo otherwise, forward, bits/dim, and run folders of vaekit 0.1."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_train_refused, quick_config, run_cli
from torch.distributions import Independent, Normal, kl_divergence

import vaekit
from vaekit import VAE, ModelConfig
from vaekit.distributions import (
    POSTERIORS,
    PRIORS,
    DiagonalGaussian,
    PointMass,
    StandardNormal,
    kl_terms,
)
from vaekit.evaluate import evaluate
from vaekit.runs import save_torch


def test_diagonal_gaussian_is_torch_distributions_independent_normal():
    mu, logvar, z = torch.randn(5, 3), torch.randn(5, 3), torch.randn(7, 5, 3)
    q, ref = DiagonalGaussian(mu, logvar), Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    assert torch.allclose(q.log_prob(z), ref.log_prob(z), atol=1e-5)
    assert torch.allclose(q.entropy(), ref.entropy(), atol=1e-5)
    assert torch.allclose(q.variance, ref.variance, atol=1e-6) and torch.equal(q.mean, mu)
    eps = torch.randn(4, 5, 3)
    assert torch.allclose(q.from_noise(eps), mu + torch.exp(0.5 * logvar) * eps)
    p = StandardNormal(3)
    std = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    assert torch.allclose(p.log_prob(z), std.log_prob(z), atol=1e-5)
    kl = kl_terms(q, p)
    assert kl.analytic and torch.allclose(kl.total, kl_divergence(ref, std), atol=1e-5)
    assert torch.allclose(kl.per_dim, kl_divergence(Normal(mu, torch.exp(0.5 * logvar)),
                                                     Normal(0.0, 1.0)), atol=1e-5)


class ShiftedNormal(torch.distributions.Distribution):
    """N(m, I): a prior with no KL registered for the pair, so kl_terms must use Monte Carlo."""

    arg_constraints: dict = {}

    def __init__(self, m: torch.Tensor):
        super().__init__(torch.Size(), m.shape, validate_args=False)
        self.m = m

    def log_prob(self, z):
        return StandardNormal(len(self.m), dtype=z.dtype).log_prob(z - self.m)


def test_monte_carlo_kl_converges_to_the_analytic_kl_within_its_standard_error():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    m = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    q, p = DiagonalGaussian(mu, logvar), ShiftedNormal(m)
    z = q.rsample((20_000,))
    kl = kl_terms(q, p, z)
    assert not kl.analytic and kl.per_dim is None
    exact = kl_divergence(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1),
                          Independent(Normal(m.expand(4, 3), torch.ones(4, 3, dtype=m.dtype)), 1))
    stderr = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(len(z))
    assert ((kl.total - exact).abs() < 4 * stderr).all(), (kl.total, exact, stderr)
    with pytest.raises(vaekit.VaekitError, match="draws"):
        kl_terms(q, p)  # no closed form and no draws: it cannot be computed (one line, exit 2)


def test_autoencoder_is_a_point_mass_with_no_density():
    q = PointMass(torch.randn(2, 3))
    assert torch.equal(q.rsample((4,)), q.mean.expand(4, 2, 3))
    assert torch.equal(kl_terms(q, StandardNormal(3)).total, torch.zeros(2))
    with pytest.raises(vaekit.VaekitError, match="no q\\(z\\|x\\) density"):
        q.log_prob(torch.zeros(2, 3))
    model = VAE(ModelConfig(model="ae", likelihood="gaussian", hidden=(8,), latent_dim=3), (5,))
    assert not model.stochastic and isinstance(model.encode(torch.zeros(2, 5)), PointMass)


def test_forward_is_the_registry_objective():
    """model(x, beta, cfg) (what DistributedDataParallel calls) returns the objective's loss and
    terms: here -(E_q log p(x|z) - beta KL) of the same draw, written out."""
    cfg = quick_config(beta=0.5)
    model = VAE(cfg.model.__class__(likelihood="bernoulli", hidden=(8,), latent_dim=2), (6,))
    x = torch.rand(5, 6).round()
    torch.manual_seed(3)
    loss, terms = model(x, 0.5, cfg.train)
    torch.manual_seed(3)
    q = model.encode(x)
    z = q.rsample()
    rec = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(q.loc, torch.exp(0.5 * q.logvar)), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(loss, (0.5 * kl - rec).mean(), atol=1e-5)
    assert torch.allclose(terms.reconstruction, rec, atol=1e-5)


def test_registries_reach_the_cli_choices(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in (*POSTERIORS, *PRIORS):
        assert name in text
    code, _, err = run_cli(capsys, "train", "--prior", "bogus")
    assert code == 2 and "--prior" in err and len(err.strip().splitlines()) == 1


def test_bits_per_dim_is_nats_over_d_ln2_in_eval_json_and_metrics(tiny_images, tmp_path, capsys):
    run = vaekit.train(quick_config(data=str(tiny_images), epochs=2), out=tmp_path / "run",
                       quiet=True)
    code, out, err = run_cli(capsys, "eval", run.dir, "--iw-samples", "20", "--json")
    assert code == 0, err
    result = json.loads(out)
    d = 1 * 8 * 8
    assert result["bits_per_dim"] == pytest.approx(-result["elbo"] / (d * math.log(2)), rel=1e-12)
    assert result["log_likelihood_bits_per_dim"] == pytest.approx(
        -result["log_likelihood"] / (d * math.log(2)), rel=1e-12)
    for row in run.metrics:
        assert row["val_bits_per_dim"] == pytest.approx(-row["val_elbo"] / (d * math.log(2)))
    table = VAE(ModelConfig(likelihood="gaussian", hidden=(4,), latent_dim=2), (5,))
    assert "bits_per_dim" not in evaluate(table, torch.randn(10, 5))


def write_v01_run(folder, weights: dict[str, torch.Tensor], shape=(1, 2, 2), hidden=4, latent=2):
    """A run folder as vaekit 0.1 wrote it: flat config.yaml and a best.pt whose spec has only
    the 0.1 model keys and whose weights use the 0.1 names (plain nn.Sequential MLPs)."""
    folder.mkdir()
    cfg = quick_config(hidden=[hidden], latent_dim=latent, likelihood="bernoulli").to_flat()
    for key in ("posterior", "prior", "channels", "blocks", "mixtures", "dequantize", "layout"):
        cfg.pop(key)
    cfg["backbone"] = "mlp"
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    spec = {"model_config": {"model": "vae", "likelihood": "bernoulli", "sigma": 1.0,
                             "backbone": "mlp", "hidden": [hidden], "latent_dim": latent},
            "input_shape": list(shape)}
    save_torch(folder / "best.pt", {"spec": spec, "model": weights, "epoch": 1})


def test_a_vaekit_0_1_run_folder_loads_and_computes_what_its_weights_say(tmp_path):
    g = torch.Generator().manual_seed(0)
    d, h, latent = 4, 4, 2
    w = {"encoder.0.weight": torch.randn(h, d, generator=g), "encoder.0.bias": torch.randn(h, generator=g),
         "encoder.2.weight": torch.randn(2 * latent, h, generator=g),
         "encoder.2.bias": torch.randn(2 * latent, generator=g),
         "decoder.0.weight": torch.randn(h, latent, generator=g),
         "decoder.0.bias": torch.randn(h, generator=g),
         "decoder.2.weight": torch.randn(d, h, generator=g), "decoder.2.bias": torch.randn(d, generator=g),
         "shift": torch.zeros(d), "scale": torch.full((d,), 255.0)}
    write_v01_run(tmp_path / "old", w)
    run = vaekit.load(tmp_path / "old")
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    h_enc = torch.relu(x @ w["encoder.0.weight"].T + w["encoder.0.bias"])
    mu, logvar = (h_enc @ w["encoder.2.weight"].T + w["encoder.2.bias"]).chunk(2, -1)
    q = run.model.encode(x)
    assert torch.allclose(q.mean, mu, atol=1e-5) and torch.allclose(q.logvar, logvar, atol=1e-5)
    logits = torch.relu(mu @ w["decoder.0.weight"].T + w["decoder.0.bias"]) @ w["decoder.2.weight"].T \
        + w["decoder.2.bias"]
    assert torch.allclose(run.model.reconstruct(x).reshape(2, d), torch.sigmoid(logits), atol=1e-5)
    eps = torch.randn(3, 2, latent)
    z = mu + torch.exp(0.5 * logvar) * eps
    expected = torch.distributions.Bernoulli(logits=torch.relu(z @ w["decoder.0.weight"].T
                                             + w["decoder.0.bias"]) @ w["decoder.2.weight"].T
                                             + w["decoder.2.bias"]).log_prob(x).sum(-1)
    assert torch.allclose(run.model.log_px_z(x, q.from_noise(eps)), expected, atol=1e-4)


def test_a_run_folder_whose_weights_do_not_fit_fails_in_one_line(tmp_path, capsys):
    write_v01_run(tmp_path / "old", {"encoder.0.weight": torch.zeros(3, 3)})
    code, _, err = run_cli(capsys, "eval", tmp_path / "old", "--data", tmp_path / "x.npy")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 2, 2), np.float32))
    code, _, err = run_cli(capsys, "eval", tmp_path / "old", "--data", tmp_path / "x.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "best.pt" in err


def test_8bit_data_under_a_continuous_likelihood_is_dequantized(tmp_path, monkeypatch, capsys):
    """Levels k become (k + u) / 256: every training batch redraws u (off the grid, a different u
    each epoch), validation/test draw it once (the levels kept: floor(256 x) = k), and the
    log-Jacobian of the map from levels is -D log 256, so the density's figures are in nats of the
    levels as given."""
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (150, 5, 6)).astype(np.uint8)
    np.save(tmp_path / "u8.npy", levels)
    seen = []
    real_forward = VAE.forward

    def spy(self, x, beta, cfg):
        seen.append(x.detach().clone())
        return real_forward(self, x, beta, cfg)

    monkeypatch.setattr(VAE, "forward", spy)
    cfg = quick_config(data=str(tmp_path / "u8.npy"), likelihood="gaussian", epochs=2,
                       batch_size=200)
    run = vaekit.train(cfg, out=tmp_path / "run", quiet=True)
    assert run.config.data.dequantize == "on"
    for batch in seen:  # every training batch off the grid of levels
        assert (batch * 256 != (batch * 256).floor()).all()
    ds, _ = vaekit.data.load_dataset(run.config)
    k = torch.from_numpy(levels.reshape(150, -1).astype(np.float32))
    test = ds.x_test * 256
    assert ((test - test.floor()) > 0).any() and set(test.floor().unique().tolist()) <= set(
        k.unique().tolist())
    assert float(run.model.log_jacobian()) == pytest.approx(-30 * math.log(256), rel=1e-6)
    capsys.readouterr()
    np.save(tmp_path / "floats.npy", levels.astype(np.float32) / 255)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "floats.npy", "--likelihood",
                           "gaussian", "--dequantize", "on", "--out", tmp_path / "r2")
    assert code == 2 and "--dequantize on needs 8-bit" in err and len(err.strip().splitlines()) == 1


def test_auto_likelihood_for_8bit_colour_images_is_the_discretized_logistic(tmp_path):
    """uint8 colour images get a pmf of their 256 levels; grey 8-bit images keep the Bernoulli of
    the published MNIST protocol; --mixtures reaches the likelihood."""
    from vaekit.data import load_dataset

    rng = np.random.default_rng(0)
    np.save(tmp_path / "rgb.npy", rng.integers(0, 256, (40, 5, 6, 3), dtype=np.uint8))
    np.save(tmp_path / "grey.npy", rng.integers(0, 256, (40, 5, 6), dtype=np.uint8))
    _, cfg = load_dataset(quick_config(data=str(tmp_path / "rgb.npy")))
    assert cfg.model.likelihood == "discretized-logistic"
    _, cfg = load_dataset(quick_config(data=str(tmp_path / "grey.npy")))
    assert cfg.model.likelihood == "bernoulli"
    model = VAE(ModelConfig(likelihood="discretized-logistic", mixtures=3, hidden=(8,),
                            latent_dim=2), (3, 5, 6))
    assert model.likelihood.param_shape()[0] == 3 * (1 + 2 * 3 + 3)  # K (1 + 2C + C(C-1)/2)


def test_objective_pieces_at_their_edges():
    """Survivors of a mutation run: the warm-up's first epoch with warmup 1, the default beta of
    Terms.elbo, and free bits with a KL that has no per-dimension form (one clear error)."""
    from vaekit.objectives import Terms, beta_at, kl_penalty

    assert beta_at(0, 2.0, 1) == 0.0 and beta_at(1, 2.0, 1) == 2.0 and beta_at(0, 2.0, 0) == 2.0
    rec, kl = torch.tensor([-3.0, -5.0]), torch.tensor([1.0, 2.0])
    terms = Terms(rec, kl, None, DiagonalGaussian(torch.zeros(2, 1), torch.zeros(2, 1)))
    assert torch.equal(terms.elbo(), rec - kl) and torch.equal(terms.elbo(0.5), rec - 0.5 * kl)
    assert float(kl_penalty(terms, 0.0)) == 1.5
    with pytest.raises(vaekit.VaekitError) as e:
        kl_penalty(terms, 0.1)
    assert str(e.value) == ("--free-bits needs the KL of each latent dimension, which this "
                            "posterior and prior do not have in closed form; drop --free-bits")


def test_the_standard_normal_prior_samples_n_0_i():
    """sample/rsample: shape (n, L), reproducible from a generator, moments of N(0, I) (within 5
    standard errors), on the prior's dtype; the model's sample goes through the same object."""
    p = StandardNormal(3, dtype=torch.float64)
    z = p.sample((20_000,), generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 3) and z.dtype == torch.float64
    assert torch.equal(z, p.rsample((20_000,), generator=torch.Generator().manual_seed(0)))
    assert (z.mean(0).abs() < 5 / math.sqrt(20_000)).all()
    assert ((z.var(0) - 1).abs() < 5 * math.sqrt(2 / 20_000)).all()
    assert torch.equal(p.mean, torch.zeros(3, dtype=torch.float64))


# --- dropout in the mlp backbone --------------------------------------------------------------
def test_dropout_zeroes_hidden_units_in_training_only_and_keeps_the_layer_names_without_it():
    """With --dropout p the mlp nets zero about a fraction p of each hidden layer's units in train
    mode (the survivors scaled by 1/(1-p)), and in eval mode compute the plain ReLU network of the
    same Linear layers, written out here; with p = 0 the parameter names are those of before."""
    torch.manual_seed(0)
    plain = VAE(ModelConfig(likelihood="bernoulli", hidden=(64, 32), latent_dim=3), (10,))
    assert [k for k in plain.encoder.state_dict()] == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                       "4.weight", "4.bias"]
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(64, 32), latent_dim=3, dropout=0.25), (10,))
    x = torch.rand(500, 10)
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    h = x
    for i, lin in enumerate(linears):
        h = lin(h) if i == len(linears) - 1 else torch.relu(lin(h))
    model.eval()
    assert torch.allclose(model.encoder(x), h, atol=1e-6)
    model.train()
    first = torch.relu(linears[0](x))
    hidden = model.encoder[2](model.encoder[1](model.encoder[0](x)))  # Linear, ReLU, Dropout
    alive = first > 0
    dropped = float((hidden[alive] == 0).double().mean())
    assert abs(dropped - 0.25) < 0.02, dropped
    kept = hidden[alive & (hidden != 0)] / first[alive & (hidden != 0)]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert not torch.equal(model.encoder(x), model.encoder(x))


def test_a_dropout_run_reloads_and_scores_deterministically(tmp_path):
    run = vaekit.train(quick_config(data="digits", dropout=0.3, threads=1), out=tmp_path / "d",
                       quiet=True, hooks=[])
    loaded = vaekit.load(tmp_path / "d")
    assert loaded.config.model.dropout == 0.3
    assert sum(isinstance(m, torch.nn.Dropout) for m in loaded.model.decoder.modules()) == 1
    x = torch.rand(20, 64) * 16
    a = vaekit.score(loaded, x.numpy(), "elbo", seed=3)
    b = vaekit.score(run, x.numpy(), "elbo", seed=3)
    assert np.allclose(a, b)


@pytest.mark.parametrize(("options", "needle"), [
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--dropout", "0.2", "--backbone", "conv"], "--dropout is an option of the mlp backbone"),
    (["--trim", "1"], "--trim must be in [0, 1)"),
    (["--trim", "-0.1"], "--trim must be in [0, 1)"),
    (["--trim", "0.1", "--free-bits", "0.5"], "--trim and --free-bits do not combine"),
])
def test_bad_dropout_and_trim_options_end_in_one_line(capsys, tmp_path, options, needle):
    assert_train_refused(capsys, tmp_path, options, needle)
