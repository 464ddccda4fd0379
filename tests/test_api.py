"""`vaekit.encode/decode/sample/elbo/score`: data in as the user has it (digits' grey levels 0..16),
numpy out, no gradients, and the same numbers as the model's parts put together by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from sklearn.datasets import load_digits
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaekit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    return vaekit.train(quick_config(data="digits", epochs=2, latent_dim=3),
                        out=tmp_path_factory.mktemp("api") / "run", quiet=True)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:40]  # (40, 8, 8) grey levels 0..16, float64


def posterior(run, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder applied by hand to grey levels / 16 (digits' scaling): (mu, logvar)."""
    with torch.no_grad():
        h = run.model.encoder(torch.tensor(images / 16.0, dtype=torch.float32).reshape(len(images), -1))
    return h.chunk(2, dim=-1)


def test_encode_takes_grey_levels_and_returns_numpy(run, images):
    codes = vaekit.encode(run, images)
    assert isinstance(codes, np.ndarray) and codes.shape == (40, 3)
    mu, logvar = posterior(run, images)
    np.testing.assert_allclose(codes, mu.numpy(), rtol=1e-5, atol=1e-6)
    means, logvars = vaekit.encode(run, images.reshape(40, 64), logvar=True)  # (N, D) works too
    np.testing.assert_allclose(logvars, logvar.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(means, codes, rtol=1e-6)


def test_decode_and_sample_give_grey_levels(run, images):
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        by_hand = 16 * torch.sigmoid(run.model.decoder(torch.from_numpy(z))).reshape(5, 1, 8, 8)
    out = vaekit.decode(run, z)
    assert isinstance(out, np.ndarray) and out.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(out, by_hand.numpy(), rtol=1e-5, atol=1e-5)
    new = vaekit.sample(run, 7, seed=3)
    assert new.shape == (7, 1, 8, 8) and 0 <= new.min() and new.max() <= 16 and new.max() > 1
    np.testing.assert_array_equal(new, vaekit.sample(run, 7, seed=3))  # the seed fixes the draws
    assert vaekit.reconstruct(run, images).shape == (40, 1, 8, 8)


def test_elbo_and_kl_score_agree_with_torch_distributions(run, images):
    """The ELBO of grey levels / 16 under the Bernoulli decoder (no Jacobian: a pmf) against an
    independent Monte Carlo estimate; the kl score against the closed form."""
    mu, logvar = posterior(run, images)
    q, prior = Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)
    kl = kl_divergence(q, prior).sum(-1)
    np.testing.assert_allclose(vaekit.score(run, images, "kl"), kl.double().numpy(), rtol=1e-5)
    torch.manual_seed(1)
    z = q.sample((2000,))  # (S, N, L)
    with torch.no_grad():
        logits = run.model.decoder(z).flatten(2)  # (S, N, 64)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(40, -1)
    rec = Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)  # (S, N)
    expected = (rec.mean(0) - kl).double()
    stderr = rec.std(0).double() / np.sqrt(2000)
    got = torch.from_numpy(vaekit.elbo(run, images, mc_samples=2000))
    assert (got - expected).abs().max() < 5 * np.sqrt(2) * float(stderr.max())


def test_log_likelihood_is_plain_and_above_the_elbo_on_average(run, images):
    ll = vaekit.log_likelihood(run, images, k=200)
    assert isinstance(ll, np.ndarray) and ll.shape == (40,) and np.isfinite(ll).all()
    assert ll.mean() >= vaekit.elbo(run, images, mc_samples=50).mean() - 0.05


def test_data_of_another_shape_is_refused_in_one_line(run):
    with pytest.raises(vaekit.VaekitError, match=r"\(1, 8, 8\)"):
        vaekit.encode(run, np.zeros((3, 10)))
    with pytest.raises(vaekit.VaekitError, match=r"\(N, 3\)"):
        vaekit.decode(run, np.zeros((3, 2)))


