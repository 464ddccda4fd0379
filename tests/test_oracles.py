"""Every number a user reads, against a value computed another way in the test: torch.distributions
in data space, closed forms, brute-force integrals, numpy statistics. Models are tiny, with weights
set by hand, so the expected values are exact (or their Monte Carlo error is known)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from torch.distributions import Bernoulli, Laplace, Normal, kl_divergence

import vaekit
from vaekit import VAE, ModelConfig, VaekitError, anomaly
from vaekit.data import dataset_from_arrays, load_dataset
from vaekit.evaluate import evaluate, log_likelihood
from vaekit.runs import save_torch, write_config

# --- a tiny linear VAE with hand-set weights -------------------------------------------------------
D, L = 4, 2
DET_LOGVAR = -40.0  # posterior variance e^-40: z = mu to 2e-9, so E_q log p(x|z) = log p(x|mu)
ENC = torch.tensor([[0.5, -0.3, 0.2, 0.0], [0.1, 0.4, -0.6, 0.0]], dtype=torch.float64)  # (L, D)
ENC_B = torch.tensor([0.2, -0.1], dtype=torch.float64)
DEC = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2], [0.4, 0.4]], dtype=torch.float64)  # (D, L)
DEC_B = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)
SIGMA_FIXED = 0.7
# gaussian (learned sigma): feature 3 (which the encoder ignores) sits below the 1e-3 floor
LOG_SIGMA = torch.log(torch.tensor([0.5, 2.0, 0.3, 1e-4], dtype=torch.float64))
SIGMA_FLOOR = 1e-3  # documented: a learned sigma never goes below 1e-3 in model units
PREP = {  # (shift, scale): pixels 0/255 for bernoulli; standardized-looking features otherwise
    "bernoulli": (torch.zeros(D, dtype=torch.float64), torch.full((D,), 255.0, dtype=torch.float64)),
    "gaussian": (torch.tensor([10.0, -3.0, 0.5, 100.0], dtype=torch.float64),
                 torch.tensor([2.0, 0.5, 4.0, 10.0], dtype=torch.float64)),
}
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-fixed", "laplace-fixed")


def prep(likelihood: str) -> tuple[torch.Tensor, torch.Tensor]:
    return PREP["bernoulli" if likelihood == "bernoulli" else "gaussian"]


def model_config(likelihood: str) -> dict:
    return {"backbone": "linear", "likelihood": likelihood, "latent_dim": L, "hidden": [1],
            "sigma": SIGMA_FIXED}


def hand_model(likelihood: str, logvar: float = DET_LOGVAR) -> VAE:
    """The VAE above: mu = ENC x + ENC_B, log sigma^2 = logvar, decoder params = DEC z + DEC_B."""
    cfg = model_config(likelihood)
    m = VAE(ModelConfig(**{k: tuple(v) if k == "hidden" else v for k, v in cfg.items()}), (D,))
    with torch.no_grad():
        m.encoder.weight.zero_()
        m.encoder.weight[:L] = ENC.float()
        m.encoder.bias[:L] = ENC_B.float()
        m.encoder.bias[L:] = logvar
        m.decoder.weight.copy_(DEC.float())
        m.decoder.bias.copy_(DEC_B.float())
        if likelihood == "gaussian":
            m.likelihood.log_sigma.copy_(LOG_SIGMA.float())
    m.set_preprocessing(*prep(likelihood))
    return m.eval()


def hand_rows(likelihood: str) -> np.ndarray:
    """A few rows of data as the user gives them (N, D), float32."""
    if likelihood == "bernoulli":
        return np.array([[0, 255, 255, 0], [255, 0, 0, 255], [255, 255, 0, 0]], np.float32)
    shift, scale = prep(likelihood)
    xm = torch.tensor([[0.3, -1.2, 0.8, 0.0], [-0.5, 0.4, 1.5, 0.0], [1.1, 0.9, -0.7, 0.0]],
                      dtype=torch.float64)
    mu = xm @ ENC.T + ENC_B
    # feature 3: 0.5e-3..1.5e-3 off the decoder mean, to feel the sigma floor
    xm[:, 3] = (mu @ DEC.T + DEC_B)[:, 3] + torch.tensor([0.5e-3, -1.0e-3, 1.5e-3])
    return (xm * scale + shift).numpy().astype(np.float32)


def oracle(likelihood: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Per-example E_q log p(x|z) of the data as given, and KL per dimension, written out in data
    space with torch.distributions (z = mu: the posterior variance is e^-40)."""
    shift, scale = prep(likelihood)
    x = torch.from_numpy(rows).double()
    mu = ((x - shift) / scale) @ ENC.T + ENC_B  # (N, L)
    params = mu @ DEC.T + DEC_B  # (N, D), model units
    if likelihood == "bernoulli":  # a pmf of the 0/1 pixels: no Jacobian for the 0..255 scaling
        rec = Bernoulli(logits=params).log_prob(x / 255).sum(-1)
    elif likelihood == "laplace-fixed":  # scale --sigma in model units: SIGMA_FIXED * scale here
        rec = Laplace(params * scale + shift, SIGMA_FIXED * scale).log_prob(x).sum(-1)
    else:
        sigma = (LOG_SIGMA.exp().clamp(min=SIGMA_FLOOR) if likelihood == "gaussian"
                 else torch.full((D,), SIGMA_FIXED, dtype=torch.float64))
        rec = Normal(params * scale + shift, sigma * scale).log_prob(x).sum(-1)  # data space
    kl = kl_divergence(Normal(mu, math.exp(0.5 * DET_LOGVAR)), Normal(0.0, 1.0))  # (N, L)
    return {"rec": rec, "kl": kl, "mu": mu}


