"""vaekit traverse"""

from __future__ import annotations

import torch

from .. import latent
from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_decoded
from .common import load_run
from .data_args import add_data_arguments, check_index, int_list, load_data

HELP = ("Vary one latent dimension at a time from --range LO to HI, the others at the encoding of "
        "example --index (or at the prior's mean); one row per dimension, by default every "
        "dimension ordered by its KL on the data, most informative first (by the variance of the "
        "codes where the KL does not split over dimensions: a mog/vamp prior, an iaf posterior).")
SPREAD = 3.0  # default range: the prior's mean +- 3 sd of each dimension's marginal


def add_arguments(p) -> None:
    add_data_arguments(p, "examples to encode and to rank dimensions by KL")
    p.add_argument("--index", type=int, help="example whose encoding is the base (default: the "
                   "prior's mean, z = 0 for N(0, I))")
    p.add_argument("--dims", type=int_list, help="comma list of dimensions, e.g. 0,3,5 (default: "
                   "all, by KL)")
    p.add_argument("--range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="values of the varied dimension (default: the prior's mean +- 3 sd of that "
                   "dimension: -3 3 for N(0, I))")
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default: 9)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")


def run(args) -> int:
    if args.steps < 1:
        raise VaekitError("--steps must be >= 1")
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    base = latent.prior_centre(r.model)
    x = None
    if args.index is not None or args.dims is None:
        x, _ = load_data(r, args)
    if args.index is not None:
        base = latent.encode(r.model, x[[check_index(x, args.index)]]).mean[0]
    dims = args.dims if args.dims is not None else latent.dims_by_kl(r.model, x)
    if args.range is not None:
        values = torch.linspace(args.range[0], args.range[1], args.steps)
        span = f"from {args.range[0]:g} to {args.range[1]:g}"
    else:
        values = latent.prior_values(r.model, dims, torch.linspace(-SPREAD, SPREAD, args.steps))
        span = (f"from {-SPREAD:g} to {SPREAD:g}" if r.model.prior.isotropic
                else f"the prior's mean +- {SPREAD:g} sd")
    out = latent.traverse(r.model, base, dims, values)
    write_decoded(args.out, r.model, out, ncol=args.steps)
    order = "" if args.dims is not None or latent.kl_ranked(r.model) else (
        ", by code variance: the KL does not split over dimensions for this prior/posterior")
    print(f"wrote traversals of dimensions {','.join(map(str, dims))}{order} ({args.steps} values "
          f"{span}) to {args.out}")
    return 0
