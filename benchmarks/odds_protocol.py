"""How VAEAnomalyDetector's defaults are chosen: candidates scored on inner splits only, then
chosen by two protocols that cannot overfit the tables they are judged on (issue 12, [anomaly]).

Candidates: gradient steps per fit (--steps) x the fixed likelihood's sigma (--sigmas, standardized
units: gaussian-fixed's standard deviation or laplace-fixed's scale; it weighs the reconstruction
against the KL, in training and in the score) x the nets' dropout rate in training (--dropouts) x
the likelihood (--likelihoods) x the fraction of each training batch trimmed from the loss
(--trims) x weight decay (--weight-decays) x the latent dimensions (--latents) x the prior
(--priors) x Adam's learning rate (--lrs) x rows per batch (--batch-sizes) x score (--methods:
elbo, reconstruction, kl, ...; auto: the detector's own choice) x ensemble size (1, or --members
models with consecutive seeds, scores averaged in nats), every other option at its default. For
each table of ../shared/data/odds and each seed, the stratified 60/40 split of
benchmarks/odds_anomaly.py (the same splits); the 60% is split again (stratified 60/40): each
candidate is fit on the inner 60% and its *inner* AUROC is measured on the inner 40%, which is
all a choice may look at. Each candidate is also fit on the whole 60% and its *test* AUROC
measured on the 40%, which no choice looks at. Then:

- dev -> confirm: the candidate with the best mean inner AUROC over the dev half (odds_anomaly.HALVES)
  is chosen; its test AUROC is reported on both halves;
- leave-one-table-out: for each table, the candidate with the best mean inner AUROC over the other
  19 tables is chosen, and that table's test AUROC under it is reported; the mean over tables is an
  estimate of how the choice rule does on a table it never saw;
- the default: the candidate with the best mean inner AUROC over all tables (what a leave-one-out
  choice converges to).

Results per fit go to --out (JSON, kept between calls: a rerun with the same file only fits what
is missing, so a run can be continued).

    python benchmarks/odds_protocol.py --out /tmp/odds-protocol.json            # 20 tables, 2 seeds
    python benchmarks/odds_protocol.py --out /tmp/p.json --tables wine,glass --seeds 1 --steps 100,300
    python benchmarks/odds_protocol.py --out /tmp/odds-protocol.json --all --methods elbo --members 1
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from odds_anomaly import HALVES, ODDS, collect_splits  # noqa: E402  (the same halves, folder, splits)

from vaekit import VAEAnomalyDetector  # noqa: E402


def comma(kind):
    return lambda text: [kind(v) for v in text.split(",")]


def batch_size(text: str) -> str:
    """--batch-sizes' entries: rule, or a whole number of rows >= 1."""
    if text != "rule" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: give rule or a number of rows >= 1")
    return text


class Fit(NamedTuple):
    """The options of one fit; those at their defaults are left out of its key and name, so
    results made before an option existed keep their keys."""

    steps: int
    sigma: float = 1.0
    dropout: float = 0.0
    likelihood: str = "gaussian-fixed"
    trim: float = 0.0
    weight_decay: float = 0.0
    latent: str = "rule"  # latent dimensions: "rule" (config.default_sizes), "N", or "Fd" (F x d)
    prior: str = "normal"
    lr: float = 1e-3
    batch: str = "rule"  # rows per batch: "rule" (config.default_sizes) or "N"
    warmup: int = 0  # gradient steps of KL warm-up (the detector's kl_warmup_steps)

    def latent_dim(self, d: int) -> int | None:
        """The latent dimensions of a fit on d features (None: the detector's default rule)."""
        if self.latent == "rule":
            return None
        if self.latent.endswith("d"):
            return max(1, round(float(self.latent[:-1]) * d))
        return int(self.latent)

    def _label(self, part: int) -> str:
        """The options away from their defaults, each as LABELS[option][part] writes it."""
        return "".join(LABELS[f][part].format(getattr(self, f)) for f in LABELS
                       if getattr(self, f) != self._field_defaults[f])

    def key(self) -> str:
        return str(self.steps) + self._label(0)

    def name(self) -> str:
        return f"{self.steps} steps" + self._label(1)

    @classmethod
    def from_key(cls, key: str) -> Fit:
        """The fit a key (as `key` writes it) stands for."""
        steps, *parts = key.split("|")
        options: dict = {}
        for part in parts:
            word, _, value = part.partition(" ")
            if word in LABELLED:  # "word value", of the type of the field's default
                options[word] = type(cls._field_defaults[word])(value)
            else:  # sigma and likelihood are written bare
                try:
                    options["sigma"] = float(part)
                except ValueError:
                    options["likelihood"] = part
        return cls(int(steps), **options)


