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
