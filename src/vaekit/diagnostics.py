"""Training diagnostics: a per-epoch hook that warns about posterior collapse, overfitting and
undertraining, on stderr (kept with --quiet, which hides only the bar and the epoch lines) and in
the metrics row.

A warning is `{"kind": ..., "message": ...}` in `row["warnings"]` (absent when there is none), so
metrics.jsonl and the HTML report see what the console printed. The checks read the validation
metrics the loop already computes (val_rate, val_active_units, val/train reconstruction, ELBO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass
class Thresholds:
    collapse_rate: float = 0.1  # nats per example: a rate below this counts as "near 0"
    window: int = 3  # epochs over which a trend must hold
    gap_growth: float = 0.1  # nats: least growth of the train-val reconstruction gap to warn


def collapsed(row: Row, t: Thresholds) -> bool:
    rate, active = row.get("val_rate"), row.get("val_active_units")
    return active == 0 or (rate is not None and rate < t.collapse_rate)


def collapse(row: Row, history: list[Row], t: Thresholds, warmup: int, stochastic: bool,
             final: bool) -> str | None:
    """Posterior collapse: no active unit, or rate near 0, once KL warm-up is over, for `window`
    epochs in a row or at the last epoch (the first epochs of a healthy run often start there)."""
    if not stochastic or row["epoch"] <= warmup:
        return None
    recent = [r for r in [*history, row] if r["epoch"] > warmup][-t.window:]
    if not all(collapsed(r, t) for r in recent) or (len(recent) < t.window and not final):
        return None
    rate, active = row.get("val_rate"), row.get("val_active_units")
    return (f"posterior collapse: {active} active units, rate {rate:.3f} nats; the decoder "
            "ignores z. Lower --beta, add --kl-warmup or --free-bits, or use a weaker decoder")


def overfitting(row: Row, history: list[Row], t: Thresholds, warmup: int, stochastic: bool,
                final: bool) -> str | None:
    """The gap train - validation reconstruction, positive throughout, grew in each of the last
    `window` epochs, in which the validation score (ELBO) set no new best. (Early in training the
    gap is negative: the training figure is averaged over the epoch while the weights improve, so a
    shrinking negative gap is not overfitting; nor is a gap that grows while validation improves.)
    """
    rows = [*history, row][-(t.window + 1):]
    if len(rows) <= t.window:
        return None
    gaps = [r["train_reconstruction"] - r["val_reconstruction"] for r in rows]
    growing = all(b > a for a, b in zip(gaps[:-1], gaps[1:], strict=False))
    key = "val_elbo" if stochastic else "val_reconstruction"
    scores = [r[key] for r in [*history, row]]
    stalled = max(scores[-t.window:]) <= max(scores[:-t.window])  # no new best in the window
    if growing and stalled and gaps[0] > 0 and gaps[-1] - gaps[0] > t.gap_growth:
        return (f"overfitting: the train-validation reconstruction gap grew from {gaps[0]:.2f} "
                f"to {gaps[-1]:.2f} nats over {t.window} epochs; best weights are kept in "
                "best.pt. Consider more data, a smaller model or --patience")
    return None


def undertrained(row: Row, history: list[Row], t: Thresholds, warmup: int, stochastic: bool,
                 final: bool) -> str | None:
    """At the last epoch, training and validation scores both still rising."""
    key = "elbo" if stochastic else "reconstruction"
    rows = [*history, row][-(t.window + 1):]
    if not final or len(rows) <= t.window:
        return None
    rising = all(b[f"{s}_{key}"] > a[f"{s}_{key}"] for s in ("train", "val")
                 for a, b in zip(rows[:-1], rows[1:], strict=False))
    if rising:
        return (f"undertrained: training and validation {key} both still improved over the last "
                f"{t.window} epochs; more --epochs (vaekit train --resume RUN --epochs N) "
                "would likely help")
    return None


CHECKS: dict[str, Callable[..., str | None]] = {
    "collapse": collapse,
    "overfitting": overfitting,
    "undertrained": undertrained,
}


class Diagnostics:
    """Hook: add `warnings` to each epoch's row; `state.warn` a kind when it starts (not every
    epoch)."""

    def __init__(self, epochs: int, warmup: int = 0, stochastic: bool = True,
                 thresholds: Thresholds | None = None, beta: float | None = None):
        """warmup: the epochs of KL warm-up (--kl-warmup); beta: the target KL weight. When beta
        is given, an epoch whose row reports a lower weight (its last step still warming up under
        --kl-warmup-steps) counts as warm-up too."""
        self.epochs, self.warmup, self.stochastic = epochs, warmup, stochastic
        self.t = thresholds or Thresholds()
        self.beta = beta
        self.active: set[str] = set()

    def __call__(self, row: Row, state) -> None:
        final = row["epoch"] >= self.epochs
        if self.beta is not None and row.get("beta", self.beta) < self.beta:
            self.warmup = max(self.warmup, row["epoch"])
        warnings = []
        for kind, check in CHECKS.items():
            message = check(row, state.history, self.t, self.warmup, self.stochastic, final)
            if message:
                warnings.append({"kind": kind, "message": message})
        kinds = {w["kind"] for w in warnings}
        for w in warnings:
            if w["kind"] not in self.active:
                state.warn(f"warning (epoch {row['epoch']}): {w['message']}")
        self.active = kinds
        if warnings:
            row["warnings"] = warnings


def diagnostics_hook(cfg) -> Diagnostics:
    return Diagnostics(cfg.train.epochs, cfg.train.kl_warmup, cfg.model.model == "vae",
                       beta=cfg.train.beta)
