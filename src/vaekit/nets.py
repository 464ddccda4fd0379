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

from torch import Tensor, nn

from .errors import VaekitError


@dataclass(frozen=True)
class NetOptions:
    """What the backbones read from the model config (each takes what it needs)."""

    hidden: tuple[int, ...] = (400,)  # mlp: hidden widths, encoder order (the decoder reverses them)
    channels: tuple[int, ...] = (32, 64, 128)  # conv: channels per resolution level, finest first
    blocks: int = 1  # conv: residual blocks per level


def mlp_layers(widths: Sequence[int]) -> list[nn.Module]:
    """Linear layers with ReLU between them: widths[0] -> ... -> widths[-1] (no final ReLU)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers[:-1]


class FlatMLP(nn.Sequential):
    """Layers over flattened examples: (..., *in_shape) -> (..., *out_shape), any leading
    dimensions. Its parameters are named as a plain nn.Sequential's, as in vaekit 0.1 checkpoints."""

    def __init__(self, widths: Sequence[int], in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        super().__init__(*mlp_layers(widths))
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
    return FlatMLP([math.prod(in_shape), *opts.hidden, out_features], in_shape, (out_features,))


def mlp_decoder(latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions) -> nn.Module:
    return FlatMLP([latent_dim, *opts.hidden[::-1], math.prod(out_shape)], (latent_dim,), out_shape)


def linear_encoder(in_shape: tuple[int, ...], out_features: int, opts: NetOptions) -> nn.Module:
    """One affine map (a linear decoder makes the Gaussian VAE probabilistic PCA, whose log p(x)
    has a closed form)."""
    return FlatLinear(in_shape, (out_features,))


def linear_decoder(latent_dim: int, out_shape: tuple[int, ...], opts: NetOptions) -> nn.Module:
    return FlatLinear((latent_dim,), out_shape)


@dataclass(frozen=True)
class Backbone:
    encoder: Callable[[tuple[int, ...], int, NetOptions], nn.Module]
    decoder: Callable[[int, tuple[int, ...], NetOptions], nn.Module]
    about: str
    images_only: bool = False


BACKBONES: dict[str, Backbone] = {
    "mlp": Backbone(mlp_encoder, mlp_decoder, "fully connected layers with ReLU (--hidden)"),
    "linear": Backbone(linear_encoder, linear_decoder, "one affine map each way (probabilistic PCA)"),
}


def backbone(name: str, shape: tuple[int, ...]) -> Backbone:
    if name not in BACKBONES:
        raise VaekitError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    entry = BACKBONES[name]
    if entry.images_only and len(shape) != 3:
        raise VaekitError(f"--backbone {name} needs image data (C, H, W); this data has examples "
                          f"of shape {shape}: use --backbone mlp")
    return entry
