"""Out-of-distribution scores: the PNG code length, the perturbation, the typicality statistic (against
sums written out and information-theoretic bounds), and the `vaekit score` entries on synthetic data
where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from scipy.stats import chisquare
from sklearn.metrics import roc_auc_score

import vaekit
from vaekit import anomaly, ood
from vaekit.data import load_for_model
from vaekit.errors import VaekitError

NATS_PER_BYTE = 8 * math.log(2)


def test_png_code_length_of_constant_and_noise_images():
    """A constant image codes in a few dozen bytes; uniform noise cannot code below its entropy
    (H * W bytes for grey, 3 H W for colour) but PNG stays within its overhead of it."""
    rng = np.random.default_rng(0)
    for c in (1, 3):
        flat = np.full((1, c, 28, 28), 77, np.uint8)
        noise = rng.integers(0, 256, (1, c, 28, 28), dtype=np.uint8)
        assert float(ood.png_nats(flat)[0]) < 100 * NATS_PER_BYTE
        bits = float(ood.png_nats(noise)[0])
        assert c * 784 * NATS_PER_BYTE <= bits < (c * 784 * 1.05 + 200) * NATS_PER_BYTE


def test_levels_must_be_8bit():
    x = torch.tensor([[[[0.0, 255.0], [12.0, 3.0]]]])
    np.testing.assert_array_equal(ood.as_levels(x), x.numpy().astype(np.uint8))
    np.testing.assert_array_equal(ood.as_levels(x + 0.7, dequantized=True), x.numpy().astype(np.uint8))
    for bad in (x + 0.4, x * 2, x - 1):
        with pytest.raises(VaekitError, match="8-bit images"):
            ood.as_levels(bad)


def test_perturb_replaces_about_rate_of_values_uniformly():
    x = np.zeros((200, 1, 28, 28), np.uint8)
    p = ood.perturb(x, 0.2, seed=1)
    assert x.max() == 0  # the input is left as it was
    hit = p != 0  # a replacement by level 0 is invisible: 1/256 of them
    assert abs(hit.mean() - 0.2 * 255 / 256) < 0.005
    counts = np.bincount(p[hit], minlength=256)[1:]  # levels 1..255 equally likely
    assert chisquare(counts).pvalue > 1e-3
    f = ood.perturb(np.zeros((1000, 5)), 0.5, seed=2, low=-1, high=1)
    assert abs((f != 0).mean() - 0.5) < 0.03 and f.min() >= -1 and f.max() <= 1
    with pytest.raises(VaekitError, match="rate"):
        ood.perturb(x, 1.5)


def test_typicality_statistic_written_out():
    nll = torch.tensor([1.0, 2.0, 3.0, 10.0, 11.0, 4.0, 7.0], dtype=torch.float64)
    got = ood.typicality(nll, entropy=5.0, group=3)
    want = [abs(2 - 5)] * 3 + [abs(25 / 3 - 5)] * 3 + [abs(7 - 5)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))
    torch.testing.assert_close(ood.typicality(nll, 5.0, 1), (nll - 5).abs())
    ref = torch.from_numpy(np.random.default_rng(0).normal(size=500))
    cut = ood.bootstrap_threshold(ref, 0.0, group=1, rate=0.1, draws=20000)
    assert abs(cut - np.quantile(np.abs(ref.numpy()), 0.9)) < 0.05


# --- the score entries, on models trained where the answer is known ----------------------------
@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """An 8-bit VAE (one discretized logistic per pixel) trained on uniform-noise 8x8 images."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    np.save(folder / "noise.npy", rng.integers(0, 256, (600, 8, 8), dtype=np.uint8))
    test = np.concatenate([rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
                           np.repeat(rng.integers(0, 256, 40, dtype=np.uint8), 64).reshape(40, 8, 8)])
    np.savez(folder / "test.npz", X=test, y=np.r_[np.zeros(40, np.int64), np.ones(40, np.int64)])
    cfg = quick_config(data=str(folder / "noise.npy"), likelihood="discretized-logistic",
                       mixtures=1, hidden=[16], latent_dim=2, epochs=3)
    return vaekit.train(cfg, out=folder / "run", quiet=True, hooks=[]), folder


