"""Every option that changes what is trained or scored is applied, not silently ignored.

Each test compares a run with the option against the option applied by hand (a stand-in objective
that computes the loss itself from the model's terms) or against a run without it, and against
values written out in the test: the batches the objective sees, the loss the optimizer steps on,
the checkpoint early stopping keeps, the rows that are scored.
"""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from conftest import quick_config

import vaekit
from vaekit.data import load_dataset
from vaekit.objectives import OBJECTIVES
from vaekit.runs import load_torch

DIGITS_BATCHES = 15  # digits: 1797 - 180 test - 162 validation = 1455 training rows, batches of 100


def train_quiet(tmp_path, name, **flat):
    return vaekit.train(quick_config(**flat), out=tmp_path / name, quiet=True, hooks=[])


def final_weights(tmp_path, name) -> dict[str, torch.Tensor]:
    return load_torch(tmp_path / name / "last.pt")["model"]


def same_weights(a, b, atol=1e-5) -> bool:
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def recording(monkeypatch, name="elbo"):
    """Wrap OBJECTIVES[name]; returns the list of (batch, beta, loss) the training loop passed."""
    real, seen = OBJECTIVES[name], []

    def objective(model, x, beta, cfg):
        loss, terms = real(model, x, beta, cfg)
        seen.append((x.detach().clone(), beta, float(loss.detach())))
        return loss, terms

    monkeypatch.setitem(OBJECTIVES, name, objective)
    return seen


def by_hand(monkeypatch, loss_fn):
    """Replace the ELBO objective with loss_fn(model, x, call_index, terms) -> loss, terms from one
    draw (a run with the option off then trains on the option as the test wrote it)."""
    calls = {"n": 0}

    def objective(model, x, beta, cfg):
        terms = model.elbo_terms(x, 1)
        loss = loss_fn(model, x, calls["n"], terms)
        calls["n"] += 1
        return loss, terms

    monkeypatch.setitem(OBJECTIVES, "elbo", objective)


# --- --binarize dynamic -----------------------------------------------------------------------
def test_dynamic_binarization_redraws_every_training_batch(monkeypatch, tmp_path):
    seen = recording(monkeypatch)
    train_quiet(tmp_path, "bin", binarize="dynamic", epochs=2)
    batches = [x for x, _, _ in seen]
    assert len(batches) == 2 * DIGITS_BATCHES
    assert all(set(torch.unique(x).tolist()) <= {0.0, 1.0} for x in batches)
    # x ~ Bernoulli(grey level): the share of ones matches the grey mean (a threshold would not)
    grey = load_dataset(quick_config())[0].x_train
    ones = torch.cat(batches).mean().item()
    assert ones == pytest.approx(grey.mean().item(), abs=0.005)  # SE of the share: ~0.0012
    # redrawn each epoch: the two epochs' training sets differ (a binarization done once would not)
    epoch = [torch.cat(batches[i * DIGITS_BATCHES:(i + 1) * DIGITS_BATCHES]) for i in (0, 1)]
    rows = [sorted(map(tuple, e.int().tolist())) for e in epoch]
    assert rows[0] != rows[1]

    seen.clear()  # without the option the same loop sees grey levels
    train_quiet(tmp_path, "grey", epochs=1)
    assert len(torch.unique(torch.cat([x for x, _, _ in seen]))) > 2


# --- --beta and --kl-warmup -------------------------------------------------------------------
def test_beta_and_warmup_reach_the_loss_and_the_metrics(monkeypatch, tmp_path):
    seen = recording(monkeypatch)
    run = train_quiet(tmp_path, "warm", beta=2.0, kl_warmup=4, epochs=5)
    want = [0.0, 0.5, 1.0, 1.5, 2.0]  # beta * min(1, e / 4) for the 0-based epoch e
    assert [r["beta"] for r in run.metrics] == pytest.approx(want)
    assert [b for _, b, _ in seen] == pytest.approx(np.repeat(want, DIGITS_BATCHES).tolist())
    for r in run.metrics:  # the loss of an epoch is beta_e * KL - E_q log p(x|z)
        assert r["train_loss"] == pytest.approx(r["beta"] * r["train_kl"] - r["train_reconstruction"],
                                                rel=1e-5)


