"""`vaekit sweep`: one run per beta; its table checked against figures computed here from each run's
best.pt; a larger beta gives a lower rate; resume; errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from torch.distributions import Bernoulli, Normal, kl_divergence

import vaekit
from vaekit import VAE
from vaekit.data import load_dataset
from vaekit.runs import load_torch
from vaekit.sweep import parse_betas

QUICK = ("--hidden", "32", "--latent-dim", "3", "--epochs", "4", "--batch-size", "16",
         "--lr", "3e-3", "--patience", "0", "--threads", "1", "--quiet")


EVAL_DRAWS = 1000  # --eval-mc-samples of the swept runs: the table's distortion is that precise
OWN_DRAWS = 4000  # draws per example of the distortion computed here


def independent_figures(run_dir, draws: int = OWN_DRAWS) -> dict[str, float]:
    """Rate, distortion and active units of a run's best.pt on its test split, computed here:
    the KL with torch.distributions, E_q log p(x|z) from `draws` draws per example, and the
    standard error of an estimate of it from one draw per example."""
    run = vaekit.load(run_dir)
    best = VAE.from_spec(load_torch(run_dir / "best.pt")["spec"])
    best.load_state_dict(load_torch(run_dir / "best.pt")["model"])
    x = load_dataset(run.config)[0].x_test
    with torch.no_grad():
        mu, logvar = best.encoder(x).chunk(2, dim=-1)
        q = Normal(mu, torch.exp(0.5 * logvar))
        rate = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)  # (N,)
        z = q.sample((draws,))  # (S, N, L)
        logits = best.decoder(z).flatten(-3)  # (S, N, 1, 8, 8) -> (S, N, 64)
        log_px = Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)
    per_example_var = log_px.double().var(0)  # Var_z log p(x|z), (N,)
    return {"rate": float(rate.mean()), "distortion": -float(log_px.double().mean()),
            "se": float(per_example_var.sum().sqrt()) / len(x),
            "active_units": int((mu.double().var(0) > 0.01).sum())}


def test_sweep_table_matches_figures_computed_from_each_best_checkpoint(tmp_path, tiny_images,
                                                                        capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, "sweep", "--beta", "0.2,4", "--data", tiny_images,
                                *QUICK, "--eval-mc-samples", str(EVAL_DRAWS), "--out", out)
    assert code == 0, err
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["beta"]) for r in rows] == [0.2, 4.0]
    for r in rows:
        run = out / f"beta-{float(r['beta']):g}"
        assert vaekit.load(run).config.train.beta == float(r["beta"])  # each run its own beta
        want = independent_figures(run)
        assert float(r["rate"]) == pytest.approx(want["rate"], rel=1e-4, abs=1e-5)
        # both distortions are Monte Carlo estimates (EVAL_DRAWS and OWN_DRAWS per example):
        # equal within 4 standard errors of their difference
        tol = 4 * want["se"] * (1 / EVAL_DRAWS + 1 / OWN_DRAWS) ** 0.5 + 1e-4
        assert float(r["distortion"]) == pytest.approx(want["distortion"], abs=tol)
        assert float(r["elbo"]) == pytest.approx(-want["distortion"] - want["rate"], abs=tol)
        assert int(r["active_units"]) == want["active_units"]
    low, high = rows
    # a larger KL weight buys a lower rate at a higher distortion (Alemi et al. 2018)
    assert float(low["rate"]) > 0.5 and float(high["rate"]) < 0.2 * float(low["rate"])
    assert float(low["distortion"]) < float(high["distortion"])
    with Image.open(out / "rate-distortion.png") as picture:
        assert picture.format == "PNG" and picture.width > 100
        assert len(np.unique(np.asarray(picture.convert("L")))) > 2  # something is drawn
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page and 'href="beta-0.2/"' in page
    assert f"<td>{float(low['rate']):.2f}</td>" in page
    assert "index.html" in stdout


def test_sweep_resume_keeps_finished_runs(tmp_path, tiny_images, capsys):
    out = tmp_path / "sweep"
    quick = [*QUICK[:QUICK.index("--epochs")], "--epochs", "1", *QUICK[QUICK.index("--epochs") + 2:]]
    code, _, err = run_cli(capsys, "sweep", "--beta", "0.5,2", "--data", tiny_images, *quick,
                           "--out", out)
    assert code == 0, err
    # a second sweep into the same folder must not overwrite; --resume keeps finished runs
    code, _, err = run_cli(capsys, "sweep", "--beta", "0.5,2", "--data", tiny_images, *quick,
                           "--out", out)
    assert code == 2 and "--resume" in err
    before = (out / "beta-0.5" / "best.pt").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "sweep", "--beta", "0.5,2,1", "--data", tiny_images, *quick,
                           "--out", out, "--resume")
    assert code == 0, err
    assert (out / "beta-0.5" / "best.pt").stat().st_mtime_ns == before
    assert (out / "beta-1" / "summary.json").is_file()
    assert len((out / "sweep.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("text", ["", "a,b", "1,1", "-1,2"])
def test_bad_beta_lists_are_refused(text, tmp_path, capsys):
    code, _, err = run_cli(capsys, "sweep", "--beta", text, "--out", tmp_path / "s")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--beta" in err


def test_parse_betas():
    assert parse_betas("0.1, 0.5,1,2,4") == [0.1, 0.5, 1.0, 2.0, 4.0]


def test_autoencoder_has_no_rate_to_sweep(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sweep", "--beta", "1,2", "--model", "ae", "--out",
                           tmp_path / "s")
    assert code == 2 and "--model ae" in err
