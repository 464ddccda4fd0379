"""Evaluation against independent oracles: probabilistic PCA's closed-form log p(x), the closed-form
mutual information of a linear-Gaussian encoder, and the inequalities IS estimates must obey."""

from __future__ import annotations

import json
import math
import platform
import sys

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from torch.distributions import MultivariateNormal

from vaekit import VAE, ModelConfig, train
from vaekit.distributions import DiagonalGaussian, StandardNormal
from vaekit.evaluate import aggregate_mi, elbo_per_example, evaluate, log_likelihood

D, L, SIGMA = 6, 2, 0.5


def ppca_model(exact: bool) -> tuple[VAE, MultivariateNormal]:
    """A VAE with linear encoder/decoder and N(x; Wz + b, sigma^2 I): probabilistic PCA, whose
    marginal is N(b, W W^T + sigma^2 I). Orthogonal columns of W make the true posterior diagonal:
    exact=True sets q(z|x) to it, else to a proposal with twice its variance and a mean shifted by
    half a posterior standard deviation."""
    g = torch.Generator().manual_seed(1)
    m = VAE(ModelConfig(backbone="linear", likelihood="gaussian-fixed", sigma=SIGMA, hidden=(1,),
                        latent_dim=L), (D,))
    q, _ = torch.linalg.qr(torch.randn(D, L, generator=g))
    w = q * torch.tensor([2.0, 1.0])  # (D, L), W^T W = diag(4, 1)
    b = torch.randn(D, generator=g)
    shift, scale = torch.randn(D, generator=g), torch.rand(D, generator=g) + 0.5
    post_var = SIGMA**2 / (SIGMA**2 + (w * w).sum(0))  # (L,) diagonal of (I + W^T W / s^2)^-1
    a = post_var[:, None] * w.T / SIGMA**2  # posterior mean = A (x - b)
    with torch.no_grad():
        m.decoder.weight.copy_(w)
        m.decoder.bias.copy_(b)
        m.encoder.weight.zero_()
        m.encoder.weight[:L] = a
        m.encoder.bias[:L] = -a @ b + (0 if exact else 0.5 * post_var.sqrt())
        m.encoder.bias[L:] = torch.log(post_var * (1 if exact else 2))
    m.set_preprocessing(shift, scale)
    # the data as given are x_model * scale + shift, so their law is an affine image of the marginal
    s = torch.diag(scale)
    cov = s @ (w @ w.T + SIGMA**2 * torch.eye(D)) @ s
    return m.eval(), MultivariateNormal((shift + scale * b).double(), cov.double())


