"""vaekit interpolate"""

from __future__ import annotations

from .. import latent
from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_decoded
from .common import load_run
from .data_args import add_data_arguments, check_index, load_data

HELP = ("Decode the path between the encodings (posterior means) of examples I and J; --out: a "
        "PNG grid for image data, else .npy (or .csv), one row per step, both ends included.")


def add_arguments(p) -> None:
    add_data_arguments(p)
    p.add_argument("--from", dest="start", type=int, required=True, metavar="I",
                   help="index of the first example")
    p.add_argument("--to", dest="end", type=int, required=True, metavar="J",
                   help="index of the last example")
    p.add_argument("--steps", type=int, default=10, help="codes on the path, ends included "
                   "(default: 10)")
    p.add_argument("--spherical", action="store_true", help="great-circle path (slerp) instead "
                   "of a straight line (for the N(0, I) prior only: it follows that prior's shell)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")


def run(args) -> int:
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    if args.spherical and not r.model.prior.isotropic:
        raise VaekitError(f"--spherical follows the shell of an N(0, I) prior; this run's prior is "
                          f"{r.config.model.prior!r}: drop --spherical (the linear path)")
    x, _ = load_data(r, args)
    i, j = check_index(x, args.start, "--from"), check_index(x, args.end, "--to")
    mu = latent.encode(r.model, x[[i, j]]).mean
    path = "spherical" if args.spherical else "linear"
    out = latent.interpolate(r.model, mu[0], mu[1], args.steps, path)
    write_decoded(args.out, r.model, out, ncol=args.steps)
    print(f"wrote {args.steps} {path} steps from example {i} to {j} to {args.out}")
    return 0
