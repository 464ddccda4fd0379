"""vaekit score"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from .. import anomaly
from ..anomaly import DEFAULT_METHOD, OOD_DEFAULT, SCORES, Reference, score, threshold
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
    add_data_arguments(p, "examples to score", stream=True)
    p.add_argument("--method", choices=list(SCORES), default=DEFAULT_METHOD,
                   help="kl | reconstruction (-E_q log p(x|z)) | recon-prob (An & Cho 2015) | "
                   "elbo (-ELBO) | iw-nll (-importance-sampled log p(x)); out-of-distribution "
                   "(docs/anomaly.md): complexity (iw-nll minus the PNG code length, 8-bit images; "
                   "Serra et al. 2020) | likelihood-ratio (iw-nll minus the --background run's; "
                   "Ren et al. 2019) | typicality (|mean iw-nll of a --group - the validation "
                   f"split's|; Nalisnick et al. 2019) | ood (the recommended one: {OOD_DEFAULT}) "
                   f"(default: {DEFAULT_METHOD})")
    p.add_argument("--samples", type=int, metavar="S", help="draws of z per example (default: 16; "
                   "iw-nll and the out-of-distribution scores: 100)")
    p.add_argument("--background", metavar="RUN2", help="likelihood-ratio: a run trained on the "
                   "same kind of data, perturbed (vaekit.ood.perturb; docs/anomaly.md)")
    p.add_argument("--group", type=int, default=1, metavar="M", help="typicality: consecutive "
                   "examples scored together (each gets its group's score; default: 1)")
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


CSV_ROWS = 65_536  # rows formatted and written at a time: the text is never built whole


def write_scores(f, s: np.ndarray, method: str, labels, flagged) -> None:
    """CSV index,method,score[,label][,flagged] to the text file f, in input order."""
    f.write("index,method,score" + (",label" if labels is not None else "")
            + (",flagged" if flagged is not None else "") + "\n")
    for start in range(0, len(s), CSV_ROWS):
        rows = []
        for i in range(start, min(start + CSV_ROWS, len(s))):
            row = [str(i), method, f"{s[i]:.7g}"]
            if labels is not None:
                row.append(str(labels[i]))
            if flagged is not None:
                row.append(str(int(flagged[i])))
            rows.append(",".join(row) + "\n")
        f.write("".join(rows))


def write_scores_file(path: Path, *table) -> None:
    """write_scores to path, atomically (no half-written file under the name)."""
    def write(binary) -> None:
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        write_scores(text, *table)
        text.flush()
        text.detach()

    atomic_write(path, write)


def reference(r, args) -> Reference:
    """What --method needs besides the run (anomaly.NEEDS): the --background run, the validation
    split."""
    return anomaly.reference(r.model, args.method, args.background, args.group,
                             lambda: validation(r, args))


def validation(r, args):
    """The run's validation split, model space (read in slices when the run streamed it)."""
    return load_for_model(r.model, r.config, None, "val", lazy=True, **read_options(args))[0]


def run(args) -> int:
    check_seed_option(args)
    if args.out:
        check_out(args.out)
    r = load_run(args)
    ref = reference(r, args)
    x, y = load_data(r, args)
    target = None if y is None else anomaly.anomaly_target(y, args.anomaly_label)
    s = score(r.model, x, args.method, args.samples, args.seed, common=args.common_draws, ref=ref)
    s = s.double().numpy()
    flagged, lines = None, []
    rate = args.fpr if args.fpr is not None else args.contamination
    if rate is not None:
        x_val = ref.validation if ref.validation is not None else validation(r, args)
        cut = threshold(score(r.model, x_val, args.method, args.samples, args.seed,
                              common=args.common_draws, ref=ref), rate)
        flagged = s > cut
        how = "fpr" if args.fpr is not None else "contamination"
        lines.append(f"threshold {cut:.4g} (validation {how} {rate:g}): {int(flagged.sum())} of "
                     f"{len(s)} flagged")
    return finish(args, s, args.method, y, target, flagged, lines)


def finish(args, s: np.ndarray, method: str, y, target, flagged, lines: list[str]) -> int:
    """AUROC and average precision when the labels say which examples are anomalies (target),
    then the scores as CSV to --out (the summary lines to stdout) or to stdout (the summary to
    stderr); `vaekit score` and `vaekit detect` alike."""
    if target is not None and 0 < target.sum() < len(target):
        m = anomaly.detection_metrics(s, target)
        lines.append(f"AUROC {m['auroc']:.4f}  average precision {m['average_precision']:.4f} "
                     f"({int(target.sum())} anomalies in {len(s)})")
    if args.out:
        write_scores_file(Path(args.out), s, method, y, flagged)
        lines.insert(0, f"wrote {len(s)} {method} scores to {args.out}")
        print("\n".join(lines))
    else:
        write_scores(sys.stdout, s, method, y, flagged)
        if lines:
            print("\n".join(lines), file=sys.stderr)
    return 0
