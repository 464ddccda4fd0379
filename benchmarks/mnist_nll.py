"""Benchmark: test log p(x) on dynamically binarized MNIST (Burda et al. 2015 protocol) for the
standard VAE (`mnist-nll`), the VampPrior (`mnist-nll-vamp`) and the best configurations found,
the VampPrior and the two-layer VampPrior trained on the IWAE bound with k=5 (`mnist-nll-vamp-iwae`,
`mnist-nll-hier-vamp-iwae`), or the presets named
by --presets (also `mnist-nll-iaf`, the IAF posterior, `mnist-nll-hier`, two stochastic layers,
`mnist-nll-hier-vamp`, two layers under a VampPrior, and `mnist-nll-iwae`), beside the published
and pythae figures.

Each preset trains into RUNS/NAME (keep RUNS outside the repository) with resume: running the script
again continues every run where it stopped, up to its preset's epochs (the 3 CPU-hour budget on one
thread) or --epochs (so a long budget can span sessions; a finished run is only evaluated). Then,
per run: the test ELBO, the importance-sampled log p(x) with K = --k draws over the first --n test
images (all 10,000 by default) with its standard error, the training wall time and the epochs.
Negative log-likelihoods (NLL = -log p(x)) in nats.

    python benchmarks/mnist_nll.py --runs ~/vaekit-nll --data-dir ../shared/data/mnist
    python benchmarks/mnist_nll.py --runs /tmp/nll-check --epochs 1 --n 20 --k 50   # a check

The default protocol is the published one: K=5000, all 10,000 test images (about 15 minutes per
standard model on one thread, more for vamp and iaf).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vaekit import Config, train
from vaekit.data import load_for_model
from vaekit.evaluate import evaluate, log_likelihood, summarize_log_likelihood
from vaekit.presets import PRESETS, preset

# Test NLL in nats, dynamically binarized MNIST, K=5000 (pythae: its reproduction table).
PUBLISHED = [
    ("VAE (Burda et al. 2015, Table 1; 3,280 epochs)", 86.76),
    ("IWAE k=50 (Burda et al. 2015)", 84.78),
    ("VAE 2 layers (Burda et al. 2015; 3,280 epochs)", 85.33),
    ("IWAE 2 layers (Burda et al. 2015)", 82.90),
    ("VampPrior K=500 (Tomczak & Welling 2018)", 85.57),
    ("HVAE 2 layers + VampPrior (Tomczak & Welling 2018)", 83.19),
    ("pythae VAE", 89.78),
    ("pythae IWAE k=50", 86.82),
    ("pythae VampPrior K=500", 85.79),
    ("pythae HVAE", 86.21),
    ("pythae MIWAE", 85.09),
    ("pythae PIWAE", 84.58),
]


def run_preset(name: str, args) -> dict:
    """Train (or continue) RUNS/NAME up to the preset's epochs (or --epochs), then measure it on
    the test set."""
    flat = preset(name) | {"data_dir": args.data_dir, "threads": args.threads}
    if args.epochs is not None:
        flat["epochs"] = args.epochs
    out = Path(args.runs) / name
    run = train(Config.from_flat(flat), out=out, resume=(out / "config.yaml").is_file(),
                quiet=args.quiet)
    model = run.model.eval()
    x, _ = load_for_model(model, run.config, None, "test")
    x = x[:args.n]
    torch.manual_seed(0)
    ev = evaluate(model, x, information=False)  # the O(N^2) I(X;Z) estimate is not needed
    t = time.perf_counter()
    ll = summarize_log_likelihood(log_likelihood(model, x, args.k, chunk_size=args.chunk_size),
                                  args.k)
    s = run.summary
    return {"name": name, "nll": -ll["log_likelihood"], "stderr": ll["log_likelihood_stderr"],
            "elbo": ev["elbo"], "active": ev.get("active_units"), "epochs": s.get("epochs"),
            "train_s": s.get("train_seconds"), "eval_s": time.perf_counter() - t, "n": len(x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="folder for the run folders (outside the repo)")
    ap.add_argument("--data-dir", default="data", help="folder holding mnist/ (the IDX files)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="train each run up to this many epochs (default: each preset's own, the "
                         "3 CPU-hour budget on one thread: "
                         + ", ".join(f"{name} {flat['epochs']}" for name, flat in PRESETS.items())
                         + ")")
    ap.add_argument("--presets", type=lambda text: text.split(","),
                    default=["mnist-nll", "mnist-nll-vamp", "mnist-nll-vamp-iwae",
                             "mnist-nll-hier-vamp-iwae"],
                    help="comma-separated presets to train and measure, in this order "
                         f"(of {', '.join(PRESETS)})")
    ap.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    ap.add_argument("--n", type=int, default=10_000, help="test images (the first N)")
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.presets) - set(PRESETS))
    if unknown:
        ap.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    rows = [run_preset(name, args) for name in args.presets]
    print(f"\ntest NLL (nats), dynamically binarized MNIST, K={args.k}, first {rows[0]['n']} test "
          f"images, {args.threads} thread(s)")
    print(f"{'model':<48} {'NLL':>7} {'s.e.':>5} {'-ELBO':>7} {'active':>6} {'epochs':>6} "
          f"{'train h':>7} {'eval min':>8}")
    for r in rows:
        print(f"{'vaekit ' + r['name']:<48} {r['nll']:7.2f} {r['stderr']:5.2f} {-r['elbo']:7.2f} "
              f"{r['active'] if r['active'] is not None else '-':>6} {r['epochs']:>6} "
              f"{r['train_s'] / 3600:7.2f} {r['eval_s'] / 60:8.1f}")
    for what, nll in PUBLISHED:
        print(f"{what:<48} {nll:7.2f}")


if __name__ == "__main__":
    main()
