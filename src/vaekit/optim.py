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


def make_optimizer(model: torch.nn.Module, lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, or AdamW (Loshchilov & Hutter 2019: the decay decoupled from the adaptive step) when
    weight_decay > 0; the fused kernel (one op for all parameters) where this torch has it for the
    device. Their states have the same layout, so a checkpoint resumes under either."""
    kind, extra = ((torch.optim.AdamW, {"weight_decay": weight_decay}) if weight_decay > 0
                   else (torch.optim.Adam, {}))
    try:
        return kind(model.parameters(), lr=lr, fused=True, **extra)
    except (RuntimeError, TypeError):
        return kind(model.parameters(), lr=lr, **extra)


def warm_decay(decay: float, n: int) -> float:
    """The decay of the update after n averaged steps: min(decay, (1 + n) / (10 + n)), the warm-up of
    TensorFlow's ExponentialMovingAverage(num_updates), so the first steps' weights (an untrained
    model) fade fast: with 0.999 and no warm-up they would still weigh 0.58 after 540 steps."""
    return min(decay, (1 + n) / (10 + n))


class MovingAverage(AveragedModel):
    """torch's AveragedModel (its copy of the model, state_dict and `n_averaged`) with the update
    avg <- d avg + (1 - d) w, d = `warm_decay(decay, n)`, taken the cheap way after every step: the
    tensor lists are gathered once, not walked through named_modules each step (18% of a step of
    the 784-200-200-50 MLP at minibatch 20), and n is counted on the host, so a step never waits
    for the device to read `n_averaged` back. The same foreach lerp as AveragedModel's multi_avg_fn,
    so the same numbers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self._lists: tuple | None = None  # (averaged floats, current floats, integer pairs, id)
        self._count: int | None = None  # n_averaged on the host; None: read it at the next step

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        if self._lists is None or self._lists[3] != id(model):
            pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                             [*model.parameters(), *model.buffers()], strict=True))
            floats = [(a, w) for a, w in pairs if a.is_floating_point()]
            self._lists = ([a for a, _ in floats], [w for _, w in floats],
                           [(a, w) for a, w in pairs if not a.is_floating_point()], id(model))
        averaged, current, counts, _ = self._lists
        if self._count is None:
            self._count = int(self.n_averaged)
        if self._count == 0:  # the first step's weights
            for a, w in zip(averaged, current, strict=True):
                a.copy_(w)
        else:
            torch._foreach_lerp_(averaged, current, 1 - warm_decay(self.decay, self._count))
        for a, w in counts:  # integer buffers (a step count) are copied, not averaged
            a.copy_(w)
        self._count += 1
        self.n_averaged += 1

    def load_state_dict(self, *args, **kwargs):
        out = super().load_state_dict(*args, **kwargs)
        self._count = None
        return out


def make_average(model: torch.nn.Module, decay: float) -> MovingAverage | None:
    """Polyak averaging as an exponential moving average of the weights (and the buffers, so the
    averaged model is whole; all are floating point) after every step, from the first step's
    weights: avg <- d avg + (1 - d) w, d = `warm_decay`. None when decay is 0 (off). Call after
    the model's weights and buffers are set and it is on its device."""
    if decay == 0:
        return None
    return MovingAverage(model, decay)
