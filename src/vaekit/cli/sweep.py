"""vaekit sweep"""

from __future__ import annotations

from ..config import Config, load_config_file
from .common import add_config_options, given_options

HELP = ("Rate-distortion sweep: train one run per beta, then plot distortion against rate (with "
        "lines of constant ELBO) and write the table as CSV and HTML into --out.")


def add_arguments(p) -> None:
    p.add_argument("--beta", dest="betas", required=True, metavar="B1,B2,...",
                   help="comma list of KL weights, "
                   "one run each, e.g. 0.1,0.5,1,2,4")
    p.add_argument("--out", required=True, metavar="SWEEP_DIR", help="folder for the runs "
                   "(SWEEP_DIR/beta-B), sweep.csv, rate-distortion.png and index.html")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file with the train options below; "
                   "options given on the command line override it")
    p.add_argument("--resume", action="store_true", help="keep the finished runs in SWEEP_DIR, "
                   "continue interrupted ones, train the missing ones")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines "
                   "(warnings still go to stderr)")
    add_config_options(p, skip=("beta",))


def run(args) -> int:
    from ..sweep import parse_betas, sweep  # here: matplotlib loads only for the commands that draw

    betas = parse_betas(args.betas)
    flat = load_config_file(args.config) if args.config else {}
    flat.pop("beta", None)
    rows = sweep(Config.from_flat(flat | given_options(args)), betas, args.out, args.resume,
                 args.quiet)
    print(f"{'beta':>6} {'rate':>9} {'distortion':>11} {'elbo':>10} {'active':>6}")
    for r in rows:
        print(f"{r['beta']:6g} {r['rate']:9.2f} {r['distortion']:11.2f} {r['elbo']:10.2f} "
              f"{r['active_units']:6d}")
    print(f"sweep: {args.out}/index.html, {args.out}/sweep.csv")
    return 0