# How an option away from its default shows in a fit's key (results JSON) and in its name (tables)
LABELS = {"sigma": ("|{:g}", ", sigma {:g}"), "dropout": ("|dropout {:g}", ", dropout {:g}"),
          "likelihood": ("|{}", ", {}"), "trim": ("|trim {:g}", ", trim {:g}"),
          "weight_decay": ("|weight_decay {:g}", ", weight decay {:g}"),
          "latent": ("|latent {}", ", latent {}"), "prior": ("|prior {}", ", prior {}"),
          "lr": ("|lr {:g}", ", lr {:g}"), "batch": ("|batch {}", ", batch {}"),
          "warmup": ("|warmup {}", ", KL warm-up {} steps")}


def fit_and_score(x_fit, x_eval, y_eval, fit: Fit, members: int, seed: int,
                  methods: list[str]) -> dict[str, float]:
    """AUROC of every (method, ensemble size 1 or members) of models trained on x_fit."""
    det = VAEAnomalyDetector(steps=fit.steps, ensemble=members, random_state=seed,
                             sigma=fit.sigma, dropout=fit.dropout,
                             likelihood=fit.likelihood, trim=fit.trim,
                             weight_decay=fit.weight_decay, prior=fit.prior, lr=fit.lr,
                             latent_dim=fit.latent_dim(x_fit.shape[1]),
                             batch_size=None if fit.batch == "rule" else int(fit.batch),
                             kl_warmup_steps=fit.warmup).fit(x_fit)
    out = {}
    for method in methods:
        if method == "auto":  # the detector's own choice of score (fit with its default method)
            out[f"auto/{members}"] = roc_auc_score(y_eval, -det.score_samples(x_eval))
            continue
        per_member = det.member_scores(x_eval, method)
        out[f"{method}/1"] = roc_auc_score(y_eval, per_member[0])
        out[f"{method}/{members}"] = roc_auc_score(y_eval, per_member.mean(axis=0))
    return out


def collect(args, results: dict) -> None:
    variants = {fit.key(): fit for fit in fits(args)}

    def measure(x_fit, x_eval, y_eval, seed, fit):
        return fit_and_score(x_fit, x_eval, y_eval, fit, args.members, seed, args.methods)

    for key, record in collect_splits(results, args.out, args.odds_dir, args.tables, args.seeds,
                                      variants, measure):
        table, seed, fit_key = key.split("|", 2)
        inner = record["inner"]
        print(f"  {table} seed {seed} {fit_key}: inner best "
              f"{max(inner, key=inner.get)} {max(inner.values()):.3f}, "
              f"{record['seconds']:.0f}s", flush=True)


# Fit's fields written "word value" in a key (the others: steps first, sigma and likelihood bare)
LABELLED = [f for f in LABELS if f not in ("sigma", "likelihood")]
# the command line's list of each of Fit's fields, in the fields' order
OPTION_LISTS = ("steps", "sigmas", "dropouts", "likelihoods", "trims", "weight_decays", "latents",
                "priors", "lrs", "batch_sizes", "warmups")


def fits(args, results: dict | None = None) -> list[Fit]:
    """Every fit a candidate needs: the product of the options' lists; with --all, every fit
    that `results` holds for all the tables and seeds."""
    if args.all and results is not None:
        keys = [{k.split("|", 2)[2] for k in results if k.startswith(f"{t}|{seed}|")}
                for t in args.tables for seed in range(args.seeds)]
        return sorted((Fit.from_key(k) for k in set.intersection(*keys)), key=Fit.key)
    return [Fit(*options) for options in product(*(getattr(args, o) for o in OPTION_LISTS))]


def table_means(results: dict, args, part: str) -> dict:
    """{candidate: {table: mean AUROC over seeds}}; a candidate is '`Fit.name`, method/ensemble'."""
    out: dict[str, dict[str, float]] = {}
    for fit in fits(args, results):
        for t in args.tables:
            rows = [results[f"{t}|{seed}|{fit.key()}"][part] for seed in range(args.seeds)]
            for column in rows[0]:
                out.setdefault(f"{fit.name()}, {column}", {})[t] = float(
                    np.mean([r[column] for r in rows]))
    return out


def best(inner: dict, tables: list[str]) -> str:
    return max(inner, key=lambda c: np.mean([inner[c][t] for t in tables]))