def cli_scores(capsys, *argv) -> np.ndarray:
    code, out, err = run_cli(capsys, "score", *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("index,method,score") and len(lines) == 41
    return np.array([float(line.split(",")[2]) for line in lines[1:]])


def test_score_takes_the_cli_methods_and_default(run, images, capsys, tmp_path):
    """vaekit.score gives `vaekit score`'s numbers: the default method, typicality (the run's
    validation split as reference, groups of 4), likelihood-ratio against a background run."""
    np.save(tmp_path / "rows.npy", images)
    argv = [run.dir, "--data", tmp_path / "rows.npy"]
    np.testing.assert_allclose(vaekit.score(run, images),
                               cli_scores(capsys, *argv), rtol=1e-6)
    typical = vaekit.score(run, images, "typicality", samples=10, group=4)
    cli = cli_scores(capsys, *argv, "--method", "typicality", "--samples", "10",
                     "--group", "4")
    np.testing.assert_allclose(typical, cli, rtol=1e-6, atol=1e-5)
    assert (typical.reshape(10, 4) == typical[::4, None]).all()  # one value per group
    val = run.model.restore(load_val(run))  # the validation split as given
    np.testing.assert_allclose(vaekit.score(run.model, images, "typicality", samples=10, group=4,
                                            validation=val), typical, rtol=1e-6)
    for background in (run, run.dir):  # the run against itself: the same draws, ratio 0
        assert np.abs(vaekit.score(run, images, "likelihood-ratio", samples=5,
                                   background=background)).max() < 1e-4


def load_val(run):
    from vaekit.data import load_for_model

    return load_for_model(run.model, run.config, None, "val")[0]


@pytest.mark.parametrize("kwargs,words", [
    ({"method": "nope"}, ["unknown score 'nope'", "typicality"]),
    ({"method": "likelihood-ratio"}, ["background="]),
    ({"method": "elbo", "background": "x"}, ["applies to --method likelihood-ratio"]),
    ({"method": "iw-nll", "group": 3}, ["applies to --method typicality"]),
    ({"method": "typicality", "group": 0}, ["must be >= 1"]),
])
def test_score_bad_method_or_reference_is_one_line(run, images, kwargs, words):
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.score(run, images, **kwargs)
    assert len(str(e.value).splitlines()) == 1 and all(w in str(e.value) for w in words)


def test_typicality_of_a_bare_model_needs_validation(run, images):
    with pytest.raises(vaekit.VaekitError, match="validation="):
        vaekit.score(run.model, images, "typicality")


def test_a_run_trained_on_arrays_asks_for_data_instead_of_reading_the_default(tmp_path, capsys):
    """Arrays of the digits' shape: the config's default data is `digits`, and a command after
    training read the digits' test split in silence (as if the run had been trained on it)."""
    from vaekit.data import IN_MEMORY, dataset_from_arrays

    x = np.random.default_rng(0).integers(0, 17, size=(300, 8, 8)).astype(np.float32)
    ds, cfg = dataset_from_arrays(x, quick_config(epochs=1), x_test=x[:50])
    run = vaekit.train(cfg, out=tmp_path / "run", quiet=True, dataset=ds)
    assert run.config.data.data == IN_MEMORY == run.manifest["data"]["source"]
    code, _, err = run_cli(capsys, "eval", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and "--data FILE" in err
    np.save(tmp_path / "x.npy", x[:50])
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", "--data", tmp_path / "x.npy", "--json")
    assert code == 0 and '"n": 50' in out, err


def test_import_and_the_cli_parser_load_neither_scikit_learn_nor_matplotlib():
    """`import vaekit` and every `vaekit` command's start skip scikit-learn, SciPy and matplotlib
    (about 1.1 s of the 2.8 s `vaekit --help` took); VAEAnomalyDetector still imports from the
    package, and loads scikit-learn when asked for."""
    import subprocess
    import sys
    code = ("import sys, vaekit, vaekit.cli; vaekit.cli.build_parser(); "
            "print(sorted(m for m in ('sklearn', 'scipy', 'matplotlib') if m in sys.modules)); "
            "from vaekit import VAEAnomalyDetector; print(VAEAnomalyDetector.__module__, "
            "'sklearn' in sys.modules, 'VAEAnomalyDetector' in dir(vaekit))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "vaekit.detector True True"], out.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vaekit.nope  # noqa: B018
