"""Backbones: the encoder and decoder networks, built from shapes, looked up by name.

A backbone is a pair of builders:
- encoder(in_shape, out_features, opts): (B, *in_shape) -> (B, out_features), e.g. (B, C, H, W) -> (B, 2L)
- decoder(latent_dim, out_shape, opts): (B, L) -> (B, *out_shape), e.g. (B, L) -> (B, P, H, W)
The model flattens any leading sample dimensions of z before the decoder and restores them after.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import VaekitError


@dataclass(frozen=True)
class NetOptions:
    """What the backbones read from the model config (each takes what it needs)."""

    hidden: tuple[int, ...] = (400,)  # mlp: hidden widths, encoder order (the decoder reverses them)
    channels: tuple[int, ...] = (32, 64, 128)  # conv: channels per resolution level, finest first
    blocks: int = 1  # conv: residual blocks per level
    dropout: float = 0.0  # mlp: dropout after each hidden layer's ReLU (training only)


def mlp_layers(widths: Sequence[int], dropout: float = 0.0) -> list[nn.Module]:
    """Linear layers with ReLU between them: widths[0] -> ... -> widths[-1] (no final ReLU), and
    dropout after each ReLU if `dropout` > 0 (none otherwise: the layer indices of older
    checkpoints)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    return layers[:-2] if dropout > 0 else layers[:-1]


class FlatMLP(nn.Sequential):
    """Layers over flattened examples: (..., *in_shape) -> (..., *out_shape), any leading
    dimensions. Its parameters are named as a plain nn.Sequential's, as in vaekit 0.1 checkpoints."""

    def __init__(self, widths: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 dropout: float = 0.0):
        super().__init__(*mlp_layers(widths, dropout))
        self.in_ndim, self.out_shape = len(in_shape), tuple(out_shape)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:x.dim() - self.in_ndim]
        return super().forward(x.reshape(*lead, -1)).reshape(*lead, *self.out_shape)


class FlatLinear(nn.Linear):
    """One affine map (..., *in_shape) -> (..., *out_shape); named as a plain nn.Linear's."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        super().__init__(math.prod(in_shape), math.prod(out_shape))
        self.in_ndim, self.out_shape = len(in_shape), tuple(out_shape)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:x.dim() - self.in_ndim]
        return super().forward(x.reshape(*lead, -1)).reshape(*lead, *self.out_shape)


def mlp_encoder(in_shape: tuple[int, ...], out_features: int, opts: NetOptions) -> nn.Module:
    return FlatMLP([math.prod(in_shape), *opts.hidden, out_features], in_shape, (out_features,),
                   opts.dropout)


def mlp_decoder(latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions) -> nn.Module:
    return FlatMLP([latent_dim, *opts.hidden[::-1], math.prod(out_shape)], (latent_dim,), out_shape,
                   opts.dropout)


def linear_encoder(in_shape: tuple[int, ...], out_features: int, opts: NetOptions) -> nn.Module:
    """One affine map (a linear decoder makes the Gaussian VAE probabilistic PCA, whose log p(x)
    has a closed form)."""
    return FlatLinear(in_shape, (out_features,))


def linear_decoder(latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions) -> nn.Module:
    return FlatLinear((latent_dim,), out_shape)


# --- conv: residual blocks per resolution level ----------------------------------------------------
SMALLEST = 4  # stop halving once both sides are at most this (28 -> 14 -> 7 -> 4, 32 -> ... -> 4)


def conv_plan(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial sizes [(h, w) at level 0 = the image, level 1, ..., after the last level]: each level
    halves (rounding up, as a stride-2 3x3 conv with padding 1 does) while a side exceeds SMALLEST.
    The encoder walks it down, the decoder walks it up to exactly (height, width)."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2) if max(h, w) > SMALLEST else (h, w))
    return sizes


def he(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """He initialization (normal, fan-in, ReLU gain; SiLU is close) and a zero bias: PyTorch's
    default shrinks the signal by about 3x in variance per layer, which a deep stack without
    normalization turns into a near-constant output at the start (measured on MNIST: after 100
    steps -ELBO 175 with it against 219 with the default)."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


class ResBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))), same channels and size. No normalization: nothing depends
    on the other examples of a batch (per-example ELBOs, any batch size, train = eval); instead the
    residual branch's last conv starts scaled down (by `scale`, as VDVAE does) so that a deep stack
    starts near the identity."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.conv1 = he(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)  # PyTorch's init, scaled down
        with torch.no_grad():
            self.conv2.weight.mul_(scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def resample(c_in: int, c_out: int, size_in: tuple[int, int], size_out: tuple[int, int]) -> nn.Module:
    """Between two levels, pre-activated (SiLU, then the conv): a stride-2 3x3 conv to halve, nearest
    upsampling to exactly size_out and a 3x3 conv to double, a 1x1 conv (or nothing) when the size
    stays and only channels change. The SiLU keeps the net nonlinear with --blocks 0."""
    if size_out == size_in:
        return nn.Identity() if c_in == c_out else nn.Sequential(nn.SiLU(), he(nn.Conv2d(c_in, c_out, 1)))
    if size_out[0] < size_in[0] or size_out[1] < size_in[1]:
        return nn.Sequential(nn.SiLU(), he(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)))
    return nn.Sequential(nn.SiLU(), nn.Upsample(size=size_out, mode="nearest"),
                         he(nn.Conv2d(c_in, c_out, 3, padding=1)))


