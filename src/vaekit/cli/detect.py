"""vaekit detect"""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import anomaly
from ..config import DataConfig
from ..data import check_finite
from ..detector_defaults import KL_WARMUP_STEPS, METHODS, NEIGHBOURS, STEPS
from ..errors import VaekitError
from ..outputs import check_out
from ..runtime import set_threads
from ..sources import read_source
from .common import (
    add_compute_options,
    add_field_option,
    add_seed_option,
    check_seed_option,
    option_name,
)
from .score import finish

if TYPE_CHECKING:  # scikit-learn is loaded only when the command runs (`vaekit --help` skips it)
    from ..detector import VAEAnomalyDetector

HELP = ("Unsupervised anomaly detection on a table, no run folder needed: fit VAEAnomalyDetector "
        "(the benchmarked defaults of docs/anomaly.md: the -ELBO of a short trimmed fit with a "
        "KL warm-up, or the neighbours' distance, chosen without labels) on the rows of --data, "
        "and score them (or --test-data); --save keeps the fitted detector, --load scores with "
        "one. CSV index,method,score[,label],flagged (higher = more anomalous; flagged: above the "
        "threshold that flags --contamination of the fit rows). With labels, AUROC and average "
        "precision.")
# meaningless with --load
FIT_OPTIONS = ("method", "contamination", "steps", "kl_warmup_steps", "ensemble", "save")


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="rows to fit on (and to score, unless "
                   "--test-data); with --load, the rows to score: a .npy/.npz/.csv/.parquet "
                   "file (each example flattened to one row; labels, if the file has them, are "
                   "not fitted on) or a built-in name (its training split; with --load, its test split "
                   "where it has its own, as mnist does: digits has one set of rows)")
    p.add_argument("--test-data", metavar="FILE", help="rows to score with the detector fit on "
                   "--data (a built-in name: its test split where it has its own; default: the "
                   "--data rows)")
    p.add_argument("--load", metavar="DIR", help="score --data with a detector saved before "
                   "(--save) instead of fitting one")
    p.add_argument("--save", metavar="DIR", help="write the fitted detector to this folder "
                   "(detector.json, config.yaml, weights; a detector saved there is replaced)")
    p.add_argument("--method", choices=sorted(METHODS), help="the score: auto (chosen at fit "
                   "time between elbo and neighbours, without labels) | neighbours (mean L1 "
                   f"distance of the standardized row to its {NEIGHBOURS} nearest fit rows, among those the "
                   "-ELBO does not set apart) | a VAE score "
                   "in nats (elbo: the -ELBO; ...) (default: auto)")
    p.add_argument("--contamination", type=float, metavar="C", help="expected fraction of "
                   "anomalies among the fit rows, in (0, 0.5): the threshold flags that share of "
                   "them (default: 0.1)")
    p.add_argument("--steps", type=int, metavar="N", help=f"gradient steps of the fit (default: "
                   f"{STEPS})")
    p.add_argument("--kl-warmup-steps", type=int, metavar="N", help="gradient steps over which "
                   "the KL term's weight rises from 0 to 1 at the start of the fit (0: none; "
                   f"default: {KL_WARMUP_STEPS})")
    p.add_argument("--ensemble", type=int, metavar="K", help="models fit with seeds S, S+1, ...; "
                   "their VAE scores are averaged (default: 1)")
    add_seed_option(p, "the fit and the draws of the scores")
    group = p.add_argument_group("data options")
    for f in fields(DataConfig):
        if f.name in ("label_column", "layout"):
            add_field_option(group, f)
    p.add_argument("--anomaly-label", metavar="LABEL", help="the label of anomalies (default: 1 "
                   "when the labels are 0/1)")
    p.add_argument("--out", metavar="FILE", help="write the scores as CSV here (default: to "
                   "standard output, the summary to standard error)")
    add_compute_options(p, device=False)


