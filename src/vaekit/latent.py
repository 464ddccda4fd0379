"""Moving in latent space: interpolation, traversals, the 2-D manifold, attribute vectors.

Pure functions over a model: the model owns encode/decode, these only build latent codes and pass
them through `model.decode` (decoder means, model space, example-shaped (N, *input_shape)).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from .distributions import StandardNormal, kl_per_dim
from .errors import VaekitError
from .evaluate import batches


@torch.no_grad()
def encode(model, x: Tensor, batch_size: int = 1000) -> Distribution:
    """q(z|x) of every example of model-space x, in input order, encoded in batches: a posterior
    of batch (N,) on the CPU (`.mean` (N, L), ...)."""
    params = [model.encode(xb.to(model.device, model.shift.dtype)).params.cpu()
              for xb in batches(x, batch_size)]
    return model.posterior(torch.cat(params))


def has_variance(model) -> bool:
    """Whether q(z|x) has a per-dimension variance: the factorized (diagonal-Gaussian) posterior;
    not the point mass, nor the iaf or layered posteriors, whose `logvar` is an encoder output,
    not q's variance (their marginals have no closed form)."""
    return model.stochastic and model.posterior_kind.factorized


def log_variance(q: Distribution) -> Tensor:
    """log Var q(z_u|x) per example and dimension (N, L), or one clear error where q has none."""
    try:
        return q.variance.log()
    except NotImplementedError:
        raise VaekitError(f"this run's posterior ({type(q).__name__}; --model ae is a point mass) "
                          "has no variance: drop --with-logvar") from None


@torch.no_grad()
def decode(model, z: Tensor) -> Tensor:
    """Decoder means of latent codes z (N, L): (N, *input_shape), model space."""
    return model.decode(z.to(model.device, model.shift.dtype)).cpu()


def dims_by_kl(model, x: Tensor) -> list[int]:
    """Latent dimensions ordered by their mean KL(q(z_u|x) || p(z_u)) over x, most informative
    first (where the KL of a dimension is not defined, by the variance of the codes: see
    `kl_ranked`)."""
    return rank_dims(model, encode(model, x))


def kl_ranked(model) -> bool:
    """Whether dimensions are ranked by their KL: it splits over dimensions only for a factorized
    posterior and prior (not for the autoencoder, a mixture prior or a flow posterior)."""
    q = model.posterior(torch.zeros(1, model.posterior_kind.params(model.latent_dim)))
    return model.stochastic and kl_per_dim(q, model.prior.dist_like(q.mean)) is not None


def rank_dims(model, q: Distribution) -> list[int]:
    """`dims_by_kl` from a posterior already at hand (batch (N,))."""
    per_dim = kl_per_dim(q, model.prior.dist_like(q.mean)) if model.stochastic else None
    info = q.mean.var(0) if per_dim is None else per_dim.mean(0)
    return [int(i) for i in torch.argsort(info, descending=True, stable=True)]


def prior_centre(model) -> Tensor:
    """The prior's mean (L,), float32 on the CPU: the default base of traversals."""
    return model.prior.dist().mean.detach().float().cpu()


def prior_values(model, dims: list[int], t: Tensor) -> Tensor:
    """Values mean_d + t * sd_d of each dimension's prior marginal: (len(dims), S); for N(0, I)
    simply t on every row."""
    check_dims(dims, model.latent_dim)
    p = model.prior.dist()
    mean, sd = p.mean.detach().float().cpu(), p.variance.detach().float().cpu().sqrt()
    return mean[dims, None] + sd[dims, None] * t.float()[None, :]


# --- paths between two codes -------------------------------------------------------------------
def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Straight line: (1 - t) z0 + t z1, one row per t: (S, L)."""
    t = t[:, None]
    return (1 - t) * z0 + t * z1


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Great-circle path (Shoemake 1985; White 2016 for VAEs), straight when z0, z1 are parallel."""
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega.sin().abs()) < 1e-6:
        return lerp(z0, z1, t)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


PATHS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {"linear": lerp, "spherical": slerp}


def interpolate(model, z_from: Tensor, z_to: Tensor, steps: int = 10,
                path: str = "linear") -> Tensor:
    """Decode `steps` codes from z_from to z_to, both ends included: (steps, *input_shape)."""
    if path not in PATHS:
        raise VaekitError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")
    if steps < 2:
        raise VaekitError("--steps must be >= 2 (the two ends are included)")
    t = torch.linspace(0, 1, steps)
    return decode(model, PATHS[path](z_from.float().cpu(), z_to.float().cpu(), t))


