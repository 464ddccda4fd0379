"""vaekit sample"""

from __future__ import annotations

import torch

from ..errors import VaekitError
from ..outputs import write_examples
from ..runs import load

HELP = ("Generate new examples: z ~ N(0, T^2 I) through the decoder; .png writes an image grid "
        "(image data), .npy/.csv the values in the data's own units.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("-n", "--num", type=int, default=64, help="number of examples (default: 64)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png, .npy or .csv")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="scale of the prior's standard deviation (default: 1)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--mean", dest="draw", action="store_false", default=False,
                     help="decode to the mean of p(x|z) (default)")
    how.add_argument("--draw", dest="draw", action="store_true", help="draw x ~ p(x|z)")


def run(args) -> int:
    if args.num < 1 or args.temperature < 0:
        raise VaekitError("-n must be >= 1 and --temperature >= 0")
    r = load(args.run_dir)
    g = torch.Generator().manual_seed(args.seed)
    x = r.model.sample(args.num, temperature=args.temperature, draw=args.draw, generator=g)
    write_examples(args.out, x, r.model.restore(x), image=len(r.model.input_shape) == 3)
    print(f"wrote {args.num} samples to {args.out}")
    return 0
