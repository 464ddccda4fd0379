"""Plain verbs for a trained run: data in as you have it, numpy arrays out, in the data's units.

`run.model`'s own verbs work in model space (after the run's scaling or standardization) on
tensors that may carry gradients; these wrap them for use from a script or a notebook:

    run = vaekit.load("runs/demo")
    codes = vaekit.encode(run, images)        # (N, L) posterior means, numpy
    again = vaekit.decode(run, codes)         # (N, *shape) decoder means, in the data's units
    new = vaekit.sample(run, 16, seed=0)      # (16, *shape), in the data's units
    nats = vaekit.elbo(run, images)           # (N,) ELBO per example, nats

`data` is always the data as the run was trained on it (grey levels 0..16 for digits, 0..255 for
MNIST, the table's own columns), shaped (N, *example shape) or (N, D). Log-likelihoods are in nats
of that data for continuous likelihoods (the Jacobian of the run's scaling included); a Bernoulli's
are those of a pmf of binary values, not a likelihood of grey levels (see docs/evaluation.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import anomaly, latent
from .data import load_for_model
from .errors import VaekitError
from .evaluate import elbo_per_example
from .evaluate import log_likelihood as iw_log_likelihood
from .model import VAE
from .runs import Run


def model_of(run: Run | VAE) -> VAE:
    return run.model if isinstance(run, Run) else run


def to_model_space(model: VAE, data: Any, check: bool = False) -> torch.Tensor:
    """Data as given (N, *shape) or (N, D) -> model space (N, D) on the model's device."""
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim < 2 or arr[0].size != model.dim:
        raise VaekitError(f"data of shape {arr.shape} does not fit this model: it takes examples of "
                          f"shape {model.input_shape} (or {model.dim} values each), one per row")
    x = model.prepare(arr.astype(np.float32))
    if check:
        model.likelihood.check(x, "the data")
    return x


def encode(run: Run | VAE, data: Any, logvar: bool = False):
    """Posterior means (N, L) of the data as given; with logvar=True also the log-variances
    (N, L), or None for a plain autoencoder. numpy float32, no gradients."""
    model = model_of(run)
    q = latent.encode(model, to_model_space(model, data))
    if not logvar:
        return q.mean.numpy()
    return q.mean.numpy(), (latent.log_variance(q).numpy() if model.stochastic else None)


def decode(run: Run | VAE, z: Any) -> np.ndarray:
    """Decoder means of latent codes z (N, L), in the data's units: (N, *example shape)."""
    model = model_of(run)
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise VaekitError(f"codes of shape {tuple(z.shape)} do not fit this model: it takes "
                          f"(N, {model.latent_dim})")
    return model.restore(latent.decode(model, z).to(model.device)).cpu().numpy()


def reconstruct(run: Run | VAE, data: Any) -> np.ndarray:
    """Decoder mean at each example's posterior mean, in the data's units: (N, *example shape)."""
    return decode(run, encode(run, data))


@torch.no_grad()
def sample(run: Run | VAE, n: int, temperature: float = 1.0, seed: int | None = None,
           draw: bool = False) -> np.ndarray:
    """n new examples, z ~ N(0, temperature^2 I) through the decoder (its mean, or a draw from
    p(x|z) with draw=True), in the data's units: (n, *example shape)."""
    model = model_of(run)
    g = None if seed is None else torch.Generator().manual_seed(seed)
    x = model.sample(n, temperature=temperature, draw=draw, generator=g)
    return model.restore(x).cpu().numpy()


def elbo(run: Run | VAE, data: Any, mc_samples: int = 1) -> np.ndarray:
    """ELBO per example (N,) in nats (float64), as `vaekit eval` computes it."""
    model = model_of(run)
    x = to_model_space(model, data, check=True)
    return elbo_per_example(model, x, mc_samples).double().numpy()


def log_likelihood(run: Run | VAE, data: Any, k: int = 1000) -> np.ndarray:
    """Importance-sampled log p(x) per example (N,) with k draws, in nats (float64)."""
    model = model_of(run)
    x = to_model_space(model, data, check=True)
    return iw_log_likelihood(model, x, k).double().numpy()


def score(run: Run | VAE, data: Any, method: str = anomaly.DEFAULT_METHOD,
          samples: int | None = None, seed: int = 0, *, background: Any = None, group: int = 1,
          validation: Any = None, common: bool = False) -> np.ndarray:
    """Anomaly scores (N,) by a `vaekit.anomaly.SCORES` name, nats, higher = more anomalous: the
    scores of `vaekit score` with the same method, samples, seed and options. The
    out-of-distribution ones take what the CLI does: likelihood-ratio a background= run (folder,
    Run or VAE); typicality (and ood) the run's validation split, or validation= data as given
    (needed for a bare VAE), and group= consecutive examples scored together."""
    model = model_of(run)

    def val() -> torch.Tensor | None:
        if validation is not None:
            return to_model_space(model, validation, check=True)
        if isinstance(run, Run):
            return load_for_model(model, run.config, None, "val", lazy=True)[0]
        return None

    ref = anomaly.reference(model, method, background, group, val)
    x = to_model_space(model, data, check=True)
    return anomaly.score(model, x, method, samples, seed, common=common,
                         ref=ref).double().cpu().numpy()
