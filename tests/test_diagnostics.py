"""Training diagnostics: collapse / overfitting / undertrained warnings, and divergence handling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import quick_config

from vaekit import Config, VaekitError, train
from vaekit.diagnostics import Diagnostics
from vaekit.hooks import default_hooks
from vaekit.objectives import OBJECTIVES
from vaekit.runs import load_torch


class FakeState:
    def __init__(self):
        self.history, self.lines = [], []

    def log(self, msg):
        self.lines.append(msg)

    warn = log


def row(epoch, train_rec=-50.0, val_rec=-50.0, rate=5.0, active=3, train_elbo=None, val_elbo=None):
    return {"epoch": epoch, "train_reconstruction": train_rec, "val_reconstruction": val_rec,
            "val_rate": rate, "val_active_units": active,
            "train_elbo": train_rec - rate if train_elbo is None else train_elbo,
            "val_elbo": val_rec - rate if val_elbo is None else val_elbo}


def feed(hook, rows):
    state = FakeState()
    for r in rows:
        hook(r, state)
        state.history.append(r)
    return state


def kinds(r):
    return [w["kind"] for w in r.get("warnings", [])]


def test_collapse_warns_after_warmup_only_and_logs_once_per_streak():
    """Collapsed for 3 epochs after warm-up (or at the last epoch): warn, once per streak."""
    rows = [row(e, rate=0.01, active=0) for e in range(1, 8)]
    state = feed(Diagnostics(epochs=100, warmup=2), rows)
    assert [kinds(r) for r in rows] == [[], [], [], [], ["collapse"], ["collapse"], ["collapse"]]
    assert len(state.lines) == 1 and "posterior collapse" in state.lines[0]
    assert all(set(w) == {"kind", "message"} for w in rows[4]["warnings"])
    near_zero = [row(e, rate=0.05, active=2) for e in (1, 2, 3)]  # "active" units, rate ~0
    feed(Diagnostics(epochs=100), near_zero)
    assert [kinds(r) for r in near_zero] == [[], [], ["collapse"]]
    healthy = [row(1), row(2), row(3)]
    feed(Diagnostics(epochs=3), healthy)
    assert all("warnings" not in r for r in healthy)


def test_an_epoch_still_warming_up_by_steps_is_not_counted_for_collapse():
    """--kl-warmup-steps: the epochs whose last step weighs the KL below the target beta are
    warm-up, as the first --kl-warmup epochs are: the collapse streak starts after them."""
    rows = [{**row(e, rate=0.01, active=0), "beta": b}
            for e, b in enumerate([0.2, 0.6, 1.0, 1.0, 1.0], start=1)]
    feed(Diagnostics(epochs=100, beta=1.0), rows)
    assert [kinds(r) for r in rows] == [[], [], [], [], ["collapse"]]
    without = [{k: v for k, v in r.items() if k != "warnings"} for r in rows]
    feed(Diagnostics(epochs=100), without)  # no target given: the rows' beta is not read
    assert [kinds(r) for r in without] == [[], [], ["collapse"], ["collapse"], ["collapse"]]


def test_collapse_in_early_epochs_of_a_healthy_run_is_not_a_warning():
    rows = [row(1, rate=0.05, active=0), row(2, rate=0.3, active=5), row(3, rate=2.0, active=9)]
    feed(Diagnostics(epochs=3), rows)
    assert all("collapse" not in kinds(r) for r in rows)


def test_collapse_at_the_last_epoch_warns_even_in_a_short_run():
    rows = [row(1, rate=0.0, active=0), row(2, rate=0.0, active=0)]
    feed(Diagnostics(epochs=2), rows)
    assert [kinds(r) for r in rows] == [[], ["collapse"]]


def test_no_collapse_warning_for_the_autoencoder():
    r = row(5, rate=0.0, active=0)
    feed(Diagnostics(epochs=100, stochastic=False), [r])
    assert kinds(r) == []


def test_overfitting_needs_a_positive_gap_growing_over_the_window():
    # train reconstruction improves while validation gets worse: the gap grows 2, 3.5, 5, 6.5 nats
    growing = [row(e, train_rec=-50 + e, val_rec=-51 - 0.5 * (e - 1)) for e in range(1, 5)]
    feed(Diagnostics(epochs=100), growing)
    assert [kinds(r) for r in growing] == [[], [], [], ["overfitting"]]
    # early training: a negative gap that shrinks toward 0 is the training average lagging
    lagging = [row(e, train_rec=-60 + 2 * e, val_rec=-55 + e) for e in range(1, 5)]
    feed(Diagnostics(epochs=100), lagging)
    assert all("overfitting" not in kinds(r) for r in lagging)
    # train improving faster than validation, validation still at its best: not overfitting
    both = [row(e, train_rec=-50 + e, val_rec=-51 + 0.5 * e) for e in range(1, 6)]
    feed(Diagnostics(epochs=100), both)
    assert all("overfitting" not in kinds(r) for r in both)
    flat = [row(e, train_rec=-49.0, val_rec=-50.0) for e in range(1, 8)]
    feed(Diagnostics(epochs=100), flat)
    assert all(kinds(r) == [] for r in flat)


def test_undertrained_note_at_the_last_epoch_when_both_still_improve():
    rising = [row(e, train_rec=-60 + e, val_rec=-61 + e) for e in range(1, 6)]
    feed(Diagnostics(epochs=5), rising)
    assert kinds(rising[-1]) == ["undertrained"] and all(kinds(r) == [] for r in rising[:-1])
    plateau = [row(e, train_rec=-60 + e, val_rec=-61 + min(e, 3)) for e in range(1, 6)]
    feed(Diagnostics(epochs=5), plateau)
    assert kinds(plateau[-1]) == []


def test_diagnostics_is_a_default_hook():
    assert any(isinstance(h, Diagnostics) for h in default_hooks(quick_config(), None))


@pytest.mark.parametrize("quiet", [False, True])
def test_huge_beta_run_warns_about_collapse_on_stderr_even_when_quiet(tiny_images, tmp_path, capsys,
                                                                       quiet):
    """--quiet hides the bar and the epoch lines, never a diagnostic (item 16 of issue 8)."""
    run = train(quick_config(data=str(tiny_images), beta=50.0, epochs=3), tmp_path / "r",
                quiet=quiet)
    out, err = capsys.readouterr()
    assert "posterior collapse" in err and "posterior collapse" not in out
    assert ("epoch   1" in out) is not quiet
    assert any("collapse" in kinds(r) for r in run.metrics)


def nan_from_epoch(monkeypatch, epoch, batches_per_epoch=2):
    """The objective's loss becomes NaN from the given epoch on (tiny_images: 2 batches/epoch)."""
    real, calls = OBJECTIVES["elbo"], {"n": 0}

    def objective(model, x, beta, cfg):
        calls["n"] += 1
        loss, terms = real(model, x, beta, cfg)
        return (loss * math.nan if calls["n"] > (epoch - 1) * batches_per_epoch else loss), terms

    monkeypatch.setitem(OBJECTIVES, "elbo", objective)
    return real