def write_run(run_dir, likelihood: str) -> None:
    """A run folder as `vaekit train` leaves it (config.yaml, best.pt), with the hand-set weights."""
    cfg = quick_config(**model_config(likelihood), standardize="off")
    model = hand_model(likelihood)
    run_dir.mkdir(parents=True)
    write_config(run_dir, cfg)
    save_torch(run_dir / "best.pt", {"spec": model.spec(), "model": model.state_dict(), "epoch": 1})


def check_evaluation(result: dict, want: dict[str, torch.Tensor]) -> None:
    rec, kl = float(want["rec"].mean()), float(want["kl"].sum(-1).mean())
    n = len(want["rec"])
    assert result["n"] == n
    assert result["reconstruction"] == pytest.approx(rec, abs=1e-3)
    assert result["distortion"] == pytest.approx(-rec, abs=1e-3)
    assert result["kl"] == pytest.approx(kl, abs=1e-3)
    assert result["rate"] == pytest.approx(kl, abs=1e-3)
    assert result["mutual_information_upper"] == pytest.approx(kl, abs=1e-3)
    assert result["elbo"] == pytest.approx(rec - kl, abs=1e-3)
    np.testing.assert_allclose(result["kl_per_dim"], want["kl"].mean(0).numpy(), atol=1e-4)
    assert 0 <= result["mutual_information"] <= result["rate"]  # its own tests are below
    assert result["mutual_information_stderr"] >= 0
    var = want["mu"].var(0, unbiased=True)
    assert result["active_units"] == int((var > 0.01).sum())


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_elbo_of_a_hand_set_model_through_the_api_and_the_cli(likelihood, tmp_path, capsys):
    """One end-to-end pin per likelihood: `vaekit eval RUN --data rows.npy --json` and
    vaekit.load + evaluate on a run folder whose best.pt holds known weights."""
    rows = hand_rows(likelihood)
    want = oracle(likelihood, rows)
    write_run(tmp_path / "run", likelihood)
    np.save(tmp_path / "rows.npy", rows)

    run = vaekit.load(tmp_path / "run")
    check_evaluation(evaluate(run.model, run.model.prepare(rows), mc_samples=3), want)
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--data", tmp_path / "rows.npy",
                             "--mc-samples", 2, "--seed", 5, "--json")
    assert code == 0, err
    check_evaluation(json.loads(out), want)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_every_anomaly_score_of_a_hand_set_model(likelihood, tmp_path, capsys):
    """With z = mu every draw is the same: each score is a number written out in data space
    (iw-nll is not: log q(z|x) moves with the draw whatever the variance; see the brute force)."""
    rows = hand_rows(likelihood)
    want = oracle(likelihood, rows)
    model = hand_model(likelihood)
    x = model.prepare(rows)
    kl = want["kl"].sum(-1)
    expected = {"kl": kl, "reconstruction": -want["rec"], "recon-prob": -want["rec"],
                "elbo": kl - want["rec"]}
    for common in (False, True):
        for method, value in expected.items():
            got = anomaly.score(model, x, method, samples=4, seed=2, common=common).double()
            torch.testing.assert_close(got, value, atol=1e-3, rtol=1e-6, msg=method)
    write_run(tmp_path / "run", likelihood)
    np.save(tmp_path / "rows.npy", rows)
    code, out, err = run_cli(capsys, "score", tmp_path / "run", "--data", tmp_path / "rows.npy",
                             "--method", "elbo", "--samples", 3)
    assert code == 0, err
    scores = [float(line.split(",")[2]) for line in out.splitlines()[1:]]
    np.testing.assert_allclose(scores, expected["elbo"].numpy(), atol=1e-3, rtol=1e-6)