def ppca_data(n: int, oracle: MultivariateNormal, model: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    x_data = oracle.sample((n,))
    return model.prepare(x_data.float()), oracle.log_prob(x_data)


def test_ppca_importance_sampling_matches_closed_form_and_elbo_is_below():
    model, oracle = ppca_model(exact=False)
    x, log_px = ppca_data(200, oracle, model)
    ll = log_likelihood(model, x, 1000).double()
    err = ll - log_px
    assert err.abs().mean() < 0.05  # per example
    assert abs(float(err.mean())) < 0.02  # and no bias over examples
    elbo = elbo_per_example(model, x, mc_samples=500).double()
    assert elbo.mean() < log_px.mean() - 0.1  # the KL(q || posterior) gap is ~0.5 nats here


def test_ppca_exact_posterior_gives_exact_log_likelihood_with_any_chunking():
    """With q(z|x) = p(z|x) every importance weight equals p(x): any K and chunking is exact."""
    model, oracle = ppca_model(exact=True)
    x, log_px = ppca_data(50, oracle, model)
    for k, batch, chunk in [(1, 100, 4096), (7, 4, 3), (20, 50, 1)]:
        ll = log_likelihood(model, x, k, batch, chunk_size=chunk)
        assert torch.allclose(ll.double(), log_px, atol=1e-3)
        assert not ll.requires_grad  # no autograd graph held across a batch's passes
    # and the ELBO is tight: KL(q || posterior) = 0 (its reconstruction term is a MC estimate)
    assert float(elbo_per_example(model, x, 400).double().mean()) == pytest.approx(
        float(log_px.mean()), abs=0.02)


def test_evaluation_loops_release_freed_memory_between_batches(monkeypatch):
    """Multi-threaded evaluation loops grew without bound (glibc keeps what torch's worker threads
    free): `vaekit eval --iw-samples 5000 --threads 2` on 10,000 MNIST images was killed at 24 GB.
    Every loop over batches hands freed pages back between batches, and glibc can do it here."""
    ev = sys.modules["vaekit.evaluate"]  # the module (the package exports a function of its name)
    runtime = sys.modules["vaekit.runtime"]

    calls = []
    monkeypatch.setattr(ev, "release_memory", lambda: calls.append(1))
    model, oracle = ppca_model(exact=True)
    x, _ = ppca_data(6, oracle, model)
    log_likelihood(model, x, 50, batch_size=2)  # 3 batches of 2 examples
    assert len(calls) == 3
    calls.clear()
    evaluate(model, x, batch_size=4)  # 2 batches
    assert len(calls) == 2
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert runtime._TRIM is not None  # malloc_trim found: release_memory does something here
        runtime.release_memory()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small VAE trained a few epochs on 8x8 images of squares; returns (model, x_test)."""
    rng = np.random.default_rng(0)
    x = np.zeros((300, 8, 8), np.uint8)
    for img in x:
        r, c = rng.integers(0, 5, 2)
        img[r:r + 3, c:c + 3] = 255
    path = tmp_path_factory.mktemp("data") / "squares.npy"
    np.save(path, x)
    torch.set_num_threads(1)
    run = train(quick_config(data=str(path), epochs=8, lr=3e-3), tmp_path_factory.mktemp("run"),
                quiet=True)
    from vaekit.data import load_for_model

    x_test, _ = load_for_model(run.model, run.config, None, "test")
    return run, x_test


def test_importance_sampling_bounds_on_a_trained_model(trained):
    run, x = trained
    model = run.model
    elbo = elbo_per_example(model, x, mc_samples=200).double()
    means, prev = {}, None
    for k in (1, 10, 100, 1000):
        ll = log_likelihood(model, x, k).double()
        means[k] = ll.mean()
        if prev is not None:  # non-decreasing in K, within the noise of the paired difference
            diff = ll - prev
            assert diff.mean() > -3 * diff.std() / math.sqrt(len(diff))
        prev = ll
    assert means[1000] >= elbo.mean()
    assert means[1000] > means[1]


def test_k1_importance_sampling_is_the_one_sample_elbo_in_expectation(trained):
    run, x = trained
    reps = 100
    ll1 = log_likelihood(run.model, x.repeat(reps, 1), 1).double().reshape(reps, len(x))
    elbo = elbo_per_example(run.model, x, mc_samples=reps).double()
    # K=1: log p(x|z) + log p(z) - log q(z|x) with z ~ q, whose mean is the ELBO; the analytic-KL
    # ELBO has less variance, so the tolerance is set by the IS draws
    diff = ll1.mean(0) - elbo
    stderr = ll1.std() / math.sqrt(ll1.numel())
    assert abs(float(diff.mean())) < 4 * float(stderr) + 1e-3


def linear_gaussian_encoder(a: torch.Tensor, v: torch.Tensor, n: int, seed: int):
    """x ~ N(0, I), q(z|x) = N(A x, diag v): (mu, logvar) of n examples, and the closed forms
    I(X;Z) = 1/2 log det(A A^T + V) - 1/2 log det V and R = E_x KL(q(z|x) || N(0, I))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, a.shape[1], generator=g, dtype=torch.float64)
    info = 0.5 * (torch.logdet(a @ a.T + torch.diag(v)) - torch.log(v).sum())
    rate = 0.5 * (torch.trace(a @ a.T) + v.sum() - len(v) - torch.log(v).sum())
    return x @ a.T, torch.log(v).expand(n, len(v)), float(info), float(rate)


def test_aggregate_mi_matches_closed_form_for_linear_gaussian_encoder():
    a = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.8, -0.3]], dtype=torch.float64)
    v = torch.tensor([0.5, 0.3], dtype=torch.float64)
    mu, logvar, truth, rate = linear_gaussian_encoder(a, v, 4000, seed=2)
    est, stderr = aggregate_mi(DiagonalGaussian(mu, logvar), StandardNormal(mu.shape[1], dtype=mu.dtype),
                               rate, generator=torch.Generator().manual_seed(0))
    assert stderr < 0.02
    assert abs(est - truth) < 4 * stderr + 0.01  # + the small bias of a 4000-component mixture


def test_aggregate_mi_standard_error_is_the_spread_of_the_estimate():
    a = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.8, -0.3]], dtype=torch.float64)
    mu, logvar, _, rate = linear_gaussian_encoder(a, torch.tensor([0.5, 0.3]).double(), 300, 3)
    runs = [aggregate_mi(DiagonalGaussian(mu, logvar), StandardNormal(mu.shape[1], dtype=mu.dtype), rate,
                         generator=torch.Generator().manual_seed(s))
            for s in range(60)]
    spread = float(torch.tensor([e for e, _ in runs]).std())
    mean_stderr = sum(s for _, s in runs) / len(runs)
    assert 0.7 < mean_stderr / spread < 1.4