def test_nan_divergence_stops_with_the_best_weights_and_says_so(tiny_images, tmp_path,
                                                                 monkeypatch, capsys):
    real = nan_from_epoch(monkeypatch, 3)
    cfg = quick_config(data=str(tiny_images), epochs=5)
    run = train(cfg, tmp_path / "r", quiet=True)
    err = capsys.readouterr().err
    assert "diverged in epoch 3" in err and "best weights (epoch" in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stop"].startswith("diverged in epoch 3") and summary["epochs"] == 2
    assert summary["best_epoch"] == max(run.metrics, key=lambda r: r["val_elbo"])["epoch"]
    assert math.isfinite(summary["test"]["elbo"])
    last = load_torch(tmp_path / "r" / "last.pt")
    assert last["state"]["epoch"] == 2 and len(last["history_jsonl"].splitlines()) == 2
    assert last["state"]["stop_kind"] == "diverged"
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    monkeypatch.setitem(OBJECTIVES, "elbo", real)  # resume: the stop is kept, nothing more trains
    again = train(cfg, tmp_path / "r", resume=True, quiet=True)
    assert [r["epoch"] for r in again.metrics] == [1, 2]
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == summary


def test_divergence_in_epoch_1_is_an_error_naming_no_missing_file_and_the_folder_is_reusable(
        tiny_images, tmp_path, monkeypatch):
    real = nan_from_epoch(monkeypatch, 1)
    cfg = quick_config(data=str(tiny_images), epochs=2)
    with pytest.raises(VaekitError, match="diverged in epoch 1.*no checkpoint") as e:
        train(cfg, tmp_path / "r", quiet=True)
    assert "last.pt" not in str(e.value) and not (tmp_path / "r" / "last.pt").exists()
    monkeypatch.setitem(OBJECTIVES, "elbo", real)
    assert len(train(cfg, tmp_path / "r", quiet=True).metrics) == 2  # same --out, no --resume


