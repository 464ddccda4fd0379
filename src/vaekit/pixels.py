"""Likelihoods over the 256 levels of 8-bit data: a mixture of discretized logistics (PixelCNN++,
Salimans et al. 2017; as in VDVAE and NVAE) and a plain 256-way categorical.

Model space holds x = k/255 in [0, 1] (data.py divides uint8 data by 255). Both are probability mass
functions over the levels k = 0..255 of every value, so their log-probabilities are in nats of the
8-bit data and no log-Jacobian is added. Examples are (C, *spatial): (C, H, W) images, or (D,) rows,
read as one channel of D values. Internally the spatial dimensions are flattened to S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import VaekitError
from .likelihoods import Likelihood

LEVELS = 256
HALF_BIN = 1.0 / (LEVELS - 1)  # half a level's width in [-1, 1], where the logistics live
MIN_LOG_SCALE = -7.0  # a floor on log s in [-1, 1] (as PixelCNN++): s >= 9e-4, under a level
START_LOG_SCALE = math.log(0.25)  # params_for_mean: about the spread of natural 8-bit images (sd ~ 60 levels)
GRID_TOLERANCE = 1e-3  # in levels: float32 k/255 * 255 is within 3e-5 of k
CHECK_ROWS = 1024  # check() reads the data in chunks of this many examples


def channels_of(event_shape: tuple[int, ...]) -> tuple[int, int]:
    """(C, S): channels and flattened spatial size; a (D,) row is one channel of D values."""
    if len(event_shape) == 1:
        return 1, event_shape[0]
    return event_shape[0], math.prod(event_shape[1:])


def spatial_of(event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions after the channel: (H, W) of an image, (D,) of a row."""
    return event_shape if len(event_shape) == 1 else event_shape[1:]


def levels_of(x: Tensor) -> Tensor:
    """Model-space x = k/255 -> the integer levels k (as floats), snapped to the grid."""
    return torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1)


def check_8bit(x: Tensor, name: str, likelihood: str) -> None:
    """Model-space data must lie on the grid k/255, k = 0..255: one line otherwise."""
    def on_grid(rows: Tensor) -> bool:
        k = rows * (LEVELS - 1)
        return bool(((k - torch.round(k)).abs() <= GRID_TOLERANCE).all())

    # in chunks of rows: a whole 8-bit dataset as float32 is large, its temporaries need not be
    if float(x.min()) < 0 or float(x.max()) > 1 or not all(map(on_grid, x.split(CHECK_ROWS))):
        raise VaekitError(f"{name} is not 8-bit image data (levels k/255 after scaling, k = 0..255) "
                          f"but --likelihood {likelihood} models the 256 levels of 8-bit data; give "
                          "uint8 images (or choose --likelihood gaussian or bernoulli)")


def log_bin_prob(k: Tensor, centre: Tensor, log_scale: Tensor) -> Tensor:
    """log P(level k) of a logistic (centre, s = exp(log_scale)) in [-1, 1] whose mass on each level
    is its bin [y_k - 1/255, y_k + 1/255], y_k = 2k/255 - 1; the edge levels 0 and 255 take the tails
    down to -inf and up to +inf. Broadcasts; all branches are finite (no NaN gradients)."""
    inv_s = torch.exp(-log_scale)
    t, half = inv_s * (2 * k * HALF_BIN - 1 - centre), inv_s * HALF_BIN  # in units of s
    below, above = F.logsigmoid(t + half), F.logsigmoid(half - t)  # log F(upper), log (1 - F(lower))
    # log(sigmoid(b) - sigmoid(a)) = log sigmoid(b) + log sigmoid(-a) + log(1 - exp(a - b)), exact and
    # stable in both tails; b - a = 2 / (255 s) > 0
    inner = below + above + torch.log(-torch.expm1(-2 * half))
    return torch.where(k <= 0, below, torch.where(k >= LEVELS - 1, above, inner))


def clamped_logistic_mean(centre: Tensor, scale: Tensor) -> Tensor:
    """E[clamp(Y, -1, 1)] for Y logistic(centre, scale): -1 + s (softplus((1+c)/s) - softplus((c-1)/s)),
    the integral of the survival function over [-1, 1]."""
    return -1 + scale * (F.softplus((1 + centre) / scale) - F.softplus((centre - 1) / scale))


