"""vaekit shift"""

from __future__ import annotations

import torch

from .. import latent
from ..errors import VaekitError
from ..outputs import EXAMPLE_SUFFIXES, check_out, write_decoded
from .common import load_run
from .data_args import add_data_arguments, check_index, load_data

HELP = ("Attribute vectors: move the encoding of example --index along (mean code of label "
        "--toward - mean code of label --away, default all others) with strength 0..s, decode; "
        "--out: a PNG grid for image data, else .npy (or .csv).")


def add_arguments(p) -> None:
    add_data_arguments(p, "labelled examples")
    p.add_argument("--index", type=int, required=True, help="example to move")
    p.add_argument("--toward", required=True, metavar="LABEL_A", help="label to move toward")
    p.add_argument("--away", metavar="LABEL_B", help="label to move away from (default: every "
                   "example not labelled LABEL_A)")
    p.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="largest multiple of the vector added (default: 1)")
    p.add_argument("--steps", type=int, default=6, help="strengths from 0 to S (default: 6)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")


def run(args) -> int:
    if args.steps < 1:
        raise VaekitError("--steps must be >= 1")
    check_out(args.out, EXAMPLE_SUFFIXES)
    r = load_run(args)
    x, y = load_data(r, args)
    if y is None:
        raise VaekitError("shift needs labelled data (a label column via the run's "
                          "--label-column, y in an .npz, or image subfolders)")
    i = check_index(x, args.index)
    mu = latent.encode(r.model, x).mean
    vector = latent.attribute_vector(mu, y, args.toward, args.away)
    strengths = torch.linspace(0, args.strength, args.steps)
    out = latent.shift(r.model, mu[i], vector, strengths)
    write_decoded(args.out, r.model, out, ncol=args.steps)
    print(f"wrote example {i} shifted toward {args.toward!r} (strength 0..{args.strength:g}, "
          f"|vector| = {float(vector.norm()):.2f}) to {args.out}")
    return 0
