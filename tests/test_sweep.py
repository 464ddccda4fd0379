"""`vaekit sweep`: one run per beta, the table agrees with each run's own summary, resume, errors."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import run_cli
from PIL import Image

from vaekit.sweep import parse_betas

QUICK = ("--hidden", "32", "--latent-dim", "3", "--epochs", "2", "--batch-size", "100",
         "--patience", "0", "--threads", "1", "--quiet")


def test_sweep_writes_one_run_per_beta_and_a_consistent_table(tmp_path, tiny_images, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run_cli(capsys, "sweep", "--beta", "0.5,2", "--data", tiny_images,
                                *QUICK, "--out", out)
    assert code == 0, err
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["beta"]) for r in rows] == [0.5, 2.0]
    for r in rows:
        run = out / f"beta-{float(r['beta']):g}"
        config = (run / "config.yaml").read_text()
        assert f"beta: {float(r['beta'])}" in config  # each run trained with its own beta
        test = json.loads((run / "summary.json").read_text())["test"]
        for key in ("rate", "distortion", "elbo"):
            assert float(r[key]) == pytest.approx(test[key], rel=1e-5)
        assert int(r["active_units"]) == test["active_units"]
        # -ELBO = D + R: the identity the constant-ELBO lines of the plot draw
        assert -float(r["elbo"]) == pytest.approx(float(r["distortion"]) + float(r["rate"]), rel=1e-5)
    with Image.open(out / "rate-distortion.png") as picture:
        assert picture.format == "PNG" and picture.width > 100
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page and 'href="beta-0.5/"' in page
    assert "index.html" in stdout

    # a second sweep into the same folder must not overwrite; --resume keeps finished runs
    code, _, err = run_cli(capsys, "sweep", "--beta", "0.5,2", "--data", tiny_images, *QUICK,
                           "--out", out)
    assert code == 2 and "--resume" in err
    before = (out / "beta-0.5" / "best.pt").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "sweep", "--beta", "0.5,2,1", "--data", tiny_images, *QUICK,
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