class ConvEncoder(nn.Module):
    """(..., C, H, W) -> (..., out_features). A 3x3 stem conv to channels[0]; then per level i:
    `blocks` ResBlocks at channels[i], then SiLU and a stride-2 3x3 conv to channels[i+1] (the last
    level keeps its width) that halves the size while a side exceeds SMALLEST (else a 1x1 conv, or
    nothing); then SiLU, flatten and one linear layer from (channels[-1], h, w) to out_features.
    E.g. (3, 32, 32) with channels 32,64,128: 32x32x32 -> 16x16x64 -> 8x8x128 -> 4x4x128 -> F."""

    def __init__(self, in_shape: tuple[int, ...], out_features: int, opts: NetOptions):
        super().__init__()
        c, h, w = in_shape
        chans, self.in_ndim = list(opts.channels), len(in_shape)
        sizes = conv_plan(h, w, len(chans))
        scale = 1 / math.sqrt(max(1, opts.blocks * len(chans)))
        layers: list[nn.Module] = [he(nn.Conv2d(c, chans[0], 3, padding=1))]
        for i, width in enumerate(chans):
            layers += [ResBlock(width, scale) for _ in range(opts.blocks)]
            layers.append(resample(width, chans[min(i + 1, len(chans) - 1)], sizes[i], sizes[i + 1]))
        self.net = nn.Sequential(*layers, nn.SiLU(), nn.Flatten())
        self.out = he(nn.Linear(chans[-1] * math.prod(sizes[-1]), out_features))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:x.dim() - self.in_ndim]
        return self.out(self.net(x.reshape(-1, *x.shape[-self.in_ndim:]))).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """(..., L) -> (..., P, H, W), the encoder mirrored: a linear layer to (channels[-1], h, w) at
    the encoder's smallest size; per level from the coarsest: SiLU, nearest upsampling to exactly
    that level's (h, w) (from conv_plan, so odd sizes come out right) and a 3x3 conv to its width,
    then `blocks` ResBlocks; then SiLU and a 3x3 conv with bias to the P parameters per pixel (its
    bias is the output bias that VAE.init_output_bias sets). No normalization layers, as in the
    encoder (see ResBlock)."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions):
        super().__init__()
        p, h, w = out_shape
        chans = list(opts.channels)
        sizes = conv_plan(h, w, len(chans))
        scale = 1 / math.sqrt(max(1, opts.blocks * len(chans)))
        self.start = (chans[-1], *sizes[-1])
        self.inp = he(nn.Linear(latent_dim, math.prod(self.start)))
        layers: list[nn.Module] = []
        for i in reversed(range(len(chans))):
            layers.append(resample(chans[min(i + 1, len(chans) - 1)], chans[i], sizes[i + 1], sizes[i]))
            layers += [ResBlock(chans[i], scale) for _ in range(opts.blocks)]
        self.net = nn.Sequential(*layers, nn.SiLU(), he(nn.Conv2d(chans[0], p, 3, padding=1)))

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        x = self.net(self.inp(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))  # (N, P, H, W)
        return x.reshape(*lead, *x.shape[1:])


def conv_encoder(in_shape: tuple[int, ...], out_features: int, opts: NetOptions) -> nn.Module:
    return ConvEncoder(tuple(in_shape), out_features, opts)


def conv_decoder(latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions) -> nn.Module:
    return ConvDecoder(latent_dim, tuple(out_shape), opts)


@dataclass(frozen=True)
class Backbone:
    encoder: Callable[[tuple[int, ...], int, NetOptions], nn.Module]
    decoder: Callable[[int, tuple[int, ...], NetOptions], nn.Module]
    about: str
    images_only: bool = False


BACKBONES: dict[str, Backbone] = {
    "mlp": Backbone(mlp_encoder, mlp_decoder, "fully connected layers with ReLU (--hidden)"),
    "linear": Backbone(linear_encoder, linear_decoder, "one affine map each way (probabilistic PCA)"),
    "conv": Backbone(conv_encoder, conv_decoder, "convolutional: residual blocks per resolution "
                     "level, halving the size between levels (--channels, --blocks); images only",
                     images_only=True),
}


CONV_MIN_SIDE = 16  # smaller images (8x8 digits: 64 values) train faster and as well with an MLP


def resolve_backbone(name: str, shape: tuple[int, ...]) -> str:
    """'auto' -> conv for images (C, H, W) of at least CONV_MIN_SIDE pixels a side, else mlp."""
    if name != "auto":
        return name
    return "conv" if len(shape) == 3 and min(shape[1:]) >= CONV_MIN_SIDE else "mlp"


def backbone(name: str, shape: tuple[int, ...]) -> Backbone:
    if name not in BACKBONES:
        raise VaekitError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    entry = BACKBONES[name]
    if entry.images_only and len(shape) != 3:
        raise VaekitError(f"--backbone {name} needs image data (C, H, W); this data has examples "
                          f"of shape {shape}: use --backbone mlp")
    return entry
