"""Training batches perturbed as for the background model of a likelihood ratio (Ren et al. 2019,
"Likelihood ratios for out-of-distribution detection"): --perturb MU replaces each value of every
training batch, with probability MU, by a uniform draw over the data's range (`ood.perturb`, the
one definition). Validation and test data are never perturbed.

The range is one [min, max] over every value of the training split, in data space (pixels 0..255,
counts as given, table features before standardization); when every training value is an integer
(8-bit pixels, counts) the draws are integers too, as in the paper, else uniform reals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .ood import GRID_TOLERANCE, perturb

CHUNK = 4096  # rows per block when reading the training split's range


@dataclass
class Perturbation:
    rate: float
    seed: int
    shift: Tensor  # (D,) data = model * scale + shift
    scale: Tensor  # (D,)
    low: float  # data-space range of the training split
    high: float
    integer: bool

    @classmethod
    def of(cls, rate: float, seed: int, x_train, shift: Tensor, scale: Tensor) -> Perturbation | None:
        """For a training split (N, D) in model space (a tensor, or a streamed `streams.FileRows`:
        one pass over it); None when rate is 0 (off)."""
        if rate == 0:
            return None
        shift, scale = shift.cpu().double(), scale.cpu().double()
        low, high, integer = math.inf, -math.inf, len(x_train) > 0
        for start in range(0, len(x_train), CHUNK):  # in row blocks: a double copy of MNIST is 340 MB
            data = x_train[start:start + CHUNK].double() * scale + shift  # (chunk, D)
            low, high = min(low, float(data.min())), max(high, float(data.max()))
            integer = integer and bool((data - data.round()).abs().max() <= GRID_TOLERANCE)
        if integer:
            low, high = round(low), round(high)
        return cls(rate, seed, shift, scale, low, high, integer)

    def __call__(self, xb: Tensor, epoch: int, batch: int, rank: int) -> Tensor:
        """xb (B, D) model space, perturbed by draws seeded with (seed, epoch, batch, rank): fresh
        every batch, the same after a resume. Values not replaced keep their exact bits."""
        seed = int(np.random.SeedSequence([self.seed, epoch, batch, rank]).generate_state(1)[0])
        data = xb.detach().cpu().double() * self.scale + self.shift
        given = data.round().long().numpy() if self.integer else data.numpy()
        drawn = perturb(given, self.rate, seed, self.low, self.high)
        changed = torch.from_numpy(drawn != given)
        back = ((torch.from_numpy(drawn).double() - self.shift) / self.scale).to(xb.dtype)
        return torch.where(changed.to(xb.device), back.to(xb.device), xb)
