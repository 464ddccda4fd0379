"""vaekit score"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from ..anomaly import SCORES, anomaly_target, detection_metrics, score, threshold
from ..data import load_for_model
from ..outputs import check_out
from ..runs import atomic_write
from .common import add_seed_option, check_seed_option, load_run, read_options
from .data_args import add_data_arguments, load_data

HELP = ("Anomaly score of every example, in input order (higher = more anomalous, nats): CSV "
        "index,method,score[,label][,flagged]. With labels, AUROC and average precision; with "
        "--fpr or --contamination, outliers flagged above a threshold set on the run's "
        "validation split.")


def add_arguments(p) -> None:
    add_data_arguments(p, "examples to score")
    p.add_argument("--method", choices=list(SCORES), default="elbo",
                   help="kl | reconstruction (-E_q log p(x|z)) | recon-prob (An & Cho 2015) | "
                   "elbo (-ELBO) | iw-nll (-importance-sampled log p(x)) (default: elbo)")
    p.add_argument("--samples", type=int, metavar="S", help="draws of z per example (default: 16; "
                   "iw-nll: 100)")
    add_seed_option(p, "the draws")
    p.add_argument("--common-draws", action="store_true", help="the same S draws of z for every "
                   "example (common random numbers): steadier ranking between near-identical "
                   "examples, but every score then shares one seed-dependent offset (default: "
                   "independent draws per example, reproducible from --seed)")
    p.add_argument("--out", metavar="FILE", help="write the scores as CSV here (default: to "
                   "standard output, the summary to standard error)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--fpr", type=float, help="flag examples scoring above the (1 - FPR) "
                      "quantile of the validation split's scores (validation data taken as normal)")
    rate.add_argument("--contamination", type=float, metavar="C", help="flag examples scoring "
                      "above the (1 - C) quantile of the validation split's scores (C: its "
                      "expected fraction of outliers)")
    p.add_argument("--anomaly-label", metavar="LABEL", help="the label of anomalies (default: 1 "
                   "when the labels are 0/1)")


def scores_csv(s: np.ndarray, method: str, labels, flagged) -> str:
    buf = io.StringIO()
    buf.write("index,method,score" + (",label" if labels is not None else "")
              + (",flagged" if flagged is not None else "") + "\n")
    for i, v in enumerate(s):
        row = [str(i), method, f"{v:.7g}"]
        if labels is not None:
            row.append(str(labels[i]))
        if flagged is not None:
            row.append(str(int(flagged[i])))
        buf.write(",".join(row) + "\n")
    return buf.getvalue()


def run(args) -> int:
    check_seed_option(args)
    if args.out:
        check_out(args.out)
    r = load_run(args)
    x, y = load_data(r, args)
    target = None if y is None else anomaly_target(y, args.anomaly_label)
    s = score(r.model, x, args.method, args.samples, args.seed, common=args.common_draws)
    s = s.double().numpy()
    flagged, lines = None, []
    rate = args.fpr if args.fpr is not None else args.contamination
    if rate is not None:
        x_val, _ = load_for_model(r.model, r.config, None, "val", **read_options(args))
        cut = threshold(score(r.model, x_val, args.method, args.samples, args.seed,
                              common=args.common_draws), rate)
        flagged = s > cut
        how = "fpr" if args.fpr is not None else "contamination"
        lines.append(f"threshold {cut:.4g} (validation {how} {rate:g}): {int(flagged.sum())} of "
                     f"{len(s)} flagged")
    if target is not None and 0 < target.sum() < len(target):
        m = detection_metrics(s, target)
        lines.append(f"AUROC {m['auroc']:.4f}  average precision {m['average_precision']:.4f} "
                     f"({int(target.sum())} anomalies in {len(s)})")
    text = scores_csv(s, args.method, y, flagged)
    if args.out:
        atomic_write(Path(args.out), text)
        lines.insert(0, f"wrote {len(s)} {args.method} scores to {args.out}")
        print("\n".join(lines))
    else:
        sys.stdout.write(text)
        if lines:
            print("\n".join(lines), file=sys.stderr)
    return 0
