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
BEST_COLOR = "#2ca02c"  # tab:green: the best epoch on the training curves
MIN_TILE_PX = 64  # pictures of small images (8x8 digits) are enlarged to at least this many pixels
MAX_OVERLAID = 3  # score histograms of more groups than this: one small panel per group
PANEL_COLUMNS = 5


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


def mark_best(ax, history: list[dict[str, Any]], key: str, best_epoch: int | None) -> None:
    """A solid green vertical line at the best epoch (the weights kept) and a star on its
    validation point."""
    if best_epoch is None:
        return
    ax.axvline(best_epoch, color=BEST_COLOR, lw=1.5, label=f"best epoch ({best_epoch})")
    at = [r.get(key) for r in history if r["epoch"] == best_epoch and r.get(key) is not None]
    if at:
        ax.plot([best_epoch], at[:1], "*", color=BEST_COLOR, ms=12, zorder=5)


def training_curves(history: list[dict[str, Any]], best_epoch: int | None = None) -> bytes:
    """ELBO, reconstruction and KL per epoch, train and validation, warnings and the best epoch
    (the one whose weights were kept) marked."""
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
        else:
            mark_best(ax, history, f"val_{key}", best_epoch)
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


def enlargement(tile: int, min_px: int = MIN_TILE_PX) -> int:
    """The whole factor that makes a tile of `tile` pixels at least min_px wide."""
    return max(1, -(-min_px // tile))


def enlarge(picture: np.ndarray, k: int) -> np.ndarray:
    """Each pixel repeated k x k times (nearest neighbour): (H, W[, 3]) -> (kH, kW[, 3])."""
    return picture.repeat(k, axis=0).repeat(k, axis=1)


def image_grid(images, ncol: int, title: str, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, xlabel: str | None = None,
               dpi: int = 100) -> bytes:
    """Images (N, C, H, W) in [0, 1] as one titled grid; optional labels per row and column.

    Small images are enlarged by whole pixels (nearest neighbour) to >= MIN_TILE_PX a tile, and
    the figure is sized so that each pixel of the enlarged grid is one pixel of the PNG."""
    n, _, h, w = images.shape
    k = enlargement(min(h, w))
    g = enlarge(grid(images, ncol), k)
    nrow, pad = -(-n // ncol), 2 * k
    hk, wk = h * k, w * k
    fig = plt.figure(figsize=(g.shape[1] / dpi, g.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))  # the axes fill the figure: one grid pixel = one PNG pixel
    ax.imshow(g, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([pad + c * (wk + pad) + wk / 2 for c in range(ncol)] if col_labels else [])
    ax.set_yticks([pad + r * (hk + pad) + hk / 2 for r in range(nrow)] if row_labels else [])
    if col_labels:
        ax.set_xticklabels(col_labels, fontsize=8)
    if row_labels:
        ax.set_yticklabels(row_labels, fontsize=8)
    if xlabel:
        ax.set_xlabel(xlabel)
    for side in ax.spines.values():
        side.set_visible(False)
    return png(fig, dpi)


def scatter_2d(points: np.ndarray, labels: np.ndarray | None, title: str, xlabel: str,
               ylabel: str, names: dict[Any, str] | None = None,
               centres: np.ndarray | None = None) -> bytes:
    """2-D points coloured by label: a legend for a few classes (named by `names` where given),
    a colour bar for many; `centres` (K, 2), a mixture prior's components, as black crosses."""
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
                           label=f"{c}: {names[c]}" if names and c in names else str(c))
            ax.legend(title="label", fontsize=8, markerscale=2, loc="upper left",
                      bbox_to_anchor=(1.01, 1))
        else:
            sc = ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, c=labels.astype(float),
                            cmap="viridis")
            fig.colorbar(sc, ax=ax, label="label")
    if centres is not None:
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", s=30, color="black", linewidths=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return png(fig)


def group_name(label: Any, binary: bool) -> str:
    """How a score group is named: 0/1 labels as the ROC curve reads them, others as they are."""
    if binary:
        return {0: "label 0 (normal)", 1: "label 1 (anomaly)"}[int(label)]
    return f"label {label}"


def score_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """Histograms of each method's scores, split by label when labels exist: overlaid for up to
    MAX_OVERLAID groups, else small multiples (one panel per label, each over all scores in grey)
    so that ten classes stay readable."""
    layout = []  # per method: (method, scores, groups)
    for method, (s, y) in scores.items():
        classes = [] if y is None else np.unique(y).tolist()
        binary = set(classes) == {0, 1}
        groups = [("all", s)] if y is None else [(group_name(c, binary), s[y == c]) for c in classes]
        layout.append((method, s, groups))
    many = any(len(g) > MAX_OVERLAID for _, _, g in layout)
    if not many:
        fig, axes = plt.subplots(1, len(layout), figsize=(5 * len(layout), 3.8), squeeze=False)
        for ax, (method, s, groups) in zip(axes[0], layout, strict=True):
            bins = np.histogram_bin_edges(s, bins=40)
            for name, values in groups:
                ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{name} (n={len(values)})")
            ax.set(title=f"score: {method}", xlabel="score in nats (higher = more anomalous)",
                   ylabel="density")
            ax.legend(fontsize=8)
        fig.tight_layout()
        return png(fig)
    rows = [-(-len(g) // PANEL_COLUMNS) for _, _, g in layout]
    fig = plt.figure(figsize=(3 * PANEL_COLUMNS, 2.3 * sum(rows) + 0.6 * len(layout)))
    subfigs = np.atleast_1d(fig.subfigures(len(layout), 1, height_ratios=rows))
    for sub, (method, s, groups), nrow in zip(subfigs, layout, rows, strict=True):
        axes = sub.subplots(nrow, PANEL_COLUMNS, sharex=True, squeeze=False).ravel()
        bins = np.histogram_bin_edges(s, bins=40)
        for ax, (name, values) in zip(axes, groups, strict=False):
            ax.hist(s, bins=bins, density=True, color="lightgray", label="all")
            ax.hist(values, bins=bins, density=True, color="tab:blue", alpha=0.8, label=name)
            ax.set_title(f"{name} (n={len(values)})", fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in axes[len(groups):]:
            ax.set_visible(False)
        sub.suptitle(f"score: {method} (in nats, higher = more anomalous; grey: all examples)",
                     fontsize=10)
        sub.supylabel("density", fontsize=9)
        sub.supxlabel("score (nats)", fontsize=9)
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
