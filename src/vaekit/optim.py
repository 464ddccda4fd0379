"""What the optimizer does beyond the loss: Adam, the learning-rate schedules (a registry, looked up
by --lr-schedule) and Polyak averaging of the weights (--polyak).

A schedule is a pure function of the 0-based epoch, so a resumed run sets the same rate as an
uninterrupted one without saving anything; the average is saved in last.pt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel

BURDA_STAGES = 8  # Burda et al. (2015): stage i = 0..7 lasts 3^i epochs (3,280 in all)


@dataclass(frozen=True)
class Schedule:
    """rate(epoch, t) -> the learning rate of 0-based `epoch` under TrainConfig t."""

    rate: Callable[[int, object], float]
    about: str


def constant(epoch: int, t) -> float:
    return t.lr


def cosine(epoch: int, t) -> float:
    """Half a cosine from --lr (epoch 0) to --lr-min (epoch --epochs, one past the last):
    torch's CosineAnnealingLR with T_max = --epochs, per epoch."""
    return t.lr_min + (t.lr - t.lr_min) * (1 + math.cos(math.pi * min(epoch, t.epochs) / t.epochs)) / 2


def burda_stage(epoch: int) -> int:
    """The stage i of a 0-based epoch: epochs sum_{j<i} 3^j .. sum_{j<=i} 3^j - 1 (i capped at 7)."""
    i, end = 0, 1
    while epoch >= end and i < BURDA_STAGES - 1:
        i += 1
        end += 3 ** i
    return i


def burda(epoch: int, t) -> float:
    """Burda et al. (2015): --lr * 10^(-i/7) in stage i, which lasts 3^i epochs (i = 0..7); after
    3,280 epochs the last rate, --lr / 10, stays."""
    return t.lr * 10 ** (-burda_stage(epoch) / 7)


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(constant, "--lr throughout"),
    "cosine": Schedule(cosine, "half a cosine per epoch from --lr to --lr-min over --epochs"),
    "burda": Schedule(burda, "Burda et al. 2015: --lr * 10^(-i/7) for 3^i epochs, i = 0..7 "
                      "(3,280 epochs), then --lr / 10"),
}


def lr_at(epoch: int, t) -> float:
    return SCHEDULES[t.lr_schedule].rate(epoch, t)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one op for all parameters) where this torch has it for the device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def warm_decay(decay: float, n: int) -> float:
    """The decay of the update after n averaged steps: min(decay, (1 + n) / (10 + n)), the warm-up of
    TensorFlow's ExponentialMovingAverage(num_updates), so the first steps' weights (an untrained
    model) fade fast: with 0.999 and no warm-up they would still weigh 0.58 after 540 steps."""
    return min(decay, (1 + n) / (10 + n))


def ema_fn(decay: float) -> Callable:
    """AveragedModel's multi_avg_fn: avg <- d avg + (1 - d) w with d = warm_decay(decay, n)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        torch._foreach_lerp_(averaged, current, 1 - warm_decay(decay, int(n)))

    return update


def make_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """Polyak averaging as an exponential moving average of the weights (and the buffers, so the
    averaged model is whole; all are floating point) after every step, from the first step's
    weights: avg <- d avg + (1 - d) w, d = `warm_decay`. None when decay is 0 (off). Call after
    the model's weights and buffers are set and it is on its device."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=ema_fn(decay), use_buffers=True)
