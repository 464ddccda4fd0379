"""Out-of-distribution statistics that correct likelihood's known failure (a model of complex
images gives simpler images it never saw a *higher* likelihood; Nalisnick et al. 2019).

The math, on tensors and arrays; the `vaekit score --method` entries that use it are in anomaly.py.
- `png_nats`: the lossless code length of 8-bit images under PNG (Pillow, maximum compression), in
  nats: the input-complexity term of Serrà et al. (2020), "Input complexity and out-of-distribution
  detection with likelihood-based generative models".
- `perturb`: the input perturbation of Ren et al. (2019), "Likelihood ratios for out-of-distribution
  detection": each value replaced, with probability `rate`, by a uniform draw over its range; a
  background model trained on perturbed inputs learns the population-level statistics only.
- `typicality`: the statistic of Nalisnick et al. (2019), "Detecting out-of-distribution inputs to
  deep generative models using typicality": |mean NLL of a group of M examples - H|, with H the
  entropy estimate (the mean NLL of in-distribution held-out data); `bootstrap_threshold` its cut.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import Tensor

from .errors import VaekitError

LEVELS = 256
GRID_TOLERANCE = 1e-3  # in levels: float32 k/255 * 255 is within 3e-5 of k


def as_levels(images: Tensor | np.ndarray, dequantized: bool = False) -> np.ndarray:
    """Data-space images (N, C, H, W) of 8-bit levels -> uint8; dequantized: levels k + u, u in
    [0, 1), floored. One line when the values are not 8-bit levels."""
    x = np.asarray(images.detach().cpu() if isinstance(images, Tensor) else images, np.float64)
    k = np.floor(x) if dequantized else np.round(x)
    if x.size and (k.min() < 0 or k.max() > LEVELS - 1
                   or (not dequantized and np.abs(x - k).max() > GRID_TOLERANCE)):
        raise VaekitError("the complexity score needs 8-bit images (integer levels 0..255, e.g. "
                          "uint8 pixels); this data has other values: choose another --method")
    return k.astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """One (C, H, W) uint8 image as PNG at maximum compression: grey for C = 1, RGB for C = 3, other
    channel counts as a grey image of the channels stacked vertically (C * H, W)."""
    from PIL import Image

    c = image.shape[0]
    pixels = image.transpose(1, 2, 0) if c == 3 else image.reshape(c * image.shape[1], -1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=9,
                                                       optimize=True)
    return buf.getvalue()


def png_nats(levels: np.ndarray) -> Tensor:
    """(N,) code length in nats of each uint8 image (N, C, H, W) as a whole PNG file (headers
    included: a constant for images of one shape): 8 ln 2 nats per byte."""
    return torch.tensor([8 * math.log(2) * len(png_bytes(img)) for img in levels],
                        dtype=torch.float64)


def perturb(x: np.ndarray, rate: float = 0.2, seed: int = 0, low: float = 0,
            high: float = LEVELS - 1) -> np.ndarray:
    """Ren et al. (2019)'s background data: a copy of x (any shape) with each value replaced, with
    probability `rate`, by a uniform draw from low..high (integers for integer x, e.g. uint8 pixels;
    uniform reals otherwise)."""
    if not 0 <= rate <= 1:
        raise VaekitError(f"the perturbation rate must be in [0, 1], got {rate:g}")
    rng = np.random.default_rng(seed)
    x = np.array(x, copy=True)
    hit = rng.random(x.shape) < rate
    if np.issubdtype(x.dtype, np.integer):
        x[hit] = rng.integers(int(low), int(high) + 1, size=int(hit.sum()))
    else:
        x[hit] = rng.uniform(low, high, size=int(hit.sum()))
    return x


def typicality(nll: Tensor, entropy: float, group: int) -> Tensor:
    """(N,) |mean NLL of the group - entropy| for consecutive groups of `group` examples, each
    example given its group's value (the last group may be smaller)."""
    if group < 1:
        raise VaekitError(f"the typicality group size (--group) must be >= 1, got {group}")
    n = len(nll)
    ids = torch.arange(n) // group  # (N,) group of each example
    sums = torch.zeros(int(ids[-1]) + 1 if n else 0, dtype=nll.dtype).index_add_(0, ids, nll)
    means = sums / torch.bincount(ids).to(nll.dtype)
    return (means - entropy).abs()[ids]


def bootstrap_threshold(reference_nll: Tensor, entropy: float, group: int, rate: float,
                        draws: int = 1000, seed: int = 0) -> float:
    """The (1 - rate) quantile of the typicality statistic over `draws` groups of `group` examples
    drawn with replacement from in-distribution NLLs (Nalisnick et al. 2019's bootstrap)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(reference_nll), (draws, group), generator=g)
    stats = (reference_nll.double()[idx].mean(1) - entropy).abs()
    return float(torch.quantile(stats, 1 - rate))
