"""--lr-schedule, --polyak and --perturb: what the optimizer and the objective really see, against
formulas and averages written out here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from conftest import quick_config

import vaekit
from vaekit.config import Config
from vaekit.distributed import Compute
from vaekit.errors import VaekitError
from vaekit.objectives import OBJECTIVES
from vaekit.optim import burda_stage
from vaekit.runs import load_torch

DIGITS_BATCHES = 15  # digits: 1455 training rows, batches of 100


def stepping(monkeypatch):
    """Wrap Compute.step; returns the list of (lr, weights after the step) of every step."""
    real, seen = Compute.step, []

    def step(self, loss, opt):
        real(self, loss, opt)
        seen.append((opt.param_groups[0]["lr"],
                     {k: v.detach().double().clone() for k, v in self.forward.state_dict().items()}))

    monkeypatch.setattr(Compute, "step", step)
    return seen


def per_epoch_lr(seen) -> list[float]:
    rates = [lr for lr, _ in seen]
    epochs = [rates[i:i + DIGITS_BATCHES] for i in range(0, len(rates), DIGITS_BATCHES)]
    assert all(len(set(e)) == 1 for e in epochs)  # one rate through an epoch
    return [e[0] for e in epochs]


def test_burda_stages_are_3_to_the_i_epochs():
    ends = np.cumsum([3 ** i for i in range(8)])  # 1, 4, 13, 40, 121, 364, 1093, 3280
    for epoch in range(3400):
        assert burda_stage(epoch) == min(7, int(np.searchsorted(ends, epoch, side="right")))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "burda"])
def test_the_optimizer_steps_with_the_schedules_rate(tmp_path, monkeypatch, schedule):
    seen = stepping(monkeypatch)
    epochs, lr, lr_min = 14, 0.01, 0.002
    vaekit.train(quick_config(epochs=epochs, lr=lr, lr_min=lr_min, lr_schedule=schedule,
                              threads=1), out=tmp_path / "r", quiet=True, hooks=[])
    expected = {
        "constant": [lr] * epochs,
        "cosine": [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / epochs)) / 2
                   for e in range(epochs)],
        # stage 0: epoch 0; stage 1: epochs 1-3; stage 2: 4-12; stage 3: 13-39
        "burda": [lr * 10 ** (-i / 7) for i in [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]],
    }[schedule]
    assert per_epoch_lr(seen) == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in vaekit.load(tmp_path / "r").metrics] == pytest.approx(expected, rel=1e-12)


def test_weight_decay_is_decoupled_the_first_step_shrinks_each_weight_by_lr_times_decay(
        tmp_path, monkeypatch):
    """AdamW's definition (Loshchilov & Hutter 2019): w <- w (1 - lr wd) - lr * adam_step. The same
    seed gives both runs the same initial weights, batch and gradient, so after the first step the
    decayed run's weights differ from plain Adam's by exactly -lr * wd * w0."""
    lr, wd, after = 0.01, 0.5, {}
    real = Compute.step

    for decay in (0.0, wd):
        first = {}

        def step(self, loss, opt, first=first):
            if not first:
                first["w0"] = {k: v.detach().double().clone()
                               for k, v in self.forward.named_parameters()}
                real(self, loss, opt)
                first["w1"] = {k: v.detach().double().clone()
                               for k, v in self.forward.named_parameters()}
            else:
                real(self, loss, opt)

        monkeypatch.setattr(Compute, "step", step)
        vaekit.train(quick_config(epochs=1, lr=lr, weight_decay=decay, threads=1),
                     out=tmp_path / f"r{decay}", quiet=True, hooks=[])
        after[decay] = first
    w0 = after[0.0]["w0"]
    assert all(torch.equal(w0[k], after[wd]["w0"][k]) for k in w0)  # the same start
    for k in w0:
        torch.testing.assert_close(after[wd]["w1"][k] - after[0.0]["w1"][k], -lr * wd * w0[k],
                                   rtol=1e-4, atol=1e-7)
    assert any(float(w0[k].abs().max()) > 0.1 for k in w0)  # the decay is measurable
    assert vaekit.load(tmp_path / f"r{wd}").config.train.weight_decay == wd


def test_polyak_weights_are_the_moving_average_of_the_steps(tmp_path, monkeypatch):
    seen = stepping(monkeypatch)
    decay = 0.95  # the warm-up's k / (9 + k) passes 0.95 at step 171, in epoch 12: use both
    vaekit.train(quick_config(epochs=14, polyak=decay, threads=1), out=tmp_path / "r", quiet=True,
                 hooks=[])
    assert len(seen) == 14 * DIGITS_BATCHES
    # the first step's weights, then at step k = 2, 3, ...: avg <- d avg + (1 - d) w with the
    # warm-up d = min(decay, k / (9 + k)) (after n = k - 1 averaged steps: (1 + n) / (10 + n))
    average = dict(seen[0][1])
    after_epoch = []
    for i, (_, weights) in enumerate(seen[1:], start=2):
        d = min(decay, i / (9 + i))
        average = {k: d * average[k] + (1 - d) * weights[k] for k in average}
        if i % DIGITS_BATCHES == 0:
            after_epoch.append(average)
    last = load_torch(tmp_path / "r" / "last.pt")
    kept = {k.removeprefix("module."): v for k, v in last["average"].items() if k.startswith("module.")}
    assert int(last["average"]["n_averaged"]) == 14 * DIGITS_BATCHES
    for k, v in after_epoch[-1].items():
        assert torch.allclose(kept[k].double(), v, atol=1e-6, rtol=1e-5), k
    # best.pt (validation, the test figures) holds the average of its epoch, not the raw weights
    best = load_torch(tmp_path / "r" / "best.pt")
    hand = after_epoch[best["epoch"] - 1]
    for k, v in best["model"].items():
        assert torch.allclose(v.double(), hand[k], atol=1e-6, rtol=1e-5), k
    raw = seen[best["epoch"] * DIGITS_BATCHES - 1][1]
    assert max(float((raw[k] - hand[k]).abs().max()) for k in hand) > 1e-3


def batches_seen(monkeypatch):
    real, seen = OBJECTIVES["elbo"], []

    def objective(model, x, beta, cfg):
        seen.append(x.detach().clone())
        return real(model, x, beta, cfg)

    monkeypatch.setitem(OBJECTIVES, "elbo", objective)
    return seen


def test_perturb_replaces_the_given_fraction_by_uniform_levels(tmp_path, monkeypatch):
    """digits: levels 0..16 (model space k/16); a replaced value is a uniform level, so it differs
    from the original with probability 16/17."""
    seen = batches_seen(monkeypatch)
    mu = 0.3
    vaekit.train(quick_config(epochs=2, threads=1), out=tmp_path / "a", quiet=True, hooks=[])
    clean = list(seen)
    seen.clear()
    vaekit.train(quick_config(epochs=2, perturb=mu, threads=1), out=tmp_path / "b", quiet=True,
                 hooks=[])
    assert len(seen) == len(clean) == 2 * DIGITS_BATCHES
    changed = torch.cat([(b != a).flatten() for a, b in zip(clean, seen, strict=True)])
    p, n = mu * 16 / 17, len(changed)
    assert abs(float(changed.double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    levels = torch.cat([b.flatten()[(b != a).flatten()] for a, b in zip(clean, seen, strict=True)]) * 16
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 16
    # a uniform draw over 0..16 given it differs from the original o has mean (136 - o) / 16; every o
    # is hit alike, so over the changed values: the mean of (136 - o) / 16 over all originals
    expected = float((136 - torch.cat(clean).double() * 16).mean()) / 16
    assert abs(float(levels.mean()) - expected) < 4 * 4.9 / math.sqrt(len(levels))
    # fresh per batch: the same batch position in the two epochs has a different pattern
    first, second = (seen[0] != clean[0]), (seen[DIGITS_BATCHES] != clean[DIGITS_BATCHES])
    assert not torch.equal(first, second)


@pytest.mark.parametrize("stream", ["off", "on"])
def test_perturb_of_a_table_draws_reals_over_its_range(tmp_path, monkeypatch, tiny_table, stream):
    seen = batches_seen(monkeypatch)
    run = vaekit.train(quick_config(data=str(tiny_table), epochs=1, perturb=0.5, threads=1,
                                    stream=stream),
                       out=tmp_path / "r", quiet=True, hooks=[])
    raw = np.load(tiny_table)
    data = torch.cat(seen).double() * run.model.scale.double() + run.model.shift.double()
    assert float(data.min()) >= raw.min() - 1e-4 and float(data.max()) <= raw.max() + 1e-4
    assert len(torch.unique(data)) > 0.9 * data.numel()  # reals: no repeated levels


@pytest.mark.parametrize("flat, message", [
    ({"polyak": 1.0}, "--polyak must be in [0, 1)"),
    ({"lr_min": 0.5}, "--lr-min must be in [0, --lr]"),
    ({"perturb": 1.5}, "--perturb must be in [0, 1]"),
    ({"lr_schedule": "step"}, "unknown --lr-schedule 'step'"),
    ({"weight_decay": -0.1}, "--weight-decay must be >= 0"),
])
def test_bad_values_are_one_message(flat, message):
    with pytest.raises(VaekitError, match=re.escape(message)):
        Config.from_flat(flat)


def test_moving_average_equals_torchs_averaged_model_update_across_a_reload():
    """optim.MovingAverage takes its update the cheap way (tensor lists kept, n counted on the
    host); torch's own AveragedModel.update_parameters with the same lerp must give the same
    numbers, bit for bit, also after a load_state_dict (a resume) in the middle."""
    from torch.optim.swa_utils import AveragedModel

    from vaekit.optim import MovingAverage, warm_decay

    def lerp(averaged, current, n):
        torch._foreach_lerp_(averaged, current, 1 - warm_decay(0.99, int(n)))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    model.register_buffer("shift", torch.zeros(3))
    reference = AveragedModel(model, multi_avg_fn=torch.no_grad()(lerp), use_buffers=True)
    average = MovingAverage(model, 0.99)
    for step in range(300):
        with torch.no_grad():
            for p in [*model.parameters(), model.shift]:
                p.add_(torch.randn_like(p))
        reference.update_parameters(model)
        average.update_parameters(model)
        if step == 150:
            saved = {k: v.clone() for k, v in average.state_dict().items()}
            average = MovingAverage(model, 0.99)
            average.load_state_dict(saved)
    want, got = reference.state_dict(), average.state_dict()
    assert int(got["n_averaged"]) == 300 and want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
