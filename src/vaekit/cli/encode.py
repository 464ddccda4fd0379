"""vaekit encode"""

from __future__ import annotations

import numpy as np

from .. import latent
from ..outputs import LATENT_SUFFIXES, check_out, write_latents
from .common import load_run
from .data_args import add_data_arguments, load_data

HELP = ("Write the posterior means (and with --with-logvar the log-variances) of every example, "
        "in input order, one row each: .npy (N, L) or (N, 2L), .csv with a header, or .parquet.")


def add_arguments(p) -> None:
    add_data_arguments(p, "examples to encode (seen or unseen)", stream=True)
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy, .csv or .parquet "
                   "(parquet needs pyarrow)")
    p.add_argument("--with-logvar", action="store_true", help="also write log-variances "
                   "(columns logvar_0..; after the means)")


def run(args) -> int:
    check_out(args.out, LATENT_SUFFIXES)
    r = load_run(args)
    x, _ = load_data(r, args)
    q = latent.encode(r.model, x)
    columns = [f"mu_{i}" for i in range(q.mean.shape[1])]
    values = q.mean.numpy()
    if args.with_logvar:
        logvar = latent.log_variance(q)
        columns += [f"logvar_{i}" for i in range(logvar.shape[1])]
        values = np.concatenate([values, logvar.numpy()], axis=1)
    write_latents(args.out, values, columns)
    print(f"wrote {len(values)} x {values.shape[1]} ({', '.join(columns[:1] + columns[-1:])}) "
          f"to {args.out}")
    return 0