def read_rows(source: str, args, split: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The examples of `source` as float64 rows (N, D), and their labels (or None)."""
    reading = {k: getattr(args, k) for k in ("label_column", "layout") if hasattr(args, k)}
    raw = read_source(source, DataConfig(**reading), split)
    x = np.asarray(raw.x, dtype=np.float64).reshape(len(raw.x), -1)
    check_finite(x, f"{what} {source}")
    return x, raw.y


def check_options(args) -> None:
    """One line for each value the detector would refuse, before any data is read."""
    check_seed_option(args)
    if args.load:
        given = [option_name(k) for k in FIT_OPTIONS if getattr(args, k) is not None]
        if args.test_data:
            given.append("--test-data")
        if given:
            raise VaekitError(f"{', '.join(given)}: the detector given with --load is already "
                              f"fit (--data is what it scores); drop {', '.join(given)}, or fit "
                              "a new one without --load")
        if not Path(args.load).is_dir():
            raise VaekitError(f"--load {args.load}: no such folder; give the folder that "
                              "`vaekit detect --save` wrote")
    if args.contamination is not None and not 0 < args.contamination < 0.5:
        raise VaekitError(f"--contamination must be in (0, 0.5), got {args.contamination:g}")
    for name, least in (("steps", 1), ("ensemble", 1), ("kl_warmup_steps", 0)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise VaekitError(f"{option_name(name)} must be at least {least}, got {value}")
    if args.save:
        from ..detector import check_save_target

        check_save_target(args.save)
    if args.out:
        check_out(args.out)


def check_width(x: np.ndarray, features: int, source: str) -> None:
    if x.shape[1] != features:
        raise VaekitError(f"{source} has {x.shape[1]} features per row; the detector was fit on "
                          f"{features}; give rows with the same columns")


def fit(args, x: np.ndarray) -> tuple[VAEAnomalyDetector, str]:
    """The detector fit on x, and the line that says what it kept."""
    if len(x) < 2:
        raise VaekitError(f"--data {args.data} has {len(x)} row(s); fitting needs at least 2")
    from ..detector import VAEAnomalyDetector

    given = {"method": args.method, "contamination": args.contamination, "steps": args.steps,
             "kl_warmup_steps": args.kl_warmup_steps, "ensemble": args.ensemble}
    det = VAEAnomalyDetector(random_state=args.seed,
                             **{k: v for k, v in given.items() if v is not None})
    start = time.perf_counter()
    det.fit(x)
    line = (f"fit on {len(x)} rows of {x.shape[1]} features in {time.perf_counter() - start:.1f} "
            f"s: score {det.method_}")
    if hasattr(det, "isolated_"):
        shares = ", ".join(f"{k} {v:.3f}" for k, v in det.isolated_.items())
        line += f" (auto: share of fit rows set apart, {shares})"
        if det.close_call():
            line += ("; a close call: the two shares are within one standard error, so a fit "
                     "with another --seed may keep the other score; with labels at hand, compare "
                     "--method elbo and --method neighbours")
    return det, line


def run(args) -> int:
    check_options(args)
    set_threads(args.threads)
    lines = []
    if args.load:
        from ..detector import VAEAnomalyDetector

        det = VAEAnomalyDetector.load(args.load)
        x, y = read_rows(args.data, args, "test", "--data")
        fit_rows = None
        check_width(x, det.n_features_in_, args.data)
        lines.append(f"loaded the detector of {args.load}: score {det.method_}")
    else:
        x, y = read_rows(args.data, args, "train", "--data")
        fit_rows = x
        if args.test_data:  # read (and checked) before the fit
            x, y = read_rows(args.test_data, args, "test", "--test-data")
            check_width(x, fit_rows.shape[1], args.test_data)
        det, line = fit(args, fit_rows)
        lines.append(line)
        if args.save:
            det.save(args.save)
            lines.append(f"saved the detector to {args.save}")
    # the fit rows' own scores were computed in fit: not scored a second time
    s = -(det.train_score_samples_ if x is fit_rows else det.score_samples(x))
    flagged = -s - det.offset_ < 0  # predict(x) == -1, from the scores already drawn
    lines.append(f"{int(flagged.sum())} of {len(s)} flagged (threshold {-det.offset_:.4g}: the "
                 f"contamination {det.contamination:g} of the fit rows)")
    target = None if y is None else anomaly.anomaly_target(y, args.anomaly_label)
    return finish(args, s, det.method_, y, target, flagged, lines)
