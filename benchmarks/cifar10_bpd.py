"""CIFAR-10 bits/dim of a conv VAE against wall time: ELBO, and importance-sampled log p(x).

Trains a conv VAE (`--backbone conv`, --channels, --blocks, --latent-dim) on CIFAR-10 with the
likelihood --likelihood (default discretized-logistic, the 8-bit likelihood of PixelCNN++/VDVAE)
through `vaekit.train` into the run folder --out (outside the repo; continue it with --resume, e.g.
with a larger --epochs), on --threads CPU threads (2 by default, as the target assumes). Then
evaluates the best epoch's weights (by validation ELBO) on the test images:

- test ELBO (single-sample, as `vaekit train` reports it) on all --test test images;
- importance-sampled log p(x) with K = --iw-samples (>= 100) draws from q(z|x) on the first
  --iw-n (1,000) of them (`vaekit.evaluate.log_likelihood`, Burda et al. 2015), an upper bound on
  -log p(x) in bits/dim that tightens as K grows.

bits/dim = -(nats per example) / (C*H*W ln 2), with C*H*W = 3*32*32. The figures are in bits/dim
of the data as given (8-bit values): for a discrete likelihood (a pmf over the 256 levels) they
compare with published figures (4.51-4.54 for a plain convolutional VAE; but see the data's README:
this CIFAR-10 copy was JPEG re-encoded); for a continuous one (gaussian) they are a density's, which
is only comparable once the data are dequantized, and a bernoulli on grey levels is no likelihood
of 8-bit data at all: both are printed with that caveat.

Prints, per epoch: the cumulative training seconds (vaekit's clock of the minibatch steps, kept
across resumes) and the validation ELBO in bits/dim; then the test figures and this call's wall time.

    python benchmarks/cifar10_bpd.py --out /tmp/cifar-bpd --epochs 30            # the 2-hour job
    python benchmarks/cifar10_bpd.py --out /tmp/cifar-bpd --epochs 40 --resume   # continue it
    python benchmarks/cifar10_bpd.py --out /tmp/bpd-check --epochs 1 --limit-train 2000 \\
        --test 200 --iw-n 50 --iw-samples 100                                    # a quick check
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit.data import dataset_from_arrays
from vaekit.errors import VaekitError
from vaekit.evaluate import log_likelihood

REPO = Path(__file__).resolve().parents[1]


def bits_per_dim(nats: float, dims: int) -> float:
    """-(nats per example) in bits per dimension: the cost of coding one value."""
    return -nats / (dims * math.log(2))


def comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10" / "cifar10.npz"),
                   help=".npz with x_train, x_test (N, 32, 32, 3) uint8")
    p.add_argument("--out", required=True, help="run folder (outside the repo)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--likelihood", default="discretized-logistic")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--channels", type=comma_ints, default=[32, 64, 128])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--limit-train", type=int, default=0,
                   help="train on N (shuffled) training images, 0: all 50,000 (10%% of them validate)")
    p.add_argument("--test", type=int, default=10000, help="test images for the test ELBO")
    p.add_argument("--iw-samples", type=int, default=100, help="K for the importance-sampled bound")
    p.add_argument("--iw-n", type=int, default=1000, help="test images for the IS estimate")
    return p.parse_args()


def cifar(path: str, limit_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) uint8 (N, 32, 32, 3); the files are sorted by class, so both are shuffled
    (seeded, the same on resume)."""
    with np.load(path) as f:
        x, x_test = f["x_train"], f["x_test"]
    rng = np.random.default_rng(seed)
    return x[rng.permutation(len(x))[:limit_train or None]], x_test[rng.permutation(len(x_test))[:n_test]]


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    x, x_test = cifar(args.data, args.limit_train, args.test, args.seed)
    try:
        cfg = vaekit.Config.from_flat({
            "backbone": "conv", "likelihood": args.likelihood, "channels": args.channels,
            "blocks": args.blocks, "latent_dim": args.latent_dim, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "patience": 0, "seed": args.seed,
            "threads": args.threads})
        ds, cfg = dataset_from_arrays(x, cfg, x_test=x_test)
        dims = math.prod(ds.shape)
        print(f"CIFAR-10 {args.data}: {len(ds.x_train)} train / {len(ds.x_val)} validation / "
              f"{len(ds.x_test)} test images; conv VAE channels {args.channels} blocks {args.blocks}"
              f" L={args.latent_dim}, likelihood {args.likelihood}, batch {args.batch_size}, lr "
              f"{args.lr}, {torch.get_num_threads()} threads; run folder {args.out}", flush=True)
        run = vaekit.train(cfg, out=args.out, resume=args.resume, quiet=True, hooks=[], dataset=ds)
    except VaekitError as e:
        raise SystemExit(f"error: {e}") from None
    model = run.model
    if model.likelihood.continuous:
        print(f"note: {args.likelihood} is a density: bits/dim below are of a density of the "
              "8-bit values (not dequantized), not comparable with discrete figures")
    elif args.likelihood == "bernoulli":
        print("note: a bernoulli on grey levels is no likelihood of 8-bit data; its bits/dim "
              "are not comparable with published figures")
    print(f"{'epoch':>5} {'train s (cum.)':>14} {'val ELBO bits/dim':>18}")
    seconds = 0.0
    for row in run.metrics:
        seconds += row["seconds"]
        print(f"{row['epoch']:5d} {seconds:14.0f} {bits_per_dim(row['val_elbo'], dims):18.3f}")
    test = run.summary["test"]
    print(f"test ELBO (1 sample per image, {test['n']} images, best epoch "
          f"{run.summary['best_epoch']}): {bits_per_dim(test['elbo'], dims):.3f} bits/dim "
          f"({-test['elbo']:.1f} nats per image)", flush=True)
    tick = time.perf_counter()
    with torch.no_grad():
        ll = log_likelihood(model, ds.x_test[:args.iw_n], args.iw_samples)
    print(f"importance-sampled log p(x), K={args.iw_samples}, first {len(ll)} test images: "
          f"{bits_per_dim(ll.mean().item(), dims):.3f} bits/dim ({-ll.mean().item():.1f} nats "
          f"per image; {time.perf_counter() - tick:.0f}s)")
    print(f"training seconds in all (across resumes): {seconds:.0f}; this call's wall time: "
          f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
