"""vaekit manifold"""

from __future__ import annotations

from .. import latent
from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_decoded
from .common import add_compute_options, load_run
from .data_args import int_list

HELP = ("Decode a STEPS x STEPS grid over the prior's quantiles of a 2-D latent space (Kingma & "
        "Welling 2014, fig. 4; for a mog/vamp prior the quantiles of each dimension's mixture "
        "marginal); --out: a PNG grid for image data, else .npy (or .csv).")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--steps", type=int, default=15, help="grid points per axis (default: 15)")
    p.add_argument("--dims", type=int_list, metavar="I,J", help="for latents of more than 2 "
                   "dimensions: the two to vary (the others stay at the prior's mean, 0 for N(0, I))")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")
    add_compute_options(p)


def run(args) -> int:
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    L = r.model.latent_dim
    if args.dims is None and L != 2:
        raise VaekitError(f"this run has {L} latent dimensions; the manifold is for 2-D latents: "
                          "pass --dims I,J to vary two of them (the others at the prior's mean)")
    dims = tuple(args.dims) if args.dims is not None else (0, 1)
    if len(dims) != 2:
        raise VaekitError("--dims must name exactly two dimensions, e.g. 0,1")
    out = latent.manifold(r.model, args.steps, dims)
    write_decoded(args.out, r.model, out, ncol=args.steps)
    print(f"wrote a {args.steps}x{args.steps} manifold of dimensions {dims[0]},{dims[1]} to {args.out}")
    return 0