# --- one dimension at a time -------------------------------------------------------------------
def check_dims(dims: list[int], L: int) -> None:
    bad = [d for d in dims if not 0 <= d < L]
    if bad:
        raise VaekitError(f"latent dimension(s) {bad} out of range: this model has {L} "
                          f"(0..{L - 1})")


def traversal_codes(base_z: Tensor, dims: list[int], values: Tensor) -> Tensor:
    """Copies of base_z (L,) with dimension d set to each value (S,), or to its own row of values
    (len(dims), S): (len(dims) * S, L), d-major."""
    L = base_z.shape[-1]
    check_dims(dims, L)
    values = values.float().expand(len(dims), values.shape[-1])  # (len(dims), S)
    z = base_z.float().cpu().repeat(len(dims), values.shape[-1], 1)  # (len(dims), S, L)
    for row, d in enumerate(dims):
        z[row, :, d] = values[row]
    return z.reshape(-1, L)


def traverse(model, base_z: Tensor, dims: list[int], values: Tensor) -> Tensor:
    """Vary one latent dimension at a time around base_z (L,): for each d in dims, base_z with
    z_d = each of values (S,), decoded: (len(dims) * S, *model.input_shape), model space."""
    return decode(model, traversal_codes(base_z, dims, values))


# --- the prior's grid --------------------------------------------------------------------------
def manifold_codes(latent_dim: int, steps: int, dims: tuple[int, int] = (0, 1),
                   prior: Distribution | None = None) -> Tensor:
    """A steps x steps grid over the prior's quantiles (Kingma & Welling 2014, fig. 4): z_d = the
    quantile at p = (i + 0.5) / steps of the marginal of dimension d (Phi^-1(p) for N(0, I), the
    default), along dims; other dimensions at the prior's mean. Row-major: (S*S, L)."""
    if steps < 1:
        raise VaekitError("--steps must be >= 1")
    if len(set(dims)) != 2 or not all(0 <= d < latent_dim for d in dims):
        raise VaekitError(f"the manifold needs two different latent dimensions in 0..{latent_dim - 1}")
    prior = prior if prior is not None else StandardNormal(latent_dim)
    if not hasattr(prior, "marginal_icdf"):
        raise VaekitError(f"the manifold needs the quantiles of the prior ({type(prior).__name__}), "
                          "which it does not have")
    p = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    q0, q1 = (prior.marginal_icdf(p, d).float() for d in dims)
    rows, cols = torch.meshgrid(q1.flip(0), q0, indexing="ij")  # top row = largest value
    z = prior.mean.detach().float().cpu().repeat(steps * steps, 1)
    z[:, dims[0]] = cols.reshape(-1)
    z[:, dims[1]] = rows.reshape(-1)
    return z


def manifold(model, steps: int = 15, dims: tuple[int, int] = (0, 1)) -> Tensor:
    """Decoded prior-quantile grid: (steps * steps, *input_shape), model space."""
    with torch.no_grad():
        return decode(model, manifold_codes(model.latent_dim, steps, dims, model.prior.dist()))


# --- attribute vectors ------------------------------------------------------------------------
def label_mask(y: np.ndarray, label: str) -> np.ndarray:
    """Examples whose label equals `label` (compared as text, so '3' matches 3)."""
    text = np.asarray([str(v) for v in y])
    mask = text == str(label)
    if not mask.any():
        known = sorted(set(text.tolist()))
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise VaekitError(f"no example has label {label!r}; labels present: {shown}")
    return mask


def attribute_vector(mu: Tensor, y: np.ndarray, toward: str, away: str | None = None) -> Tensor:
    """mean code of label `toward` - mean code of label `away` (default: every other example)."""
    a = label_mask(y, toward)
    b = label_mask(y, away) if away is not None else ~a
    if not b.any():
        raise VaekitError(f"every example has label {toward!r}; name another one with --away")
    return mu[torch.from_numpy(a)].mean(0) - mu[torch.from_numpy(b)].mean(0)


def shift(model, z: Tensor, vector: Tensor, strengths: Tensor) -> Tensor:
    """Decode z (L,) + s * vector for each strength s (S,): (S, *input_shape), model space."""
    return decode(model, z.float().cpu() + strengths.float()[:, None] * vector.float().cpu())