def test_complexity_flags_constant_images_and_is_nll_minus_png(noise_run):
    """Trained on noise, the model gives every image about 64 ln 256 = 355 nats (within ~120);
    constant images code in ~64 fewer PNG bytes (~350 nats), so their corrected score is higher."""
    run, folder = noise_run
    x, y = load_for_model(run.model, run.config, str(folder / "test.npz"))
    s = anomaly.score(run.model, x, "complexity", samples=8, seed=2)
    nll = anomaly.score(run.model, x, "iw-nll", samples=8, seed=2).double()
    levels = np.round(x.numpy() * 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    torch.testing.assert_close(s, nll - ood.png_nats(levels))
    assert roc_auc_score(y, s.numpy()) == 1.0


def test_cli_complexity_refuses_a_tabular_run(tiny_table, capsys, tmp_path):
    run = vaekit.train(quick_config(data=str(tiny_table), epochs=1), out=tmp_path / "run", quiet=True,
                       hooks=[])
    code, _, err = run_cli(capsys, "score", run.dir, "--method", "complexity")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "8-bit image run" in err, err


@pytest.fixture(scope="module")
def gauss_run(tmp_path_factory):
    """A gaussian VAE of 16-D standard normal rows; the test rows: 100 such, 100 near the mode."""
    folder = tmp_path_factory.mktemp("gauss")
    rng = np.random.default_rng(0)
    np.save(folder / "train.npy", rng.normal(size=(1500, 16)).astype(np.float32))
    x = np.concatenate([rng.normal(size=(100, 16)), 0.05 * rng.normal(size=(100, 16))])
    np.savez(folder / "test.npz", X=x.astype(np.float32), y=np.r_[np.zeros(100), np.ones(100)]
             .astype(np.int64))
    cfg = quick_config(data=str(folder / "train.npy"), hidden=[16], latent_dim=2, epochs=5)
    return vaekit.train(cfg, out=folder / "run", quiet=True, hooks=[]), folder


def test_typicality_flags_the_atypical_mode_that_likelihood_prefers(gauss_run, capsys):
    """Rows near the mode of N(0, I) have the highest density but an NLL far below the entropy
    (16/2 ln(2 pi e) = 22.7 nats): iw-nll ranks them most normal, typicality most anomalous."""
    run, folder = gauss_run
    x, y = load_for_model(run.model, run.config, str(folder / "test.npz"))
    assert roc_auc_score(y, anomaly.score(run.model, x, "iw-nll", samples=10).numpy()) < 0.05
    val, _ = load_for_model(run.model, run.config, None, "val")
    ref = anomaly.Reference(validation=val, group=1)
    s = anomaly.score(run.model, x, "typicality", samples=10, ref=ref)
    entropy = anomaly.score(run.model, val, "iw-nll", samples=10).double().mean()
    torch.testing.assert_close(s, (anomaly.score(run.model, x, "iw-nll", samples=10).double()
                                   - entropy).abs())
    assert roc_auc_score(y, s.numpy()) > 0.95
    torch.testing.assert_close(anomaly.score(run.model, x, "ood", samples=10, ref=ref), s)
    assert abs(float(entropy) - 8 * math.log(2 * math.pi * math.e)) < 3
    code, stdout, err = run_cli(capsys, "score", run.dir, "--data", folder / "test.npz", "--method",
                                "typicality", "--group", "4", "--samples", "10")
    assert code == 0, err
    rows = [line.split(",") for line in stdout.splitlines()[1:]]
    cli = np.array([float(r[2]) for r in rows])
    by_hand = ood.typicality(anomaly.score(run.model, x, "iw-nll", samples=10).double(),
                             float(entropy), 4)
    np.testing.assert_allclose(cli, by_hand.numpy(), rtol=1e-5, atol=1e-4)
    code, stdout, err = run_cli(capsys, "score", run.dir, "--data", folder / "test.npz", "--method",
                                "ood", "--group", "4", "--samples", "10")  # ood = typicality
    assert code == 0, err
    np.testing.assert_allclose([float(line.split(",")[2]) for line in stdout.splitlines()[1:]], cli)
    with pytest.raises(VaekitError, match="validation"):
        anomaly.score(run.model, x, "typicality")


def test_likelihood_ratio_is_the_difference_of_two_nlls(gauss_run, capsys, tmp_path):
    run, folder = gauss_run
    bg_data = ood.perturb(np.load(folder / "train.npy"), 0.2, seed=0, low=-3, high=3)
    np.save(tmp_path / "bg.npy", bg_data)
    bg = vaekit.train(quick_config(data=str(tmp_path / "bg.npy"), hidden=[16], latent_dim=2,
                                   epochs=2), out=tmp_path / "bg", quiet=True, hooks=[])
    x, _ = load_for_model(run.model, run.config, str(folder / "test.npz"))
    raw = run.model.restore(x)  # the data as given (float32 round trip: the bytes that seed the draws)
    s = anomaly.score(run.model, x, "likelihood-ratio", samples=6,
                      ref=anomaly.Reference(background=bg.model))
    want = (anomaly.score(run.model, x, "iw-nll", samples=6).double()
            - anomaly.score(bg.model, bg.model.prepare(raw), "iw-nll", samples=6).double())
    torch.testing.assert_close(s, want, rtol=1e-5, atol=1e-4)
    same = anomaly.score(run.model, x, "likelihood-ratio", samples=6,
                         ref=anomaly.Reference(background=run.model))
    assert float(same.abs().max()) < 1e-4
    code, stdout, err = run_cli(capsys, "score", run.dir, "--data", folder / "test.npz", "--method",
                                "likelihood-ratio", "--background", bg.dir, "--samples", "6")
    assert code == 0, err
    cli = np.array([float(line.split(",")[2]) for line in stdout.splitlines()[1:]])
    np.testing.assert_allclose(cli, want.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("argv,words", [
    (["--method", "likelihood-ratio"], ["--background RUN2"]),
    (["--method", "elbo", "--background", "RUN"], ["--background applies to"]),
    (["--method", "typicality", "--group", "0"], ["--group must be >= 1"]),
    (["--method", "iw-nll", "--group", "5"], ["--group applies to"]),
])
def test_cli_ood_bad_inputs(gauss_run, capsys, argv, words):
    run, folder = gauss_run
    argv = [str(run.dir) if a == "RUN" else a for a in argv]
    code, _, err = run_cli(capsys, "score", run.dir, "--data", folder / "test.npz", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_likelihood_ratio_background_of_another_shape(gauss_run, noise_run):
    run, folder = gauss_run
    x, _ = load_for_model(run.model, run.config, str(folder / "test.npz"))
    with pytest.raises(VaekitError, match="same data shape"):
        anomaly.score(run.model, x, "likelihood-ratio",
                      ref=anomaly.Reference(background=noise_run[0].model))