class DiscretizedLogistic(Likelihood):
    """Per pixel, a mixture of K logistics over its C channels, discretized to 256 levels.

    Parameters per example: (K * (1 + 2C + T), *spatial), T = C(C-1)/2 coupling coefficients when
    `coupled` (C > 1) else 0, laid out along the first dimension as consecutive blocks
      [0, K)              mixture logits (log-softmax over the K components),
      next C*K            logistic centres in [-1, 1], channel-major (index c*K + k),
      next C*K            log-scales in [-1, 1] units, channel-major, floored at -7,
      next T*K            coupling coefficients a_{cj} before a tanh, pair-major, pairs (c, j), j < c,
                          in the order (1,0), (2,0), (2,1), ...
    Channel c of component k is logistic with centre mu_kc + sum_{j<c} tanh(a_kcj) * y_j, y_j = 2x_j - 1
    the pixel's earlier channels (PixelCNN++'s linear dependence): the channels of a pixel are one
    joint pmf, their product of conditionals, mixed over the components.
    """

    continuous = False

    def __init__(self, event_shape: tuple[int, ...], mixtures: int = 10, coupled: bool = True):
        super().__init__(event_shape)
        if mixtures < 1:
            raise VaekitError(f"--mixtures must be at least 1, got {mixtures}")
        self.k = int(mixtures)
        self.c, self.s = channels_of(self.event_shape)
        self.pairs = [(c, j) for c in range(1, self.c) for j in range(c)] if coupled else []

    def param_shape(self) -> tuple[int, ...]:
        return (self.k * (1 + 2 * self.c + len(self.pairs)), *spatial_of(self.event_shape))

    def unpack(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(..., B, P, *spatial) -> logits (..., B, K, S), centres, log-scales (..., B, C, K, S) and
        coupling coefficients tanh(a) (..., B, T, K, S)."""
        p = params.reshape(*params.shape[:-len(self.param_shape())], -1, self.s)  # (..., B, P, S)
        logits, centres, log_scales, coupling = p.split(
            [self.k, self.c * self.k, self.c * self.k, len(self.pairs) * self.k], dim=-2)
        per_channel = (self.c, self.k)
        return (logits, centres.unflatten(-2, per_channel),
                log_scales.unflatten(-2, per_channel).clamp(min=MIN_LOG_SCALE),
                torch.tanh(coupling.unflatten(-2, (len(self.pairs), self.k))))

    def coupled_centres(self, centres: Tensor, coupling: Tensor, y: Tensor) -> Tensor:
        """Centres (..., B, C, K, S) shifted by the earlier channels' values y (..., B, C, 1, S)."""
        if not self.pairs:
            return centres
        shifts = [torch.zeros_like(centres[..., 0, :, :]) for _ in range(self.c)]
        for t, (c, j) in enumerate(self.pairs):
            shifts[c] = shifts[c] + coupling[..., t, :, :] * y[..., j, :, :]
        return centres + torch.stack(shifts, dim=-3)

    def channel_log_probs(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """log mixture weights (..., B, K, S) and each channel's conditional log-pmf given the pixel's
        earlier channels and the component, (..., B, C, K, S), at x (B, *event_shape)."""
        logits, centres, log_scales, coupling = self.unpack(params)
        k = levels_of(x.to(params.dtype)).reshape(x.shape[0], self.c, 1, self.s)  # (B, C, 1, S)
        centres = self.coupled_centres(centres, coupling, 2 * k * HALF_BIN - 1)
        return F.log_softmax(logits, dim=-2), log_bin_prob(k, centres, log_scales)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        log_w, per_channel = self.channel_log_probs(x, params)
        per_pixel = torch.logsumexp(log_w + per_channel.sum(-3), dim=-2)  # (..., B, S)
        return per_pixel.sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        """The mixture's mean in [0, 1], per channel E[clamp(Y)] of each logistic (within half a
        level of the discretized mean), earlier channels entering the coupling at their means."""
        logits, centres, log_scales, coupling = self.unpack(params)
        w = torch.softmax(logits, dim=-2)  # (..., B, K, S)
        means: list[Tensor] = []  # per channel (..., B, S), in [-1, 1]
        for c in range(self.c):
            centre = centres[..., c, :, :]
            for t, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    centre = centre + coupling[..., t, :, :] * means[j].unsqueeze(-2)
            component = clamped_logistic_mean(centre, log_scales[..., c, :, :].exp())
            means.append((w * component).sum(-2))
        y = torch.stack(means, dim=-2)  # (..., B, C, S)
        return ((y + 1) / 2).reshape(*y.shape[:-2], *self.event_shape)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of the levels k/255: a component per pixel, then channel by channel a logistic draw
        binned to its level (edges take the tails), later channels centred on the drawn levels."""
        logits, centres, log_scales, coupling = self.unpack(params)
        w = torch.softmax(logits, dim=-2).movedim(-2, -1)  # (..., B, S, K)
        pick = torch.multinomial(w.reshape(-1, self.k), 1, generator=generator)
        pick = pick.reshape(*w.shape[:-1], 1).movedim(-1, -2)  # (..., B, 1, S)
        levels: list[Tensor] = []  # per channel (..., B, S)
        for c in range(self.c):
            centre = centres[..., c, :, :].gather(-2, pick).squeeze(-2)
            log_scale = log_scales[..., c, :, :].gather(-2, pick).squeeze(-2)
            for t, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    a = coupling[..., t, :, :].gather(-2, pick).squeeze(-2)
                    centre = centre + a * (2 * levels[j] * HALF_BIN - 1)
            u = torch.rand(centre.shape, generator=generator, dtype=centre.dtype, device=centre.device)
            u = u.clamp(1e-7, 1 - 1e-7)
            y = centre + log_scale.exp() * (torch.log(u) - torch.log1p(-u))
            levels.append(levels_of((y + 1) / 2))  # nearest level's bin; clamping: the tails
        k = torch.stack(levels, dim=-2)  # (..., B, C, S)
        return (k / (LEVELS - 1)).reshape(*k.shape[:-2], *self.event_shape)

    def params_for_mean(self, mean: Tensor) -> Tensor:
        """Every component alike (equal weights, no coupling, s = 0.25 in [-1, 1] units: about the
        spread of natural 8-bit images), its centre found by bisection so that the pmf's mean is
        the data mean m (the edge bins pull a centred wide logistic's mean inwards)."""
        m = mean.reshape(self.c, self.s)
        lo, hi = torch.full_like(m, -3.0), torch.full_like(m, 3.0)
        for _ in range(40):  # the mean grows with the centre: halve the bracket 40 times
            mid = (lo + hi) / 2
            below = self.mean(self.centred(mid)[None])[0].reshape(self.c, self.s) < m
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return self.centred((lo + hi) / 2)

    def centred(self, centre: Tensor) -> Tensor:
        """Parameters (param_shape) of K equal components at `centre` (C, S), scale START."""
        centre = centre.reshape(self.c, 1, self.s).expand(self.c, self.k, self.s)
        parts = [torch.zeros(self.k, self.s), centre.reshape(-1, self.s),
                 torch.full((self.c * self.k, self.s), START_LOG_SCALE),
                 torch.zeros(len(self.pairs) * self.k, self.s)]
        return torch.cat([p.to(centre) for p in parts]).reshape(self.param_shape())

    def check(self, x: Tensor, name: str) -> None:
        check_8bit(x, name, "discretized-logistic")


class Categorical256(Likelihood):
    """Each value a free categorical over its 256 levels: parameters (256 * C, *spatial), the logits
    of channel c in block [256c, 256(c+1)). No order between levels is assumed (unlike the logistic)."""

    continuous = False

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__(event_shape)
        self.c, self.s = channels_of(self.event_shape)

    def param_shape(self) -> tuple[int, ...]:
        return (LEVELS * self.c, *spatial_of(self.event_shape))

    def log_pmf(self, params: Tensor) -> Tensor:
        """(..., B, P, *spatial) -> log-probabilities of the levels (..., B, C, S, 256)."""
        p = params.reshape(*params.shape[:-len(self.param_shape())], self.c, LEVELS, self.s)
        return F.log_softmax(p, dim=-2).transpose(-1, -2)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        log_pmf = self.log_pmf(params)
        k = levels_of(x.to(params.dtype)).long().reshape(x.shape[0], self.c, self.s, 1)
        k = k.expand(*log_pmf.shape[:-1], 1)
        return log_pmf.gather(-1, k).flatten(-3).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        levels = torch.arange(LEVELS, dtype=params.dtype, device=params.device) / (LEVELS - 1)
        m = (self.log_pmf(params).exp() * levels).sum(-1)  # (..., B, C, S)
        return m.reshape(*m.shape[:-2], *self.event_shape)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = self.log_pmf(params).exp()
        k = torch.multinomial(probs.reshape(-1, LEVELS), 1, generator=generator)
        k = k.reshape(probs.shape[:-1]).to(params.dtype) / (LEVELS - 1)
        return k.reshape(*k.shape[:-2], *self.event_shape)

    def params_for_mean(self, mean: Tensor) -> Tensor:
        """Logits of a discretized Gaussian bump (sd 0.05) at the data mean: its mean is close to it."""
        levels = torch.arange(LEVELS, dtype=mean.dtype, device=mean.device) / (LEVELS - 1)
        m = mean.reshape(self.c, 1, self.s)
        logits = -0.5 * ((levels.reshape(1, LEVELS, 1) - m) / 0.05).square()  # (C, 256, S)
        return logits.reshape(self.param_shape())

    def check(self, x: Tensor, name: str) -> None:
        check_8bit(x, name, "categorical")
