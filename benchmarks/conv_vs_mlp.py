"""Conv vs MLP backbone on MNIST: the same VAE otherwise, the same epochs and seed, test ELBO of each.

Both train a Bernoulli VAE on MNIST in [0, 1] (grey levels, not binarized) with --latent-dim
latent dimensions, batch 128, Adam 1e-3, no early stopping, on the same 54,000 training images (the
same split, the same seed), through `vaekit.train`; the test ELBO is that of the best epoch's
weights (by validation ELBO), as `vaekit train` reports it. Nets: `--backbone mlp` with --hidden
(784-400-L-400-784 by default) and `--backbone conv` with --channels and --blocks (see nets.py).

Prints, side by side: test ELBO (nats per example; higher is better), its reconstruction and KL
terms, parameter counts and the wall time of each whole train() call (time.perf_counter).

    python benchmarks/conv_vs_mlp.py --data-dir ../shared/data/mnist --epochs 5 --threads 2
    python benchmarks/conv_vs_mlp.py --epochs 2 --limit-train 10000     # quicker, rougher
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import vaekit
from vaekit.data import load_dataset

REPO = Path(__file__).resolve().parents[1]


def comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def train_one(base: dict, backbone: str, ds, out: Path) -> tuple[dict, int, float]:
    """(test metrics of the best weights, parameter count, wall seconds of train())."""
    cfg = vaekit.Config.from_flat(base | {"backbone": backbone})
    start = time.perf_counter()
    run = vaekit.train(cfg, out=out / backbone, quiet=True, hooks=[], dataset=ds)
    wall = time.perf_counter() - start
    return run.summary["test"], sum(p.numel() for p in run.model.parameters()), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=comma_ints, default=[400], help="mlp widths, e.g. 400 or 512,256")
    p.add_argument("--channels", type=comma_ints, default=[32, 64, 128], help="conv widths per level")
    p.add_argument("--blocks", type=int, default=1, help="conv residual blocks per level")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N training "
                   "images only (quick checks; the validation and test splits stay whole)")
    args = p.parse_args()
    base = {"data": "mnist", "data_dir": args.data_dir, "likelihood": "bernoulli",
            "latent_dim": args.latent_dim, "hidden": args.hidden, "channels": args.channels,
            "blocks": args.blocks, "epochs": args.epochs, "batch_size": 128, "lr": 1e-3,
            "patience": 0, "seed": args.seed, "threads": args.threads}
    ds, _ = load_dataset(vaekit.Config.from_flat(base))
    if args.limit_train:
        ds = replace(ds, x_train=ds.x_train[:args.limit_train],
                     y_train=None if ds.y_train is None else ds.y_train[:args.limit_train])
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"MNIST [0,1], bernoulli VAE, L={args.latent_dim}, batch 128, Adam 1e-3, {args.epochs} "
          f"epochs, seed {args.seed}, {len(ds.x_train)} training / {len(ds.x_test)} test images, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    nets = {"mlp": f"hidden {','.join(map(str, args.hidden))}",
            "conv": f"channels {','.join(map(str, args.channels))}, blocks {args.blocks}"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in nets:
            results[backbone] = train_one(base, backbone, ds, Path(tmp))
    print(f"{'backbone':9} {'nets':28} {'params':>9} {'test ELBO':>10} {'recon':>9} {'KL':>7} "
          f"{'wall s':>8}")
    for backbone, (test, n_params, wall) in results.items():
        print(f"{backbone:9} {nets[backbone]:28} {n_params:9d} {test['elbo']:10.2f} "
              f"{test['reconstruction']:9.2f} {test['kl']:7.2f} {wall:8.1f}")
    gain = results["conv"][0]["elbo"] - results["mlp"][0]["elbo"]
    print(f"conv - mlp test ELBO: {gain:+.2f} nats per example (single-sample ELBO of the best "
          "epoch's weights, higher is better)")


if __name__ == "__main__":
    main()
