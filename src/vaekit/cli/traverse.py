"""vaekit traverse"""

from __future__ import annotations

import torch

from .. import latent
from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_decoded
from .common import load_run
from .data_args import add_data_arguments, check_index, int_list, load_data

HELP = ("Vary one latent dimension at a time from --range LO to HI, the others at the encoding of "
        "example --index (or at the prior mean 0); one row per dimension, by default every "
        "dimension ordered by its KL on the data (most informative first).")


def add_arguments(p) -> None:
    add_data_arguments(p, "examples to encode and to rank dimensions by KL")
    p.add_argument("--index", type=int, help="example whose encoding is the base (default: the "
                   "prior mean, z = 0)")
    p.add_argument("--dims", type=int_list, help="comma list of dimensions, e.g. 0,3,5 (default: "
                   "all, by KL)")
    p.add_argument("--range", type=float, nargs=2, default=(-3.0, 3.0), metavar=("LO", "HI"),
                   help="values of the varied dimension (default: -3 3, the prior's +-3 sd)")
    p.add_argument("--steps", type=int, default=9, help="values per dimension (default: 9)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")


def run(args) -> int:
    if args.steps < 1:
        raise VaekitError("--steps must be >= 1")
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    base = torch.zeros(r.model.latent_dim)
    x = None
    if args.index is not None or args.dims is None:
        x, _ = load_data(r, args)
    if args.index is not None:
        base = latent.encode(r.model, x[[check_index(x, args.index)]]).mean[0]
    dims = args.dims if args.dims is not None else latent.dims_by_kl(r.model, x)
    values = torch.linspace(args.range[0], args.range[1], args.steps)
    out = latent.traverse(r.model, base, dims, values)
    write_decoded(args.out, r.model, out, ncol=args.steps)
    print(f"wrote traversals of dimensions {','.join(map(str, dims))} ({args.steps} values from "
          f"{args.range[0]:g} to {args.range[1]:g}) to {args.out}")
    return 0
