"""Matplotlib figures of a run (Agg backend, no display): each function returns PNG bytes.

Every figure has a title, axis labels with units (nats per example) and a legend where there is
more than one series; `report.py` and `sweep.py` embed them in HTML.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .images import grid  # noqa: E402

WARNING_STYLE = {"collapse": "tab:red", "overfitting": "tab:orange", "undertrained": "tab:purple"}
MAX_LEGEND_CLASSES = 20  # more distinct labels than this: a colour bar instead of a legend


def png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def series(history: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one metric, leaving out epochs where it is missing (None)."""
    pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    return (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float))


def mark_warnings(ax, history: list[dict[str, Any]]) -> None:
    """A dotted vertical line at each epoch a diagnostics warning was raised, one legend entry per kind."""
    seen: set[str] = set()
    for row in history:
        for w in row.get("warnings") or []:
            kind = str(w.get("kind", "warning"))
            ax.axvline(row["epoch"], color=WARNING_STYLE.get(kind, "tab:gray"), ls=":", lw=1.5,
                       label=None if kind in seen else f"warning: {kind}")
            seen.add(kind)


def training_curves(history: list[dict[str, Any]]) -> bytes:
    """ELBO, reconstruction and KL per epoch, train and validation, warnings marked."""
    panels = [("elbo", "ELBO", "nats per example"),
              ("reconstruction", "reconstruction E_q log p(x|z)", "nats per example"),
              ("kl", "KL(q(z|x) || p(z))", "nats per example")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title, unit) in zip(axes, panels, strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            ep, v = series(history, f"{split}_{key}")
            if len(ep):
                ax.plot(ep, v, style, marker="o", ms=3, label="train" if split == "train"
                        else "validation")
        if not ax.lines:
            ax.text(0.5, 0.5, "not defined for this model", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        mark_warnings(ax, history)
        ax.set(title=title, xlabel="epoch", ylabel=unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("Training curves")
    fig.tight_layout()
    return png(fig)


def kl_per_dim(kl: Sequence[float], active: Sequence[bool] | None = None) -> bytes:
    """Bar per latent dimension: its KL (nats); active units in one colour, inactive in grey."""
    kl = np.asarray(kl, float)
    active = np.asarray(active if active is not None else kl > 0.01, bool)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(kl) + 2), 3.5))
    idx = np.arange(len(kl))
    ax.bar(idx[active], kl[active], color="tab:blue", label=f"active units ({int(active.sum())})")
    if (~active).any():
        ax.bar(idx[~active], kl[~active], color="tab:gray",
               label=f"inactive units ({int((~active).sum())})")
    ax.set(title="KL per latent dimension", xlabel="latent dimension", ylabel="KL (nats per example)")
    ax.set_xticks(idx)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def image_grid(images, ncol: int, title: str, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, xlabel: str | None = None) -> bytes:
    """Images (N, C, H, W) in [0, 1] as one titled grid; optional labels per row and column."""
    g = grid(images, ncol)
    n, _, h, w = images.shape
    nrow, pad = -(-n // ncol), 2
    fig, ax = plt.subplots(figsize=(min(12, 0.9 * ncol + 1.5), min(14, 0.9 * nrow + 1)))
    ax.imshow(g, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([pad + k * (w + pad) + w / 2 for k in range(ncol)] if col_labels else [])
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(nrow)] if row_labels else [])
    if col_labels:
        ax.set_xticklabels(col_labels, fontsize=8)
    if row_labels:
        ax.set_yticklabels(row_labels, fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel)
    for side in ax.spines.values():
        side.set_visible(False)
    return png(fig)


def scatter_2d(points: np.ndarray, labels: np.ndarray | None, title: str, xlabel: str,
               ylabel: str) -> bytes:
    """2-D points coloured by label: a legend for a few classes, a colour bar for many."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, label="no labels")
        ax.legend(fontsize=8)
    else:
        classes = np.unique(labels)
        if len(classes) <= MAX_LEGEND_CLASSES:
            cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            for i, c in enumerate(classes):
                m = labels == c
                ax.scatter(points[m, 0], points[m, 1], s=4, alpha=0.6, color=cmap(i % cmap.N),
                           label=str(c))
            ax.legend(title="label", fontsize=8, markerscale=2, loc="upper left",
                      bbox_to_anchor=(1.01, 1))
        else:
            sc = ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, c=labels.astype(float),
                            cmap="viridis")
            fig.colorbar(sc, ax=ax, label="label")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return png(fig)


def score_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """One panel per scoring method: histogram of scores, split by label when labels exist."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.8), squeeze=False)
    for ax, (method, (s, y)) in zip(axes[0], scores.items(), strict=True):
        bins = np.histogram_bin_edges(s, bins=40)
        groups = [("all", s)] if y is None else [(f"label {c}", s[y == c]) for c in np.unique(y)]
        for name, values in groups:
            ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{name} (n={len(values)})")
        ax.set(title=f"score: {method}", xlabel="score in nats (higher = more anomalous)",
               ylabel="density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curve per method: (false-positive rates, true-positive rates, AUROC)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for method, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{method} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.set(title="ROC curve", xlabel="false-positive rate", ylabel="true-positive rate",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return png(fig)


def rate_distortion(rows: list[dict[str, Any]]) -> bytes:
    """Distortion against rate per beta, with dashed lines of constant ELBO (-ELBO = D + R)."""
    r = np.array([row["rate"] for row in rows], float)
    d = np.array([row["distortion"] for row in rows], float)
    pad_r, pad_d = 0.12 * max(np.ptp(r), 1e-3), 0.12 * max(np.ptp(d), 1e-3)
    xlo, xhi, ylo, yhi = r.min() - pad_r, r.max() + pad_r, d.min() - pad_d, d.max() + pad_d
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    best = int(np.argmin(r + d))
    levels = [(c, "gray", ":") for c in MaxNLocator(8).tick_values(xlo + ylo, xhi + yhi)]
    labelled = False
    for c, color, style in levels + [(r[best] + d[best], "tab:green", "--")]:
        x0, x1 = max(xlo, c - yhi), min(xhi, c - ylo)  # the part of D = c - R inside the axes
        if x0 >= x1:
            continue
        label = (f"best ELBO (β={rows[best]['beta']:g}): {-c:.2f} nats" if color != "gray"
                 else None if labelled else "constant ELBO: D + R = -ELBO (nats)")
        labelled = True
        ax.plot([x0, x1], [c - x0, c - x1], style, color=color, lw=1, label=label)
        if color == "gray":
            ax.annotate(f"ELBO {-c:g}", (x0, c - x0), fontsize=7, color="gray", xytext=(2, -9),
                        textcoords="offset points")
    ax.plot(r, d, "o", color="tab:blue", ms=7, label="runs (test split)")
    for row, x, y in zip(rows, r, d, strict=True):
        ax.annotate(f"β={row['beta']:g}", (x, y), textcoords="offset points", xytext=(6, 4))
    ax.set(xlim=(xlo, xhi), ylim=(ylo, yhi), title="Rate-distortion of the beta sweep",
           xlabel="rate R = KL(q(z|x) || p(z)) (nats per example)",
           ylabel="distortion D = -E_q log p(x|z) (nats per example)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return png(fig)
