"""Anomaly scores of a trained model: per example, higher = more anomalous, in nats.

Every score is `fn(model, x, samples, seed, batch_size, common, ref) -> (N,)` over model-space x,
looked up by name in SCORES; `ref` (a `Reference`) carries what the out-of-distribution scores need
besides the model (a background run, in-distribution validation data; NEEDS says which).

The Monte Carlo scores draw z_s = mu + sigma * eps_s, s = 1..S, with each example's eps from its own
generator, seeded by the seed and the example's bytes: a score depends only on the model, the
example and the seed (not on the batch size, the order or the other examples), and draws are
independent across examples, so a score's mean over a data set estimates its expectation without a
shared offset (the `elbo` score's mean is -ELBO within its standard error, whatever the seed).
Identical examples get identical draws. common=True shares one set of S draws among all examples
instead (common random numbers): less noise in the differences between examples, for ranking, but
every score then carries the same seed-dependent offset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import ood
from .distributions import kl_terms
from .errors import VaekitError
from .evaluate import batches
from .latent import label_mask

Score = Callable[..., Tensor]
MAX_ROWS = 50_000  # draws x examples decoded in one pass (S * B): memory ~ this x layer widths
MAX_VALUES = 1 << 20  # examples x features read in one batch (4 MiB as float32), whatever D


def shared_noise(model, samples: int, seed: int) -> Tensor:
    """(S, 1, L) standard-normal draws, one set shared by all examples (common random numbers)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(samples, 1, model.latent_dim, generator=g).to(model.device)


def example_seed(row: np.ndarray, seed: int) -> int:
    """A 63-bit generator seed from the seed and an example's bytes."""
    h = hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8,
                        key=(int(seed) % 2**64).to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little") >> 1


def example_noise(model, xb: Tensor, samples: int, seed: int) -> Tensor:
    """(S, B, L) standard-normal draws, example b's from a generator seeded by example_seed."""
    rows = xb.detach().cpu().reshape(len(xb), -1).numpy()
    eps = torch.empty(samples, len(xb), model.latent_dim)
    for b, row in enumerate(rows):
        g = torch.Generator().manual_seed(example_seed(row, seed))
        eps[:, b] = torch.randn(samples, model.latent_dim, generator=g)
    return eps.to(model.device)


@dataclass
class Reference:
    """What the out-of-distribution scores need besides the model and the examples."""

    background: Any = None  # likelihood-ratio: a VAE of the same data shape (see ood.perturb)
    validation: Tensor | None = None  # typicality: in-distribution held-out examples, model space
    group: int = 1  # typicality: examples per group (consecutive, in input order)


@dataclass
class Draws:
    """What the scores are made of, for S draws of z per example of a batch of B."""

    log_px_z: Tensor  # (S, B) log p(x|z_s), nats of the data as given (log-Jacobian included)
    kl: Tensor  # (B,) KL(q(z|x) || p(z)): closed form where one exists, else from the draws
    log_w: Tensor | None  # (S, B) log p(x, z_s) - log q(z_s|x) (None for the autoencoder)


def draws(model, xb: Tensor, eps: Tensor) -> Draws:
    """z_s = the posterior's reparameterization of eps (S, B or 1, L): (S, B, L); a point mass
    (the autoencoder) gives its code once."""
    q, prior = model.encode(xb), model.prior.dist()
    z = q.from_noise(eps.to(q.mean.dtype))
    log_px_z = model.log_px_z(xb, z)
    kl = kl_terms(q, prior, z).total
    if not model.stochastic:
        return Draws(log_px_z, kl, None)
    return Draws(log_px_z, kl, log_px_z + prior.log_prob(z) - q.log_prob(z))