def test_a_finite_blow_up_is_caught_as_divergence(tiny_images, tmp_path, monkeypatch, capsys):
    """A loss 1e6 times larger from epoch 3 on (finite: no NaN check sees it): stop, keep the
    best weights of epochs 1-2, say so (item 4)."""
    real, calls = OBJECTIVES["elbo"], {"n": 0}

    def blow_up(model, x, beta, cfg):
        calls["n"] += 1
        loss, terms = real(model, x, beta, cfg)
        return (loss * 1e6 if calls["n"] > 4 else loss), terms  # 2 batches an epoch

    monkeypatch.setitem(OBJECTIVES, "elbo", blow_up)
    run = train(quick_config(data=str(tiny_images), epochs=5), tmp_path / "r", quiet=True)
    assert "diverged in epoch 3" in capsys.readouterr().err
    assert run.summary["stop"].startswith("diverged in epoch 3: the mean training loss")
    assert run.summary["epochs"] == 2 and len(run.metrics) == 2


def test_the_reported_lr_blow_up_on_digits_is_divergence_and_names_no_missing_file(tmp_path):
    """`vaekit train --data digits --lr 0.15 --seed 3`: once a test ELBO of -8.6e26 and exit 0."""
    cfg = Config.from_flat({"data": "digits", "lr": 0.15, "epochs": 20, "seed": 3})
    with pytest.raises(VaekitError, match="diverged in epoch 1.*no checkpoint") as e:
        train(cfg, tmp_path / "r", quiet=True)
    assert ".pt" not in str(e.value)


def test_a_healthy_run_does_not_trigger_the_divergence_rule(tmp_path):
    """The defaults on digits (its first 15 epochs), and a high but stable learning rate."""
    for flat in ({"epochs": 15}, {"epochs": 15, "lr": 0.01, "hidden": [64]}):
        run = train(Config.from_flat({"data": "digits", **flat}), tmp_path / str(len(flat)),
                    quiet=True)
        assert run.summary["stop"] is None and len(run.metrics) == 15


# === Edges of the rules: cases where only the last epoch decides ==============================
def gapped(gaps, val_elbos, val_rec=-50.0):
    """Rows whose train - validation reconstruction gap and validation ELBO are given per epoch."""
    return [row(e, train_rec=val_rec + g, val_rec=val_rec, val_elbo=v)
            for e, (g, v) in enumerate(zip(gaps, val_elbos, strict=True), start=1)]


@pytest.mark.parametrize("last_elbo,warns", [
    (-99.9, False),  # the last epoch sets a new best: validation still improves, no warning
    (-100.0, True),  # the last epoch only equals the best of epoch 1: no new best in the window
])
def test_overfitting_new_best_at_the_last_epoch_decides(last_elbo, warns):
    rows = gapped([1.0, 2.0, 3.0, 4.0], [-100.0, -101.0, -102.0, last_elbo])
    feed(Diagnostics(epochs=100), rows)
    assert [kinds(r) for r in rows[:3]] == [[], [], []]
    assert ("overfitting" in kinds(rows[-1])) == warns


@pytest.mark.parametrize("last_gap,warns", [
    (3.0, False),  # the gap stopped growing at the last epoch
    (3.5, True),
    (1.09, False),  # growth 0.09 nats over the window: under the 0.1 threshold
    (1.11, True),
])
def test_overfitting_last_gap_decides(last_gap, warns):
    gaps = [1.0, 2.0, 3.0] if last_gap >= 3 else [1.0, 1.03, 1.06]
    rows = gapped([*gaps, last_gap], [-100.0, -101.0, -102.0, -103.0])
    feed(Diagnostics(epochs=100), rows)
    assert ("overfitting" in kinds(rows[-1])) == warns


def test_overfitting_needs_window_plus_one_epochs():
    rows = gapped([1.0, 2.0, 3.0], [-100.0, -101.0, -102.0])  # a growing gap over only 2 steps
    feed(Diagnostics(epochs=100), rows)
    assert all(kinds(r) == [] for r in rows)


@pytest.mark.parametrize("last_val,notes", [(-56.0, True), (-57.0, False)])
def test_undertrained_last_epoch_validation_decides(last_val, notes):
    # training rises every epoch; validation rises up to epoch 4, then the last epoch decides
    rows = [row(e, train_rec=-60.0 + e, val_rec=v) for e, v in
            enumerate([-60.0, -59.0, -58.0, -57.0, last_val], start=1)]
    feed(Diagnostics(epochs=5), rows)
    assert ("undertrained" in kinds(rows[-1])) == notes
    assert all(kinds(r) == [] for r in rows[:-1])
