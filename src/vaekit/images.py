"""Image grids as PNG files (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .runs import atomic_write


def pictured(n: int, k: int, seed: int) -> torch.Tensor:
    """Indices of the k examples (of n) that a picture shows: a seeded draw without replacement, in
    order. Not the first k: a file sorted by class (CIFAR-10's test split) would show one class."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:min(k, n)].sort().values


def pictured_rows(n: int, most: int, seed: int, ncol: int = 8) -> tuple[torch.Tensor, int]:
    """`pictured` for a grid: at most `most` of the n examples (at least one row) in whole rows of
    ncol (one row of all n when n < ncol), and the number of columns."""
    ncol = max(1, min(ncol, n))
    return pictured(n, ncol * min(max(most // ncol, 1), n // ncol), seed), ncol


def grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) values in [0, 1] -> one uint8 (rows*H, cols*W[, 3]) array, padded with white."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[:, top:top + h, left:left + w] = x[i]
    out = (out * 255).round().astype(np.uint8)
    return out[0] if c == 1 else out[:3].transpose(1, 2, 0)


def save_grid(path: str | Path, images: torch.Tensor, ncol: int | None = None,
              scale: int = 1) -> None:
    """Write images (N, C, H, W) in [0, 1] as a PNG grid, enlarged `scale` times (nearest)."""
    im = Image.fromarray(grid(images, ncol))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    atomic_write(Path(path), lambda f: im.save(f, format="PNG"))
