"""Backbones: networks that map a flat input (B, D_in) to a flat output (B, D_out), by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .errors import VaekitError


def mlp(d_in: int, hidden: Sequence[int], d_out: int) -> nn.Module:
    """Linear layers with ReLU between them: d_in -> hidden... -> d_out."""
    widths = [d_in, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], d_out))
    return nn.Sequential(*layers)


def linear(d_in: int, hidden: Sequence[int], d_out: int) -> nn.Module:
    """One affine map d_in -> d_out; ignores hidden (a linear decoder makes the VAE probabilistic
    PCA, whose log p(x) has a closed form)."""
    return nn.Linear(d_in, d_out)


BACKBONES: dict[str, Callable[[int, Sequence[int], int], nn.Module]] = {"mlp": mlp, "linear": linear}


def build_backbone(name: str, d_in: int, hidden: Sequence[int], d_out: int) -> nn.Module:
    if name not in BACKBONES:
        raise VaekitError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](d_in, hidden, d_out)
