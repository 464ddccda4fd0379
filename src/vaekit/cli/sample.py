"""vaekit sample"""

from __future__ import annotations

import math

import torch

from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_examples
from .common import add_compute_options, add_seed_option, check_seed_option, load_run

HELP = ("Generate new examples: z ~ p(z), the run's prior (N(0, T^2 I) for the standard normal; "
        "for a mog/vamp mixture a component is drawn, then its noise scaled by T), through the "
        "decoder; .png writes an image grid (image data), .npy/.csv the values in the data's own "
        "units.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("-n", "--num", type=int, default=64, help="number of examples (default: 64)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")
    add_seed_option(p, "the draws")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="scale of the prior's noise (of each mixture component's for mog/vamp), "
                   "finite and >= 0 (default: 1)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--mean", dest="draw", action="store_false", default=False,
                     help="decode to the mean of p(x|z) (default)")
    how.add_argument("--draw", dest="draw", action="store_true", help="draw x ~ p(x|z)")
    add_compute_options(p)


def check(args) -> None:
    problems = [msg for bad, msg in [
        (args.num < 1, f"-n must be >= 1, got {args.num}"),
        (not (math.isfinite(args.temperature) and args.temperature >= 0),
         f"--temperature must be a finite number >= 0, got {args.temperature}"),
    ] if bad]
    if problems:
        raise VaekitError("; ".join(problems))
    check_seed_option(args)


def run(args) -> int:
    check(args)
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    g = torch.Generator().manual_seed(args.seed)
    x = r.model.sample(args.num, temperature=args.temperature, draw=args.draw, generator=g)
    write_examples(args.out, x, r.model.restore(x), image=len(r.model.input_shape) == 3)
    print(f"wrote {args.num} samples to {args.out}")
    return 0
