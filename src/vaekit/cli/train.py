"""vaekit train"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..config import Config, load_config_file
from ..distributed import PeerFailed, launch
from ..errors import VaekitError
from ..presets import PRESETS, preset
from ..runs import read_config
from ..train import train
from .common import add_config_options, given_options

HELP = ("Train a VAE (or the autoencoder baseline). With no options: the bundled 8x8 digits, "
        "under a minute on a CPU. Prints the run folder and the test ELBO.")
PEER_GRACE_S = 2.0
RESUMABLE = {"epochs", "patience", "threads", "workers"}


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file with the same keys as the "
                   "options below; options given on the command line override it")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named config (a "
                   "published benchmark); --config and options override it")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create "
                   "(default: runs/DATA-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly "
                   "where it stopped (may raise --epochs or --patience); a finished or stopped "
                   "run trains no further, a folder without a checkpoint starts over")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines "
                   "(the run folder and test ELBO are still printed, warnings still go to stderr)")
    p.add_argument("--nproc", type=int, metavar="N", help="train with N processes on this "
                   "machine (DistributedDataParallel; gloo on cpu, nccl on cuda, one GPU each): "
                   "launches `torchrun --nproc_per_node N -m vaekit train ...`; several machines: "
                   "run torchrun yourself (docs/scale.md). --batch-size stays the global batch")
    add_config_options(p)


def run(args) -> int:
    if args.nproc is not None and args.nproc < 1:
        raise VaekitError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(without_nproc(args.argv[1:]), args.nproc)
    try:
        return train_here(args)
    except PeerFailed:  # a rank other than 0: rank 0 prints the one line; leave it the time to,
        time.sleep(PEER_GRACE_S)  # as the launcher stops every rank once one has ended
        return 2


def without_nproc(argv: list[str]) -> list[str]:
    """The command line each rank runs: this one less --nproc N."""
    out, skip = [], False
    for a in argv:
        if not skip and a != "--nproc" and not a.startswith("--nproc="):
            out.append(a)
        skip = a == "--nproc"
    return out


def train_here(args) -> int:
    options = given_options(args)
    if args.resume:
        extra = sorted(set(options) - RESUMABLE) + (["config"] if args.config else []) + (
            ["preset"] if args.preset else [])
        if extra:
            raise VaekitError(f"--resume continues a run with its own options; drop "
                              f"{', '.join('--' + e.replace('_', '-') for e in extra)} "
                              "(only --epochs, --patience and --threads may change)")
        flat = read_config(Path(args.resume)).to_flat() | options
        run = train(Config.from_flat(flat), out=args.resume, resume=True, quiet=args.quiet,
                    command=args.argv)
        return print_result(run) if run is not None else 0
    flat = (preset(args.preset) if args.preset else {}) | (
        load_config_file(args.config) if args.config else {})
    run = train(Config.from_flat(flat | options), out=args.out, quiet=args.quiet, command=args.argv)
    return print_result(run) if run is not None else 0


def print_result(run) -> int:
    """Where the run went and its test score, in two lines."""
    s = run.summary
    test = s["test"]
    what = "ELBO" if run.model.stochastic else "reconstruction log-likelihood"
    value = test["elbo"] if run.model.stochastic else test["reconstruction"]
    bits = f", {test['bits_per_dim']:.4f} bits/dim" if test.get("bits_per_dim") is not None else ""
    print(f"run: {run.dir}")
    print(f"test {what}: {value:.2f} nats per example{bits} (reconstruction "
          f"{test['reconstruction']:.2f}, kl {test['kl']:.2f}; best epoch {s['best_epoch']} of "
          f"{s['epochs']}, {s['train_seconds']:.1f}s)")
    return 0
