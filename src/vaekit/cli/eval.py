"""vaekit eval"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from ..errors import VaekitError
from ..evaluate import (
    ACTIVE_UNIT_THRESHOLD,
    CHUNK_SIZE,
    elbo_per_example,
    evaluate,
    log_likelihood,
    summarize_log_likelihood,
)
from ..outputs import TABLE_SUFFIXES, check_out, write_table
from ..runs import write_json
from .common import add_seed_option, check_seed_option, load_run
from .data_args import add_data_arguments, load_data, split_of

HELP = ("Evaluate a trained run on data: ELBO, E_q log p(x|z) (reconstruction), KL, rate, "
        "distortion, mutual information I(X;Z) (estimate and bounds), active units, and with "
        "--iw-samples K the importance-sampled log p(x); nats per example. On the run's own "
        "data (a whole split, no --limit) the result is also saved to RUN_DIR/eval-SPLIT.json.")


def add_arguments(p) -> None:
    add_data_arguments(p, "data to evaluate", stream=True)
    p.add_argument("--mc-samples", type=int, default=1, metavar="N",
                   help="draws of z per example for E_q log p(x|z) (default: 1)")
    p.add_argument("--iw-samples", type=int, metavar="K", help="also estimate log p(x) by "
                   "importance sampling with K draws from q(z|x) per example (e.g. 5000): adds "
                   "log_likelihood, log_likelihood_stderr and iw_samples")
    p.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, metavar="N",
                   help="draws of z decoded in one pass (examples x samples); memory is about N x "
                   f"(sum of layer widths) x 4 bytes x a few, whatever K (default: {CHUNK_SIZE})")
    p.add_argument("--per-example", metavar="FILE.csv", help="write per-example values (columns "
                   "index, elbo and, with --iw-samples, log_likelihood) to a .csv or .npy file")
    p.add_argument("--data-entropy", type=float, metavar="H", help="entropy of the data in nats "
                   "per example, if known: adds mutual_information_lower = H - distortion")
    p.add_argument("--active-threshold", type=float, default=ACTIVE_UNIT_THRESHOLD, metavar="T",
                   help="a latent unit is active if Cov_x(E_q[z_u]) > T (default: "
                        f"{ACTIVE_UNIT_THRESHOLD}, Burda et al. 2015)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N examples")
    add_seed_option(p, "the draws of z")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def check(args) -> None:
    problems = [msg for bad, msg in [
        (args.mc_samples < 1, "--mc-samples must be >= 1"),
        (args.iw_samples is not None and args.iw_samples < 1, "--iw-samples must be >= 1"),
        (args.chunk_size < 1, "--chunk-size must be >= 1"),
        (args.limit is not None and args.limit < 1, "--limit must be >= 1"),
    ] if bad]
    if problems:
        raise VaekitError("; ".join(problems))
    check_seed_option(args)
    if args.per_example is not None:
        check_out(args.per_example, TABLE_SUFFIXES, "--per-example")


def run(args) -> int:
    check(args)
    r = load_run(args)
    x, _ = load_data(r, args)
    x = x[:args.limit] if args.limit else x
    torch.manual_seed(args.seed)
    result = evaluate(r.model, x, args.mc_samples, active_threshold=args.active_threshold,
                      data_entropy=args.data_entropy)
    columns = {"index": np.arange(len(x))}
    if args.per_example:  # the same seed, batches and draws as `evaluate`: the column's mean is elbo
        torch.manual_seed(args.seed)
        columns["elbo"] = elbo_per_example(r.model, x, args.mc_samples).numpy()
    if args.iw_samples:
        ll = log_likelihood(r.model, x, args.iw_samples, chunk_size=args.chunk_size,
                            progress=sys.stdout.isatty())
        result.update(summarize_log_likelihood(ll, args.iw_samples, r.model.input_shape))
        columns["log_likelihood"] = ll.numpy()
    if args.per_example:
        write_table(args.per_example, np.stack(list(columns.values()), 1), list(columns))
    if args.data is None and not args.limit:  # the run's own split, whole
        save_result(r.dir / f"eval-{split_of(args)}.json", result)
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key == "kl_per_dim":
            value = ("undefined (the KL is a Monte Carlo estimate of the whole vector)" if value is None
                     else " ".join(f"{v:.2f}" for v in value))
        elif isinstance(value, float):
            value = f"{value:.3f}"
        elif value is None:  # e.g. no ELBO for an autoencoder, no pairwise I(X;Z) estimate for iaf
            value = "n/a for this model (docs/evaluation.md)"
        print(f"{key:>24}  {value}")
    return 0


def save_result(path, result: dict) -> None:
    """Keep the result in the run folder; if that fails (read-only, full disk) the printed result
    is still right, so warn once and go on."""
    try:
        write_json(path, result)
    except OSError as e:
        print(f"vaekit eval: warning: could not save {path} ({e.strerror or e}); the result is "
              "printed but not kept in the run folder", file=sys.stderr)
