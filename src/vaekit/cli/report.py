"""vaekit report"""

from __future__ import annotations

import time

import torch
from threadpoolctl import threadpool_limits

from ..report import build_report

HELP = ("Write one self-contained HTML page of a run (opens offline): summary, training curves, "
        "KL per dimension, reconstructions, samples, traversals, latent space, scores.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--data", help="data to picture: a built-in name (its test split) or a "
                   "file/folder (every example); default: the run's own test split")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--scores", metavar="FILE", help="scores CSV from `vaekit score --out` "
                   "(default: RUN_DIR/scores.csv when it exists)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch and "
                   "scikit-learn (default: their choice)")


def run(args) -> int:
    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        path = build_report(args.run_dir, args.data, args.out, args.scores)
    size = path.stat().st_size / 1e6
    print(f"report: {path} ({size:.1f} MB, {time.perf_counter() - start:.1f}s)")
    return 0