# --- closed forms with a real posterior variance --------------------------------------------------
def linear_gaussian(logvar: float = math.log(0.3)) -> VAE:
    """gaussian-fixed with a linear decoder: E_q log p(x|z) has a closed form for any q."""
    return hand_model("gaussian-fixed", logvar)


def closed_form_elbo(rows: np.ndarray, logvar: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example E_q log p(x|z) and KL, q = N(mu, v I), p(x|z) = N(scale (Wz + b) + shift,
    (scale sigma)^2): E||x - Wz - b||^2 = ||x - W mu - b||^2 + v sum_dj W_dj^2 in model units."""
    shift, scale = prep("gaussian-fixed")
    x = torch.from_numpy(rows).double()
    mu = ((x - shift) / scale) @ ENC.T + ENC_B
    v = math.exp(logvar)
    at_mean = Normal(scale * (mu @ DEC.T + DEC_B) + shift, SIGMA_FIXED * scale).log_prob(x).sum(-1)
    rec = at_mean - 0.5 * v * DEC.square().sum() / SIGMA_FIXED**2
    kl = kl_divergence(Normal(mu, math.sqrt(v)), Normal(0.0, 1.0)).sum(-1)
    return rec, kl


def many_rows(n: int, seed: int) -> np.ndarray:
    shift, scale = prep("gaussian-fixed")
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D, generator=g, dtype=torch.float64) * scale + shift).numpy().astype(
        np.float32)


def test_evaluate_reconstruction_matches_the_closed_form_within_its_monte_carlo_error():
    logvar = math.log(0.3)
    model, rows = linear_gaussian(logvar), many_rows(20, seed=3)
    rec, kl = closed_form_elbo(rows, logvar)
    torch.manual_seed(0)
    mc = 2000
    r = evaluate(model, model.prepare(rows), mc_samples=mc)
    # the Monte Carlo standard error of the mean reconstruction, from the spread of one draw
    with torch.no_grad():
        one = torch.stack([model.elbo_terms(model.prepare(rows)).reconstruction for _ in range(200)])
    stderr = float(one.double().std(0).square().sum().sqrt()) / len(rows) / math.sqrt(mc)
    assert stderr < 0.03  # against 0.76 nats per example for the variance term
    assert abs(r["reconstruction"] - float(rec.mean())) < 5 * stderr
    assert r["kl"] == pytest.approx(float(kl.mean()), abs=1e-5)
    assert r["elbo"] == pytest.approx(float((rec - kl).mean()), abs=5 * stderr + 1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_elbo_score_is_minus_the_elbo_within_its_standard_error(seed):
    """Independent draws per example: the mean of the elbo score over a data set estimates -ELBO
    without a seed-dependent offset (shared draws gave every score the same one: [trust] 7)."""
    logvar = math.log(1.5)  # a wide posterior: a noisy score
    model, rows = linear_gaussian(logvar), many_rows(400, seed=4)
    rec, kl = closed_form_elbo(rows, logvar)
    exact = kl - rec  # (N,) -ELBO per example
    x = model.prepare(rows)
    s = anomaly.score(model, x, "elbo", samples=4, seed=seed).double()
    err = s - exact
    stderr = float(err.std() / math.sqrt(len(err)))
    assert abs(float(err.mean())) < 3 * stderr
    torch.manual_seed(seed)
    minus_elbo = -evaluate(model, x, mc_samples=4)["elbo"]
    assert float(s.mean()) == pytest.approx(minus_elbo, abs=3 * math.sqrt(2) * stderr)
    # common random numbers: one offset shared by all examples, far beyond that standard error
    offsets = [float((anomaly.score(model, x, "elbo", samples=4, seed=k, common=True).double()
                      - exact).mean()) for k in range(4)]
    assert max(abs(o) for o in offsets) > 3 * stderr


def test_scores_depend_on_the_example_and_seed_only():
    """Not on the batch size, the order or the other examples; different per seed."""
    model, rows = linear_gaussian(), many_rows(30, seed=5)
    x = model.prepare(rows)
    for method in ("reconstruction", "recon-prob", "elbo", "iw-nll"):
        full = anomaly.score(model, x, method, samples=5, seed=1)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(anomaly.score(model, x[perm], method, samples=5, seed=1,
                                                 batch_size=7), full[perm])
        torch.testing.assert_close(anomaly.score(model, x[3:4], method, samples=5, seed=1,
                                                 batch_size=1), full[3:4])
        assert not torch.allclose(anomaly.score(model, x, method, samples=5, seed=2), full)


def test_common_draws_rank_near_twins_without_noise():
    """common=True (for ranking): two almost identical examples get almost identical scores,
    whatever the seed; independent draws give them scores that differ by the Monte Carlo noise."""
    model = linear_gaussian(math.log(1.5))
    base = model.prepare(many_rows(1, seed=6))
    twins = torch.cat([base, base + 1e-4])
    for seed in range(3):
        common = anomaly.score(model, twins, "elbo", samples=2, seed=seed, common=True)
        assert abs(float(common[1] - common[0])) < 1e-2
    apart = [anomaly.score(model, twins, "elbo", samples=2, seed=s) for s in range(3)]
    assert max(abs(float(a[1] - a[0])) for a in apart) > 0.1


# --- brute force: log p(x) of a Bernoulli VAE with one latent dimension -------------------------
def test_importance_sampled_log_px_matches_brute_force_integration():
    """log p(x) = log int p(x|z) N(z; 0, 1) dz on a fine grid, for a 1-D latent Bernoulli VAE."""
    torch.manual_seed(0)
    m = VAE(ModelConfig(backbone="mlp", likelihood="bernoulli", latent_dim=1, hidden=(8,)), (5,))
    m.eval()
    x = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.float32)
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)[:, None]  # (G, 1)
    with torch.no_grad():
        logits = m.decoder(z.float()).double()  # (G, 5)
    log_joint = (Bernoulli(logits=logits[:, None]).log_prob(x.double()).sum(-1)
                 + Normal(0.0, 1.0).log_prob(z))  # (G, N)
    exact = torch.logsumexp(log_joint, 0) + math.log(float(z[1] - z[0]))
    torch.manual_seed(1)
    ll = log_likelihood(m, x, 5000).double()
    torch.testing.assert_close(ll, exact, atol=0.02, rtol=0)
    nll = anomaly.score(m, x, "iw-nll", samples=5000, seed=3).double()
    torch.testing.assert_close(nll, -exact, atol=0.02, rtol=0)


# --- standardization ([trust] 5) and finite checks ([trust] 10) -------------------------------------
def scaled_table() -> np.ndarray:
    """200 rows: a column ~1e6 + 1e6 N(0, 1), one ~1e-6 N(0, 1), a constant, one at -1e6 whose
    values differ only below float32 resolution, and the row number."""
    rng = np.random.default_rng(0)
    n = 200
    return np.stack([1e6 + 1e6 * rng.normal(size=n), 1e-6 * rng.normal(size=n), np.full(n, 3.5),
                     -1e6 + 1e-9 * np.arange(n), np.arange(n)], 1)


def training_rows(x: np.ndarray, ds) -> np.ndarray:
    """The rows of x in the training split, found by their row number (the last column)."""
    index = (ds.x_train[:, -1].double() * ds.scale[-1] + ds.shift[-1]).round().long().numpy()
    assert len(set(index.tolist())) == len(ds.x_train)
    return x[index]


def test_standardization_decides_constancy_per_column():
    x = scaled_table()
    ds, cfg = dataset_from_arrays(x, quick_config(likelihood="gaussian"), x_test=x[:20])
    assert cfg.data.standardize == "on"
    fit = training_rows(x, ds).astype(np.float32).astype(np.float64)  # the values the model sees
    mean, std = fit.mean(0), fit.std(0)
    for j in (0, 1, 4):  # each varying column: its own mean and standard deviation
        assert ds.shift[j].item() == pytest.approx(mean[j], rel=1e-6, abs=1e-12)
        assert ds.scale[j].item() == pytest.approx(std[j], rel=1e-5)
        assert float(ds.x_train[:, j].double().std(unbiased=False)) == pytest.approx(1, rel=1e-3)
    for j in (2, 3):  # constant (in float32): scale 1, model-space values 0
        assert ds.scale[j].item() == 1.0
        assert torch.all(ds.x_train[:, j] == 0)
    model = VAE(ModelConfig(likelihood="gaussian", hidden=(8,), latent_dim=2), ds.shape)
    model.set_preprocessing(ds.shift, ds.scale)
    assert float(model.log_jacobian()) == pytest.approx(-np.log(std[[0, 1, 4]]).sum(), rel=1e-6)
    # an untrained model's samples and reconstructions stay on the small column's scale (1e-6)
    samples = model.restore(model.sample(500, draw=True, generator=torch.Generator().manual_seed(0)))
    assert float(samples[:, 1].abs().max()) < 1e-5
    recon = model.restore(model.reconstruct(ds.x_test))
    assert float(recon[:, 1].abs().max()) < 1e-5
    assert 0.1 < float(ds.x_test[:, 1].abs().max()) < 5  # the small column, standardized


def test_constant_columns_keep_scale_one_and_the_log_jacobian_finite():
    x = np.column_stack([np.full(50, 2.0), np.full(50, -1e6), np.arange(50.0)])
    ds, _ = dataset_from_arrays(x, quick_config(likelihood="gaussian"), x_test=x[:5])
    assert ds.scale[:2].tolist() == [1.0, 1.0]
    assert torch.all(ds.x_train[:, :2] == 0) and torch.all(ds.x_test[:, :2] == 0)
    assert ds.scale[2].item() == pytest.approx(training_rows(x, ds)[:, 2].std(), rel=1e-5)
    model = VAE(ModelConfig(likelihood="gaussian", hidden=(8,), latent_dim=2), ds.shape)
    model.set_preprocessing(ds.shift, ds.scale)
    assert float(model.log_jacobian()) == pytest.approx(-math.log(ds.scale[2].item()), rel=1e-6)


def test_nan_anywhere_in_the_training_file_is_refused_whichever_split_it_lands_in():
    x = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32)
    said = set()
    for row in range(len(x)):
        bad = x.copy()
        bad[row, 1] = np.nan
        with pytest.raises(VaekitError, match="NaN/Inf") as e:
            dataset_from_arrays(bad, quick_config(likelihood="gaussian"), x_test=x[:5])
        said.add(str(e.value).split(" contains")[0])
    assert said == {"the training split", "the validation split (rows held out of the training data)"}


def test_cli_train_refuses_nan_in_a_validation_row(tmp_path, capsys):
    x = np.random.default_rng(3).normal(size=(40, 3)).astype(np.float32)
    np.save(tmp_path / "t.npy", x)
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "t.npy"), likelihood="gaussian",
                                      standardize="off"))  # model space = the values as given
    row = int(np.flatnonzero((x == ds.x_val[0].numpy()).all(1))[0])  # a validation row
    x[row, 1] = np.inf
    np.save(tmp_path / "t.npy", x)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.npy", "--out", tmp_path / "r",
                           "--epochs", 1)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "validation split" in err and "NaN/Inf" in err, err
    assert not (tmp_path / "r").exists()


def test_values_beyond_float32_are_refused_in_one_line():
    x = np.random.default_rng(4).normal(size=(30, 2))
    x[7, 0] = 1e40
    with pytest.raises(VaekitError, match="float32"):
        dataset_from_arrays(x, quick_config(likelihood="gaussian"), x_test=x[:5])