def test_beta_trains_the_same_weights_as_beta_applied_by_hand(monkeypatch, tmp_path):
    train_quiet(tmp_path, "beta", beta=3.0, epochs=2)
    train_quiet(tmp_path, "plain", epochs=2)
    by_hand(monkeypatch, lambda m, x, i, t: 3.0 * t.kl.mean() - t.reconstruction.mean())
    train_quiet(tmp_path, "hand", epochs=2)
    beta, plain, hand = (final_weights(tmp_path, n) for n in ("beta", "plain", "hand"))
    assert same_weights(beta, hand)
    assert not same_weights(beta, plain, atol=1e-3)


def test_warmup_trains_the_same_weights_as_the_schedule_written_out(monkeypatch, tmp_path):
    train_quiet(tmp_path, "warm", beta=2.0, kl_warmup=2, epochs=3)

    def scheduled(m, x, i, t):
        beta = 2.0 * min(1.0, (i // DIGITS_BATCHES) / 2)  # 0, 1, 2 in epochs 1, 2, 3
        return beta * t.kl.mean() - t.reconstruction.mean()

    by_hand(monkeypatch, scheduled)
    train_quiet(tmp_path, "hand", epochs=3)
    assert same_weights(final_weights(tmp_path, "warm"), final_weights(tmp_path, "hand"))


def test_warmup_in_steps_reaches_each_step_and_the_metrics(monkeypatch, tmp_path):
    """--kl-warmup-steps: step s (0-based, counted across epochs) trains with beta * min(1, s / W);
    an epoch's row reports its last step's weight."""
    seen = recording(monkeypatch)
    run = train_quiet(tmp_path, "steps", beta=2.0, kl_warmup_steps=20, epochs=3)
    want = [2.0 * min(1.0, s / 20) for s in range(3 * DIGITS_BATCHES)]
    assert [b for _, b, _ in seen] == pytest.approx(want)
    assert [r["beta"] for r in run.metrics] == pytest.approx(
        [want[(e + 1) * DIGITS_BATCHES - 1] for e in range(3)])  # 1.4, 2.0, 2.0


def test_warmup_in_steps_trains_the_same_weights_as_the_schedule_written_out(monkeypatch,
                                                                             tmp_path):
    train_quiet(tmp_path, "warm", kl_warmup_steps=20, epochs=2)
    train_quiet(tmp_path, "plain", epochs=2)

    def scheduled(m, x, i, t):  # i: the 0-based call, one per gradient step
        return min(1.0, i / 20) * t.kl.mean() - t.reconstruction.mean()

    by_hand(monkeypatch, scheduled)
    train_quiet(tmp_path, "hand", epochs=2)
    warm = final_weights(tmp_path, "warm")
    assert same_weights(warm, final_weights(tmp_path, "hand"))
    assert not same_weights(warm, final_weights(tmp_path, "plain"), atol=1e-3)


def test_warmup_in_epochs_and_in_steps_together_are_refused():
    with pytest.raises(vaekit.VaekitError, match="--kl-warmup-steps"):
        quick_config(kl_warmup=2, kl_warmup_steps=20)


# --- --free-bits ------------------------------------------------------------------------------
def test_free_bits_trains_the_same_weights_as_the_floor_applied_by_hand(monkeypatch, tmp_path):
    floor = 0.5
    run = train_quiet(tmp_path, "fb", free_bits=floor, epochs=2)
    plain = train_quiet(tmp_path, "plain", epochs=2)

    def floored(m, x, i, t):  # Kingma et al. 2016, eq. 15: sum_u max(lambda, E_batch KL_u)
        kl_u = t.kl_per_dim.mean(0)
        return torch.where(kl_u > floor, kl_u, torch.full_like(kl_u, floor)).sum() \
            - t.reconstruction.mean()

    by_hand(monkeypatch, floored)
    train_quiet(tmp_path, "hand", epochs=2)
    assert same_weights(final_weights(tmp_path, "fb"), final_weights(tmp_path, "hand"))
    assert not same_weights(final_weights(tmp_path, "fb"), final_weights(tmp_path, "plain"), 1e-3)
    # the floor is in the loss only: the reported KL stays the true KL, so the loss exceeds
    # KL - E log p(x|z) where a dimension's KL is under the floor; without it they are equal
    first, plain_first = run.metrics[0], plain.metrics[0]
    assert first["train_loss"] > first["train_kl"] - first["train_reconstruction"] + 0.01
    assert plain_first["train_loss"] == pytest.approx(
        plain_first["train_kl"] - plain_first["train_reconstruction"], rel=1e-5)


# --- --mc-samples -----------------------------------------------------------------------------
def test_mc_samples_reaches_the_objective_and_averages_that_many_draws(monkeypatch, tmp_path):
    run = train_quiet(tmp_path, "mc", mc_samples=16, epochs=1)
    train_quiet(tmp_path, "one", epochs=1)

    def sixteen(model, x, beta, cfg):  # E_q log p(x|z) from 16 draws, whatever cfg says
        terms = model.elbo_terms(x, 16)
        return terms.kl.mean() - terms.reconstruction.mean(), terms

    monkeypatch.setitem(OBJECTIVES, "elbo", sixteen)
    train_quiet(tmp_path, "hand", epochs=1)
    got = final_weights(tmp_path, "mc")
    assert same_weights(got, final_weights(tmp_path, "hand"))
    assert not same_weights(got, final_weights(tmp_path, "one"), atol=1e-4)
    # the reconstruction term averaged over S draws has 1/S the variance of one draw
    x = load_dataset(quick_config())[0].x_val[:4]
    with torch.no_grad():
        one = torch.stack([run.model.elbo_terms(x, 1).reconstruction for _ in range(300)])
        many = torch.stack([run.model.elbo_terms(x, 16).reconstruction for _ in range(300)])
    ratio = (many.var(0) / one.var(0)).mean().item()
    assert 0.6 / 16 < ratio < 1.6 / 16, ratio  # 300 repeats: the variance ratio to within ~20%


# --- --objective iwae --iw-train-samples ------------------------------------------------------
def test_iwae_trains_on_the_bound_written_out(monkeypatch, tmp_path):
    k = 4
    train_quiet(tmp_path, "iwae", objective="iwae", iw_train_samples=k, epochs=2)
    train_quiet(tmp_path, "elbo", epochs=2)

    def iwae(model, x, beta, cfg):  # Burda et al. (2015), eq. 8: log (1/k) sum_k w_k
        log_w, terms = model.log_weights(x, k, with_terms=True)  # (k, B)
        return -(torch.logsumexp(log_w, 0) - math.log(k)).mean(), terms

    monkeypatch.setitem(OBJECTIVES, "iwae", iwae)
    train_quiet(tmp_path, "hand", objective="iwae", iw_train_samples=1, epochs=2)
    got = final_weights(tmp_path, "iwae")
    assert same_weights(got, final_weights(tmp_path, "hand"))
    assert not same_weights(got, final_weights(tmp_path, "elbo"), atol=1e-3)


def test_iwae_with_one_sample_is_the_elbo_with_a_sampled_kl():
    """k = 1: log w = log p(x|z) + log p(z) - log q(z|x), the single-draw ELBO; its mean over
    draws is the ELBO with the closed-form KL."""
    run_cfg = quick_config(likelihood="bernoulli")
    ds = load_dataset(run_cfg)[0]
    model = vaekit.VAE(run_cfg.model, ds.shape)
    x = ds.x_val[:8]
    with torch.no_grad():
        torch.manual_seed(5)
        iwae_loss, terms = OBJECTIVES["iwae"](model, x, 1.0, quick_config(objective="iwae",
                                                                             iw_train_samples=1).train)
        torch.manual_seed(5)  # the same draw of z, by hand with torch.distributions
        _q = model.encode(x)
        mu, logvar = _q.loc, _q.logvar
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        z = mu + torch.exp(0.5 * logvar) * torch.randn(1, *mu.shape)
        logits = model.decoder(z).flatten(-3)  # (1, B, 1, 8, 8) -> (1, B, 64)
        log_px = torch.distributions.Bernoulli(logits=logits, validate_args=False) \
            .log_prob(x).sum(-1)
        log_w = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) \
            - q.log_prob(z).sum(-1)
        assert float(iwae_loss) == pytest.approx(-float(log_w.mean()), rel=1e-5)
        draws = torch.stack([-OBJECTIVES["iwae"](model, x, 1.0, quick_config(
            objective="iwae", iw_train_samples=1).train)[0] for _ in range(1000)])
        elbo = model.elbo(x, mc_samples=4000).mean()
    assert float(draws.mean()) == pytest.approx(float(elbo), abs=4 * float(draws.std()) / math.sqrt(1000))


# --- --test-data ------------------------------------------------------------------------------
def test_test_data_is_what_the_summary_scores(tmp_path, tiny_table):
    rows = np.load(tiny_table)
    other = tmp_path / "other.npy"
    far = rows[:37] + 50.0  # 37 rows far from the training data: a much larger KL
    np.save(other, far)
    own = train_quiet(tmp_path, "own", data=str(tiny_table), epochs=2)
    given = train_quiet(tmp_path, "given", data=str(tiny_table), test_data=str(other), epochs=2)
    test = given.summary["test"]
    assert test["n"] == 37 and own.summary["test"]["n"] == 30  # 10% of 300 held out otherwise
    # the KL is deterministic: from the encoder on the given rows, standardized by hand with the
    # statistics of the training rows (all 300 rows minus the validation rows)
    model = given.model
    with torch.no_grad():
        x = (torch.from_numpy(far) - model.shift) / model.scale
        _q = model.encode(x)
        mu, logvar = _q.loc, _q.logvar
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                               torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert test["kl"] == pytest.approx(float(kl.mean()), rel=1e-4)
    assert test["kl"] > 5 * own.summary["test"]["kl"]
    n_train = len(rows) - round(0.1 * len(rows))
    manifest = json.loads((tmp_path / "given" / "manifest.json").read_text())
    assert manifest["data"]["n_test"] == 37 and manifest["data"]["n_train"] == n_train


# --- --standardize ----------------------------------------------------------------------------
@pytest.mark.parametrize("standardize", ["on", "off"])
def test_standardize_decides_the_rows_the_objective_sees(monkeypatch, tmp_path, tiny_table,
                                                         standardize):
    seen = recording(monkeypatch)
    run = train_quiet(tmp_path, "r", data=str(tiny_table), likelihood="gaussian",
                      standardize=standardize, epochs=1)
    x = torch.cat([b for b, _, _ in seen]).double()  # every training row, once
    raw = torch.from_numpy(np.load(tiny_table)).double()
    if standardize == "off":  # the rows as given: each one is a row of the file
        assert torch.cdist(x, raw).min(1).values.max() < 1e-4
        assert float(run.model.log_jacobian()) == 0.0
    else:  # standardized with the statistics of exactly these rows (population std)
        restored = x * run.model.scale.double() + run.model.shift.double()
        assert torch.cdist(restored, raw).min(1).values.max() < 1e-3
        torch.testing.assert_close(restored.mean(0), run.model.shift.double(), rtol=0, atol=1e-4)
        torch.testing.assert_close(restored.std(0, unbiased=False), run.model.scale.double(),
                                   rtol=1e-4, atol=0)
        assert x.abs().mean() < 2 and raw.abs().mean() > 5


def test_standardize_on_for_images_is_applied(tmp_path, tiny_images):
    on = train_quiet(tmp_path, "on", data=str(tiny_images), likelihood="gaussian",
                     standardize="on", epochs=1)
    off = train_quiet(tmp_path, "off", data=str(tiny_images), likelihood="gaussian", epochs=1,
                      dequantize="off")
    assert torch.all(off.model.shift == 0) and torch.all(off.model.scale == 255)
    deq = train_quiet(tmp_path, "deq", data=str(tiny_images), likelihood="gaussian", epochs=1)
    assert deq.config.data.dequantize == "on" and torch.all(deq.model.scale == 256)
    assert on.config.data.standardize == "on" and float(on.model.shift.max()) > 0
    # the 3x3 squares start in rows/columns 0..4: row 7 and column 7 are always 0, and a constant
    # pixel keeps scale 1 (no division by a zero std)
    constant = torch.zeros(8, 8, dtype=torch.bool)
    constant[7, :], constant[:, 7] = True, True
    assert torch.all(on.model.scale[constant.flatten()] == 1)
    assert torch.all(on.model.scale[~constant.flatten()] > 1)  # pixel levels 0..255


# --- early stopping and best.pt: the validation objective with the target beta --------------
def scripted_validation(monkeypatch, ds, script):
    """Make the loop's validation pass report script[e] = (E log p(x|z), KL) in epoch e + 1, and
    keep a copy of the weights it was given; returns those copies."""
    loop = importlib.import_module("vaekit.train")  # the module (vaekit.train is the function)
    real, weights = loop.evaluate, []

    def evaluate(model, x, *args, **kwargs):
        out = real(model, x, *args, **kwargs)
        if x is ds.x_val:
            rec, kl = script[len(weights)]
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            out.update(reconstruction=rec, kl=kl, elbo=rec - kl, rate=kl, distortion=-rec)
        return out

    monkeypatch.setattr(loop, "evaluate", evaluate)
    return weights


def test_best_checkpoint_maximizes_the_target_beta_objective_not_beta_1_nor_the_warmup_beta(
        monkeypatch, tmp_path):
    # epoch: (rec, kl)   rec - 4 kl (target)   rec - kl (beta 1)   rec - beta_e kl (0, 2, 4)
    # 1:     (-50, 20)   -130                  -70                 -50   <- warm-up's beta
    # 2:     (-60, 5)    -80                   -65  <- beta 1      -70
    # 3:     (-75, 1)    -79  <- target        -76                 -79
    cfg = quick_config(beta=4.0, kl_warmup=2, epochs=3)
    ds, cfg = load_dataset(cfg)
    weights = scripted_validation(monkeypatch, ds, [(-50.0, 20.0), (-60.0, 5.0), (-75.0, 1.0)])
    run = vaekit.train(cfg, out=tmp_path / "r", quiet=True, hooks=[], dataset=ds)
    assert [r["beta"] for r in run.metrics] == [0.0, 2.0, 4.0]
    assert run.summary["best_epoch"] == 3
    best = load_torch(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 3 and same_weights(best["model"], weights[2], atol=0)


def test_early_stopping_counts_epochs_without_a_better_target_beta_objective(monkeypatch, tmp_path):
    # rec - 4 kl: -130, -80, -87, -92, -95: no better score after epoch 2; rec - kl keeps rising
    script = [(-50.0, 20.0), (-60.0, 5.0), (-55.0, 8.0), (-52.0, 10.0), (-51.0, 11.0)]
    cfg = quick_config(beta=4.0, epochs=5, patience=2)
    ds, cfg = load_dataset(cfg)
    weights = scripted_validation(monkeypatch, ds, script)
    run = vaekit.train(cfg, out=tmp_path / "r", quiet=True, hooks=[], dataset=ds)
    assert run.summary["epochs"] == 4 and run.summary["stop"]  # epochs 3 and 4 were not better
    assert run.summary["best_epoch"] == 2
    best = load_torch(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 2 and same_weights(best["model"], weights[1], atol=0)
    assert not same_weights(best["model"], weights[3], atol=1e-6)
    # the test figures in summary.json are of those weights
    assert run.summary["test"]["kl"] == pytest.approx(
        vaekit.evaluate(vaekit.load(tmp_path / "r").model, ds.x_test)["kl"], rel=1e-5)