def test_reported_information_never_exceeds_the_rate():
    """q(z) = p(z) exactly (A A^T + V = I): I(X;Z) = R, so a raw estimate exceeds R half the
    time; the reported figure stays in [0, R] and its standard error covers the difference."""
    model = VAE(ModelConfig(backbone="linear", likelihood="gaussian-fixed", hidden=(1,),
                            latent_dim=2), (2,))
    with torch.no_grad():
        model.encoder.weight.zero_()
        model.encoder.bias.zero_()
        model.encoder.weight[:2] = torch.diag(torch.tensor([0.2, 0.3]))
        model.encoder.bias[2:] = torch.log(torch.tensor([0.96, 0.91]))  # 1 - a^2
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(4))
    truth = 0.5 * -math.log(0.96 * 0.91)  # 1/2 log det(I) - 1/2 log det V
    for seed in range(8):
        torch.manual_seed(seed)
        r = evaluate(model, x)
        assert 0 <= r["mutual_information"] <= r["mutual_information_upper"] == r["rate"]
        assert abs(r["mutual_information"] - truth) < 4 * r["mutual_information_stderr"] + 0.01


def test_evaluate_information_active_units_and_data_entropy(trained):
    run, x = trained
    model = run.model
    r = evaluate(model, x, data_entropy=40.0)
    assert r["mutual_information_upper"] == r["rate"] == r["kl"]
    assert 0 <= r["mutual_information"] <= r["rate"]
    assert r["mutual_information"] <= math.log(len(x)) + 4 * r["mutual_information_stderr"]
    assert r["mutual_information_lower"] == pytest.approx(40.0 - r["distortion"])
    assert r["rate"] == pytest.approx(sum(r["kl_per_dim"]))
    with torch.no_grad():
        mu = model.encode(x).mean.double().numpy()
    var = mu.var(0, ddof=1)
    threshold = float(np.median(var))
    assert evaluate(model, x, active_threshold=threshold)["active_units"] == int((var > threshold).sum())
    assert evaluate(model, x, active_threshold=0.0)["active_units"] == model.latent_dim


def test_cli_eval_iw_samples_per_example_and_saved_json(trained, capsys, tmp_path):
    run, x = trained
    csv = tmp_path / "per.csv"
    # --mc-samples 50: an ELBO column with little Monte Carlo noise, so IS > ELBO is not by luck
    code, out, err = run_cli(capsys, "eval", run.dir, "--iw-samples", 50, "--per-example", csv,
                             "--data-entropy", 30, "--mc-samples", 50, "--json")
    assert code == 0, err
    result = json.loads(out)
    for key in ("log_likelihood", "log_likelihood_stderr", "iw_samples", "rate", "distortion",
                "mutual_information", "mutual_information_stderr", "mutual_information_upper",
                "mutual_information_lower",
                "active_units", "kl_per_dim"):
        assert key in result
    assert result["iw_samples"] == 50
    assert json.loads((run.dir / "eval-test.json").read_text()) == result
    table = np.genfromtxt(csv, delimiter=",", names=True)
    assert len(table) == len(x) == result["n"]
    assert table["log_likelihood"].mean() == pytest.approx(result["log_likelihood"], abs=1e-4)
    stderr = table["log_likelihood"].std(ddof=1) / math.sqrt(len(x))
    assert result["log_likelihood_stderr"] == pytest.approx(stderr, rel=1e-3)
    assert table["log_likelihood"].mean() > table["elbo"].mean()
    assert table["elbo"].mean() == pytest.approx(result["elbo"], abs=1e-4)  # the same draws
    code, out, _ = run_cli(capsys, "eval", run.dir, "--split", "val", "--limit", 5, "--json")
    assert code == 0 and json.loads(out)["n"] == 5 and not (run.dir / "eval-val.json").exists()


def test_cli_eval_rejects_importance_sampling_for_the_autoencoder(tiny_images, tmp_path, capsys):
    run = train(quick_config(data=str(tiny_images), model="ae", epochs=1), tmp_path / "ae",
                quiet=True)
    code, _, err = run_cli(capsys, "eval", run.dir, "--iw-samples", 10)
    assert code == 2 and "no q(z|x)" in err and "Traceback" not in err
