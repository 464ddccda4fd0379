"""Edges of every validated option, not only the middle: the smallest value accepted works (and
trains), the value just past it is refused with a message naming the option, from Python and the
CLI; the sanity cases at the edges (IWAE with k = 1, a detector with minibatches of one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import quick_config, run_cli

import vaekit
from vaekit import VaekitError
from vaekit.runtime import MAX_SEED, check_seed, check_threads

# option: (refused values, accepted values at the edge); validated in Config for every command
EDGES = {
    "epochs": ([0, -1], [1]),
    "batch_size": ([0, -1], [1]),
    "latent_dim": ([0, -1], [1]),
    "mc_samples": ([0, -1], [1]),
    "eval_mc_samples": ([0, -1], [1]),
    "iw_train_samples": ([0, -1], [1]),
    "kl_warmup": ([-1], [0, 1]),
    "kl_warmup_steps": ([-1], [0, 1]),
    "patience": ([-1], [0, 1]),
    "image_size": ([0, -1], [1]),
    "hidden": (["0", "-1", "8,0"], ["1", "1,1"]),
    "test_fraction": ([0.0, 1.0, -0.1, 1.5], [1e-3, 0.999]),
    "val_fraction": ([0.0, 1.0, -0.1, 1.5], [1e-3, 0.999]),
    "sigma": ([0.0, -1.0], [1e-6]),
    "lr": ([0.0, -1e-3], [1e-9]),
    "beta": ([-1e-9], [0.0]),
    "free_bits": ([-1e-9], [0.0]),
}
CASES = [(k, v, ok) for k, (bad, good) in EDGES.items()
         for ok, values in ((False, bad), (True, good)) for v in values]


def flat_for(key, value):
    """A config that isolates `key` (iw_train_samples is only meaningful with the iwae objective)."""
    return {key: value, **({"objective": "iwae"} if key == "iw_train_samples" else {})}


@pytest.mark.parametrize("key,value,ok", CASES)
def test_config_accepts_the_edge_and_refuses_one_past_it(key, value, ok):
    flat = flat_for(key, value)
    if ok:
        cfg = vaekit.Config.from_flat(flat)
        section = next(s for s in ("data", "model", "train") if hasattr(getattr(cfg, s), key))
        got = getattr(getattr(cfg, section), key)
        assert got == (tuple(int(v) for v in value.split(",")) if key == "hidden" else value)
    else:
        option = "--" + key.replace("_", "-")
        with pytest.raises(VaekitError, match=option):
            vaekit.Config.from_flat(flat)


@pytest.mark.parametrize("key,value", [(k, bad[0]) for k, (bad, _) in EDGES.items()])
def test_cli_refuses_one_past_the_edge_in_one_line(key, value, capsys, tmp_path):
    option = "--" + key.replace("_", "-")
    extra = ["--objective", "iwae"] if key == "iw_train_samples" else []
    code, _, err = run_cli(capsys, "train", option, value, *extra, "--out", tmp_path / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1 and option in err, err
    assert not (tmp_path / "r").exists()


def test_the_smallest_sizes_train(tmp_path):
    """One epoch of minibatches of one, one hidden unit, one latent dimension, one draw, warm-up
    and patience of one: a run that finishes with finite numbers."""
    table = tmp_path / "t.npy"
    np.save(table, np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32))
    run = vaekit.train(quick_config(data=str(table), epochs=1, batch_size=1, hidden=[1],
                                    latent_dim=1, mc_samples=1, eval_mc_samples=1, kl_warmup=1,
                                    patience=1), out=tmp_path / "r", quiet=True, hooks=[])
    assert run.metrics[0]["beta"] == 0.0  # warm-up of 1 epoch: epoch 1 has beta 0 / 1
    assert np.isfinite(run.summary["test"]["elbo"]) and run.summary["epochs"] == 1


def test_iwae_with_one_importance_sample_trains_like_the_elbo(tmp_path, tiny_table, capsys):
    """k = 1 is accepted (the check is >= 1, not > 1) and is the single-draw ELBO: after the same
    training, its validation ELBO is close to the ELBO objective's (same seed, same data)."""
    common = ["--data", tiny_table, "--hidden", "16", "--latent-dim", "2", "--epochs", "3",
              "--batch-size", "50", "--patience", "0", "--quiet"]
    code, _, err = run_cli(capsys, "train", *common, "--objective", "iwae", "--iw-train-samples",
                           "1", "--out", tmp_path / "iwae")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", *common, "--out", tmp_path / "elbo")
    assert code == 0, err
    iwae, elbo = (json.loads((tmp_path / n / "summary.json").read_text())["test"]["elbo"]
                  for n in ("iwae", "elbo"))
    assert iwae == pytest.approx(elbo, abs=0.5)


def test_seed_and_threads_edges():
    for ok in (0, 1, MAX_SEED):
        check_seed(ok)
    for bad in (-1, MAX_SEED + 1):
        with pytest.raises(VaekitError, match="--seed"):
            check_seed(bad)
    check_threads(None)
    check_threads(1)
    for bad in (0, -1):
        with pytest.raises(VaekitError, match="--threads"):
            check_threads(bad)


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--seed", str(MAX_SEED + 1)],
                                  ["--threads", "0"]])
def test_cli_train_refuses_bad_seed_and_threads(argv, capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *argv, "--epochs", "1", "--hidden", "8",
                           "--latent-dim", "2", "--quiet", "--out", tmp_path / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1 and argv[0] in err, err


# --- the scikit-learn detector ----------------------------------------------------------------
def test_detector_with_minibatches_of_one_fits_and_scores(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    det = vaekit.VAEAnomalyDetector(batch_size=1, epochs=2, latent_dim=1, hidden=(4,))
    det.fit(x)
    s = det.score_samples(x)
    assert s.shape == (60,) and np.isfinite(s).all()
    assert (det.predict(x) == -1).sum() == pytest.approx(0.1 * 60, abs=1)  # contamination 0.1
    far = det.score_samples(x[:5] + 50.0)
    assert far.max() < s.min()  # rows 50 sd away are less normal than every training row


@pytest.mark.parametrize("param,value", [("batch_size", 0), ("epochs", 0), ("latent_dim", 0),
                                         ("samples", 0), ("patience", -1), ("contamination", 0.0),
                                         ("contamination", 0.5), ("lr", 0.0)])
def test_detector_refuses_one_past_each_edge(param, value):
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=param):
        vaekit.VAEAnomalyDetector(**{param: value}).fit(np.zeros((10, 2)))
