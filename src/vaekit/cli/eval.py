"""vaekit eval"""

from __future__ import annotations

import json

from ..data import load_for_model
from ..evaluate import evaluate
from ..runs import load

HELP = ("Evaluate a trained run on data: ELBO, E_q log p(x|z) (reconstruction), KL, rate, "
        "distortion, active units; nats per example.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--data", help="other data to evaluate: a built-in name (its --split) or a "
                   "file/folder (every example); default: the run's own data")
    p.add_argument("--split", choices=("test", "train", "val"), default="test",
                   help="which split of the run's data (default: test)")
    p.add_argument("--mc-samples", type=int, default=1, metavar="N",
                   help="draws of z per example for E_q log p(x|z) (default: 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    r = load(args.run_dir)
    x, _ = load_for_model(r.model, r.config, args.data, args.split)
    result = evaluate(r.model, x, max(1, args.mc_samples))
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key == "kl_per_dim":
            value = " ".join(f"{v:.2f}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.3f}"
        print(f"{key:>15}  {value}")
    return 0