def report(args, results: dict) -> None:
    tables = args.tables
    inner = table_means(results, args, "inner")
    test = table_means(results, args, "test")
    halves = {h: [t for t in ts if t in tables] for h, ts in HALVES.items()}
    print("\nmean inner AUROC (what choices see) and test AUROC, per candidate "
          "(score/ensemble size)\n")
    print("| candidate | inner dev | inner confirm | inner all | test dev | test confirm | test all |")
    print("|---|---|---|---|---|---|---|")
    for c in sorted(inner, key=lambda c: -np.mean(list(inner[c].values()))):
        cells = [np.mean([m[c][t] for t in ts]) if ts else float("nan")
                 for m in (inner, test) for ts in (halves["dev"], halves["confirm"], tables)]
        print(f"| {c} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
    if halves["dev"] and halves["confirm"]:
        c = best(inner, halves["dev"])
        print(f"\ndev -> confirm: chosen on the dev half's inner splits: {c}; test AUROC dev "
              f"{np.mean([test[c][t] for t in halves['dev']]):.4f}, confirm "
              f"{np.mean([test[c][t] for t in halves['confirm']]):.4f}")
    print("\nleave-one-table-out: the choice made without the table, and its test AUROC there\n")
    print("| table | chosen without it | test AUROC |")
    print("|---|---|---|")
    loto = {}
    for t in tables:
        c = best(inner, [u for u in tables if u != t])
        loto[t] = test[c][t]
        print(f"| {t} | {c} | {loto[t]:.4f} |")
    for h, ts in halves.items():
        if ts:
            print(f"leave-one-table-out mean test AUROC, {h} half: {np.mean([loto[t] for t in ts]):.4f}")
    print(f"leave-one-table-out mean test AUROC, all {len(tables)}: {np.mean(list(loto.values())):.4f}")
    print(f"\nthe default (best mean inner AUROC over all {len(tables)} tables): {best(inner, tables)}")
    print(f"fit seconds in all (inner and test fits): "
          f"{sum(r['seconds'] for r in results.values()):.0f}")


def main(argv: list[str] | None = None) -> None:
    """The command line; argv: its arguments (default: sys.argv's), for scripts that run the
    protocol with options of their own (odds_trim_rule.py)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results JSON (continued if it exists)")
    p.add_argument("--tables", type=comma(str), default=[t for ts in HALVES.values() for t in ts])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=comma(int), default=[100, 300, 1000])
    p.add_argument("--sigmas", type=comma(float), default=[1.0],
                   help="sigma of the fixed Gaussian likelihood, or the fixed Laplace's scale "
                        "(standardized units), comma list")
    p.add_argument("--dropouts", type=comma(float), default=[0.0],
                   help="dropout rate of the nets in training, comma list")
    p.add_argument("--likelihoods", type=comma(str), default=["gaussian-fixed"],
                   help="the detector's likelihood (gaussian-fixed, gaussian, gaussian-shared, "
                        "laplace-fixed), comma list")
    p.add_argument("--trims", type=comma(float), default=[0.0],
                   help="fraction of each training batch left out of the loss (lowest ELBO), "
                        "comma list")
    p.add_argument("--weight-decays", type=comma(float), default=[0.0],
                   help="decoupled weight decay of the fits (AdamW), comma list")
    p.add_argument("--latents", type=comma(str), default=["rule"],
                   help="latent dimensions: rule (the detector's default, d/2 within [2, 16]), N, "
                        "or Fd (F times the table's d features, at least 1), comma list")
    p.add_argument("--priors", type=comma(str), default=["normal"],
                   help="p(z) of the fits: normal, mog, vamp (the detector's prior=), comma list")
    p.add_argument("--lrs", type=comma(float), default=[1e-3],
                   help="Adam learning rates (the detector's lr)")
    p.add_argument("--batch-sizes", type=comma(batch_size), default=["rule"],
                   help="rows per batch: rule (the detector's default, config.default_sizes: "
                        "100 to 128, or all rows when fewer) or N, comma list")
    p.add_argument("--warmups", type=comma(int), default=[0],
                   help="gradient steps of KL warm-up at the start of each fit (the detector's "
                        "kl_warmup_steps; 0: none), comma list")
    p.add_argument("--members", type=int, default=3, help="ensemble size compared with 1")
    p.add_argument("--all", action="store_true",
                   help="fit nothing; report every candidate the results file holds for all the "
                        "tables and seeds (the union of earlier runs' lists)")
    p.add_argument("--methods", type=comma(str), default=["elbo", "reconstruction", "kl"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--odds-dir", type=Path, default=ODDS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.all:
        print(f"{len(args.tables)} tables, {args.seeds} seeds: every candidate in {args.out}",
              flush=True)
    else:
        print(f"{len(args.tables)} tables, {args.seeds} seeds, steps {args.steps}, sigmas "
              f"{args.sigmas}, dropouts {args.dropouts}, likelihoods {args.likelihoods}, trims "
              f"{args.trims}, scores {args.methods}, ensembles of 1 and {args.members}; results "
              f"in {args.out}", flush=True)
    if not args.all:
        collect(args, results)
    report(args, results)


if __name__ == "__main__":
    main()
