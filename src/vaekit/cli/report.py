"""vaekit report"""

from __future__ import annotations

import time

from threadpoolctl import threadpool_limits

from ..outputs import check_out
from .common import add_compute_options, add_read_options, load_run, read_options
from .data_args import check_file_options

HELP = ("Write one self-contained HTML page of a run (opens offline): summary, training curves, "
        "KL per dimension, reconstructions, samples, traversals, latent space, scores.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--data", help="data to picture: a built-in name (the run's own test split "
                   "when it is the run's dataset, else its seeded test split) or a file/folder "
                   "(every example); default: the run's own test split")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--scores", metavar="FILE", help="scores CSV from `vaekit score --out` "
                   "(default: RUN_DIR/scores.csv when it exists)")
    add_read_options(p)
    add_compute_options(p)


def run(args) -> int:
    from ..report import build_report  # here: matplotlib loads only for the commands that draw

    start = time.perf_counter()
    if args.out:
        check_out(args.out)
    check_file_options(args)
    r = load_run(args)  # applies --threads and --device, checked as every command does
    with threadpool_limits(args.threads):
        path = build_report(r, args.data, args.out, args.scores, **read_options(args))
    size = path.stat().st_size / 1e6
    print(f"report: {path} ({size:.1f} MB, {time.perf_counter() - start:.1f}s)")
    return 0