@torch.no_grad()
def per_batch(model, x: Tensor, samples: int, seed: int, batch_size: int,
              reduce: Callable[[Draws], Tensor], common: bool = False) -> Tensor:
    """reduce(Draws) -> (B,), over x in batches of at most batch_size, MAX_ROWS // samples and
    MAX_VALUES // D examples (the scores do not depend on it): (N,) on the CPU."""
    was_training = model.training
    model.eval()
    batch_size = rows_per_batch(model, min(batch_size, MAX_ROWS // samples))
    shared = shared_noise(model, samples, seed) if common else None

    def one(xb: Tensor) -> Tensor:
        xb = xb.to(dtype=model.shift.dtype)  # float32, or float64 for a model made .double()
        eps = shared if common else example_noise(model, xb, samples, seed)
        return reduce(draws(model, xb.to(model.device).reshape(len(xb), -1), eps))

    out = over_batches(x, batch_size, one)
    model.train(was_training)
    return out


def rows_per_batch(model, batch_size: int) -> int:
    """batch_size, at most MAX_VALUES // D and at least 1: a batch read from a file (and its
    copies on the way to model space) stays a few MiB, whatever the example size."""
    return max(1, min(batch_size, MAX_VALUES // model.dim))


def over_batches(x, batch_size: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """fn over contiguous slices x[i:i + batch_size] (x: a tensor, `streams.FileRows` or `Mapped`,
    never read or converted whole), concatenated on the CPU: (N, ...)."""
    out = [fn(xb).cpu() for xb in batches(x, batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


class Mapped:
    """x seen through fn, slice by slice (e.g. one model's space into another's): a lazy view."""

    def __init__(self, x, fn: Callable[[Tensor], Tensor]):
        self.x, self.fn = x, fn

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: slice) -> Tensor:
        return self.fn(self.x[key])


def kl_score(model, x: Tensor, samples: int = 1, seed: int = 0, batch_size: int = 1000,
             common: bool = False, ref: Reference | None = None) -> Tensor:
    """KL(q(z|x) || p(z)): how far the encoding is from the prior (closed form where one exists;
    for a mixture prior or an iaf posterior, a one-draw estimate per example)."""
    return per_batch(model, x, 1, seed, batch_size, lambda d: d.kl, common=True)


def reconstruction_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                         batch_size: int = 1000, common: bool = False,
                         ref: Reference | None = None) -> Tensor:
    """-E_q log p(x|z), averaged over S draws."""
    return per_batch(model, x, samples, seed, batch_size, lambda d: -d.log_px_z.mean(0), common)


def recon_prob_score(model, x: Tensor, samples: int = 16, seed: int = 0,
                     batch_size: int = 1000, common: bool = False,
                     ref: Reference | None = None) -> Tensor:
    """An & Cho (2015) reconstruction probability, as -log (1/S) sum_s p(x|z_s) (logsumexp)."""
    return per_batch(model, x, samples, seed, batch_size,
                     lambda d: math.log(len(d.log_px_z)) - torch.logsumexp(d.log_px_z, 0), common)


def elbo_score(model, x: Tensor, samples: int = 16, seed: int = 0, batch_size: int = 1000,
               common: bool = False, ref: Reference | None = None) -> Tensor:
    """-ELBO = -E_q log p(x|z) + KL(q(z|x) || p(z))."""
    return per_batch(model, x, samples, seed, batch_size, lambda d: d.kl - d.log_px_z.mean(0),
                     common)


def iw_nll_score(model, x: Tensor, samples: int = 100, seed: int = 0, batch_size: int = 100,
                 common: bool = False, ref: Reference | None = None) -> Tensor:
    """-log p(x), importance-sampled with S draws from q(z|x): -(logsumexp_s log w_s - log S)
    (Burda et al. 2015)."""
    if not model.stochastic:
        raise VaekitError("iw-nll needs a VAE's q(z|x); this run is a plain autoencoder: use "
                          "--method reconstruction")
    return per_batch(model, x, samples, seed, batch_size,
                     lambda d: math.log(len(d.log_w)) - torch.logsumexp(d.log_w, 0), common)


# --- out-of-distribution scores (ood.py has the statistics and their references) ---------------
def needed(ref: Reference | None, field: str, method: str, how: str):
    """ref.field, or one line saying how to give it."""
    value = None if ref is None else getattr(ref, field)
    if value is None:
        raise VaekitError(f"--method {method} needs {how}")
    return value


def complexity_score(model, x: Tensor, samples: int = 100, seed: int = 0, batch_size: int = 100,
                     common: bool = False, ref: Reference | None = None) -> Tensor:
    """Serrà et al. (2020): -log p(x) (importance-sampled, iw-nll) minus the PNG code length of x
    (ood.png_nats), both nats of the 8-bit image: how much worse the model codes x than a generic
    compressor. 8-bit image runs only."""
    if not model.image:
        raise VaekitError("--method complexity needs an 8-bit image run (it subtracts a PNG code "
                          "length); this run models tabular data: choose another --method")
    dequantized = model.likelihood.continuous and bool((model.scale == 256).all())  # data.py's (k+u)/256

    def png(xb: Tensor) -> Tensor:  # (B,) nats of the data-space images (B, C, H, W)
        return ood.png_nats(ood.as_levels(model.restore(xb.reshape(len(xb), -1).to(model.shift)),
                                          dequantized))

    nll = iw_nll_score(model, x, samples, seed, batch_size, common)
    return nll.double() - over_batches(x, rows_per_batch(model, batch_size), png).double()


def likelihood_ratio_score(model, x: Tensor, samples: int = 100, seed: int = 0,
                           batch_size: int = 100, common: bool = False,
                           ref: Reference | None = None) -> Tensor:
    """Ren et al. (2019): -log p(x) under the model minus -log p(x) under ref.background (a VAE
    trained on perturbed inputs, ood.perturb), both importance-sampled, nats of the data as given:
    what the model knows about x beyond the background's population-level statistics."""
    bg = needed(ref, "background", "likelihood-ratio", "a background run: --background RUN2 "
                "(vaekit.score: background=), a run trained on the same kind of data with "
                "ood.perturb applied (see docs/anomaly.md)")
    if tuple(bg.input_shape) != tuple(model.input_shape):
        raise VaekitError(f"the background run models examples of shape {tuple(bg.input_shape)} "
                          f"but this run {tuple(model.input_shape)}; train it on the same data shape")
    same = torch.equal(bg.shift.to(model.shift), model.shift) and torch.equal(
        bg.scale.to(model.scale), model.scale)  # same preprocessing (8-bit images): same x, same draws
    x_bg = x if same else Mapped(x, lambda xb: bg.prepare(model.restore(
        xb.reshape(len(xb), -1).to(model.shift))))  # the data as given, in bg's space
    nll = iw_nll_score(model, x, samples, seed, batch_size, common)
    return nll.double() - iw_nll_score(bg, x_bg, samples, seed, batch_size, common).double()


def typicality_score(model, x: Tensor, samples: int = 100, seed: int = 0, batch_size: int = 100,
                     common: bool = False, ref: Reference | None = None) -> Tensor:
    """Nalisnick et al. (2019): |mean -log p(x) of a group of ref.group consecutive examples - H|,
    H the mean -log p(x) of ref.validation (the entropy estimate), nats; each example gets its
    group's value, so a score depends on its group's other examples (not with group 1)."""
    val = needed(ref, "validation", "typicality", "in-distribution validation data (vaekit "
                 "score and vaekit.score of a run use its validation split; for a bare model, pass "
                 "validation=)")
    entropy = float(iw_nll_score(model, val, samples, seed, batch_size, common).double().mean())
    nll = iw_nll_score(model, x, samples, seed, batch_size, common).double()
    return ood.typicality(nll, entropy, 1 if ref is None else ref.group)


SCORES: dict[str, Score] = {
    "kl": kl_score,
    "reconstruction": reconstruction_score,
    "recon-prob": recon_prob_score,
    "elbo": elbo_score,
    "iw-nll": iw_nll_score,
    "complexity": complexity_score,
    "likelihood-ratio": likelihood_ratio_score,
    "typicality": typicality_score,
}
OOD_DEFAULT = "typicality"  # --method ood: the best out-of-distribution score (docs/anomaly.md)
SCORES["ood"] = SCORES[OOD_DEFAULT]
DEFAULT_SAMPLES = {"kl": 1, "reconstruction": 16, "recon-prob": 16, "elbo": 16, "iw-nll": 100,
                   "complexity": 100, "likelihood-ratio": 100, "typicality": 100}
DEFAULT_SAMPLES["ood"] = DEFAULT_SAMPLES[OOD_DEFAULT]
# What a score needs besides the model: a Reference field, or the kind of data (complexity)
NEEDS = {"complexity": "8-bit images", "likelihood-ratio": "background",
         "typicality": "validation"}
NEEDS["ood"] = NEEDS[OOD_DEFAULT]
PER_EXAMPLE = [m for m in SCORES if m not in NEEDS]  # scores of any run from the model alone
DEFAULT_METHOD = "elbo"  # of `vaekit score` and `vaekit.score`


def check_method(method: str) -> None:
    if method not in SCORES:
        raise VaekitError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")


def reference(model, method: str, background: Any = None, group: int = 1,
              validation: Callable[[], Any] | None = None) -> Reference:
    """The Reference `method` needs (NEEDS), checked as `vaekit score` and `vaekit.score` take it:
    background (likelihood-ratio only) a run folder, a `runs.Run` or a VAE; group (typicality
    only) >= 1; validation() reads in-distribution validation data in model space, called only
    when the method needs it."""
    check_method(method)
    need = NEEDS.get(method)
    if group < 1:
        raise VaekitError(f"--group must be >= 1, got {group}")
    if background is not None and need != "background":
        raise VaekitError(f"--background applies to --method likelihood-ratio, not {method}: "
                          "drop it")
    if group != 1 and need != "validation":
        raise VaekitError(f"--group applies to --method typicality (and ood), not {method}: "
                          "drop it")
    if isinstance(background, (str, Path)):
        from .runs import load

        background = load(Path(background), device=str(model.device))
    background = getattr(background, "model", background)  # a Run -> its VAE
    val = validation() if need == "validation" and validation is not None else None
    return Reference(background, val, group)


def score(model, x: Tensor, method: str = DEFAULT_METHOD, samples: int | None = None, seed: int = 0,
          batch_size: int | None = None, common: bool = False,
          ref: Reference | None = None) -> Tensor:
    """Anomaly scores (N,) of model-space x by a SCORES name; higher = more anomalous, on the CPU.

    x: a tensor (N, D), or anything read through len(x) and contiguous slices x[i:j] (a
    `streams.FileRows` of a memory-mapped file): read batch by batch, converted to the model's
    dtype and device one batch at a time, never whole.

    common: the same draws of z for every example (common random numbers; for ranking), instead
    of independent draws per example (see the module's docstring). ref: what the scores in NEEDS
    need (a background run, validation data, the typicality group size)."""
    check_method(method)
    samples = DEFAULT_SAMPLES[method] if samples is None else samples
    if samples < 1:
        raise VaekitError("the number of draws (--samples) must be >= 1")
    if batch_size is None:
        batch_size = MAX_ROWS
    return SCORES[method](model, x, samples=samples, seed=seed, batch_size=batch_size,
                          common=common, ref=ref)


# --- thresholds and metrics -------------------------------------------------------------------
def threshold(reference_scores: Tensor | np.ndarray, rate: float) -> float:
    """The smallest reference (e.g. validation) score with at most a fraction `rate` of the
    reference scores above it. Flag x as an outlier when score(x) > threshold."""
    if not 0 <= rate < 1:
        raise VaekitError(f"--fpr/--contamination must be in [0, 1), got {rate:g}")
    ref = np.asarray(reference_scores, dtype=np.float64)
    return float(np.quantile(ref, 1 - rate, method="higher"))


def anomaly_target(y: np.ndarray, anomaly_label: str | None = None) -> np.ndarray | None:
    """Labels -> 1 for anomalies, 0 for normal: `anomaly_label` (compared as text), or 1 when the
    labels are 0/1 (as numbers, 0.0/1.0 included, or as text). None when the labels do not say
    which examples are anomalies."""
    if anomaly_label is not None:
        return label_mask(y, anomaly_label).astype(np.int64)
    y = np.asarray(y)
    if y.dtype.kind in "biuf":  # numbers: float labels 0.0/1.0 (numpy's and pandas' default) too
        return (y == 1).astype(np.int64) if set(np.unique(y).tolist()) <= {0, 1} else None
    text = np.asarray([str(v) for v in y])
    return (text == "1").astype(np.int64) if set(text.tolist()) <= {"0", "1"} else None


def detection_metrics(scores: Tensor | np.ndarray, target: np.ndarray) -> dict[str, float]:
    """AUROC and average precision of scores for target (1 = anomaly), scikit-learn's metrics."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    if len(set(target.tolist())) < 2:
        raise VaekitError("AUROC needs both normal and anomalous examples in the labels")
    return {"auroc": float(roc_auc_score(target, s)),
            "average_precision": float(average_precision_score(target, s))}
