"""Out-of-distribution detection on greyscale images, both directions of one pair: a model trained
on MNIST scores MNIST test digits against CIFAR-10 test images made 28x28 grey, and a model trained
on those grey CIFAR-10 images scores them against MNIST digits (the direction where likelihood
fails: the simpler digits get the higher likelihood; Nalisnick et al. 2019). Fashion-MNIST is not in
../shared/data, so MNIST and grey CIFAR-10 stand in for the Fashion-MNIST/MNIST pair.

Each direction trains two small MLP VAEs with an 8-bit likelihood (a discretized logistic per pixel,
so -log p(x) and the PNG code length are both nats of the 8-bit image): the model, on N training
images, and the background of the likelihood ratio, on the same images perturbed by
vaekit.ood.perturb (each pixel replaced by a uniform level with probability --mu). Then every score
of the `vaekit score` registry named in SCORES is computed on the in-distribution test images
(label 0) and the out-of-distribution ones (label 1), and its AUROC printed. Typicality is scored
per example (--group 1) and over groups of --group consecutive images of one set.

With --colour-run RUN (a run trained on CIFAR-10 in colour, e.g. by benchmarks/cifar10_bpd.py),
also the colour pair: that model scores CIFAR-10 test images against MNIST digits padded to 32x32
and repeated over 3 channels (every score but likelihood-ratio, which needs a colour background
run: --colour-background RUN2). --colour-mnist adds the other colour direction: a model (and
background) trained like the grey ones on MNIST as 32x32x3 scores those digits against CIFAR-10 in
colour. --no-grey skips the grey pair.

    nice -n 5 python benchmarks/ood_images.py     # 35 min on 2 cores shared with other jobs
    python benchmarks/ood_images.py --no-grey --colour-run ../runs/cifar-bpd --samples 20
    python benchmarks/ood_images.py --no-grey --colour-mnist --test 500 --samples 10
    python benchmarks/ood_images.py --train 2000 --test 200 --epochs 1 --samples 8   # 1.5 min
    python benchmarks/ood_images.py --train 20000 --epochs 10 --samples 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import vaekit
from vaekit import anomaly, ood
from vaekit.config import Config
from vaekit.data import dataset_from_arrays
from vaekit.datasets import read_idx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCORES = ["elbo", "iw-nll", "complexity", "likelihood-ratio", "typicality"]


def mnist(split: str) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits."""
    stem = "train" if split == "train" else "t10k"
    return read_idx(SHARED / "mnist" / f"{stem}-images-idx3-ubyte.gz")


def cifar_grey(split: str) -> np.ndarray:
    """(N, 28, 28) uint8: CIFAR-10 made grey (ITU-R 601 luma, Pillow's 'L') and resized to 28x28
    (Pillow's bilinear), shuffled once (the file is sorted by class)."""
    from PIL import Image

    with np.load(SHARED / "cifar10" / "cifar10.npz") as z:
        x = z["x_train" if split == "train" else "x_test"]
    x = x[np.random.default_rng(0).permutation(len(x))]
    return np.stack([np.asarray(Image.fromarray(img).convert("L").resize((28, 28),
                                                                         Image.BILINEAR))
                     for img in x])


def train(x: np.ndarray, args, out: Path):
    """A small 8-bit MLP VAE of x ((N, 28, 28) or (N, 3, 32, 32) uint8); returns the vaekit Run."""
    cfg = Config.from_flat({"likelihood": "discretized-logistic", "mixtures": 1,
                            "backbone": "mlp", "hidden": [args.hidden], "latent_dim": args.latent,
                            "epochs": args.epochs, "batch_size": 128, "patience": 0,
                            "seed": args.seed})
    ds, cfg = dataset_from_arrays(x, cfg, x_test=x[:1])
    return vaekit.train(cfg, out=out, dataset=ds, quiet=True, hooks=[])


def direction(name: str, x_train: np.ndarray, x_in: np.ndarray, x_out: np.ndarray, args,
              tmp: Path) -> dict[str, float]:
    """AUROC of every score for one (model data, in-distribution test, out-of-distribution) triple."""
    tick = time.perf_counter()
    run = train(x_train, args, tmp / f"{name}-model")
    bg = train(ood.perturb(x_train, args.mu, seed=args.seed), args, tmp / f"{name}-background")
    print(f"{name}: trained the model and its background in {time.perf_counter() - tick:.0f} s",
          flush=True)
    # typicality's entropy from training images that are not the scored sets
    return scored(run, x_in, x_out, x_train[-args.test:], bg.model, args, SCORES)


def mnist_colour(split: str) -> np.ndarray:
    """(N, 3, 32, 32) uint8: MNIST digits padded with 2 black pixels a side, on 3 equal channels."""
    x = np.pad(mnist(split), ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[:, None], 3, axis=1)


def cifar_colour(split: str) -> np.ndarray:
    """(N, 3, 32, 32) uint8 CIFAR-10 in colour, shuffled once as cifar_grey shuffles it."""
    with np.load(SHARED / "cifar10" / "cifar10.npz") as z:
        x = z["x_train" if split == "train" else "x_test"]
    return x[np.random.default_rng(0).permutation(len(x))].transpose(0, 3, 1, 2)


def scored(run, x_in: np.ndarray, x_out: np.ndarray, x_val: np.ndarray, background, args,
           methods: list[str]) -> dict[str, float]:
    """AUROC of every score in methods of a trained run: in-distribution x_in (label 0) against
    x_out (label 1); x_val (neither) gives typicality's entropy."""
    model = run.model
    data = torch.cat([model.prepare(x_in), model.prepare(x_out)])
    y = np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
    ref = anomaly.Reference(background=background, validation=model.prepare(x_val), group=1)
    out = {}
    for method in methods:
        tick = time.perf_counter()
        ref.group = 1
        s = anomaly.score(model, data, method, args.samples if method != "elbo" else None,
                          seed=args.seed, ref=ref).double().numpy()
        out[method] = roc_auc_score(y, s)
        if method == "typicality" and args.group > 1:  # groups of one set each: both sizes divide
            ref.group = args.group
            g = anomaly.score(model, data, method, args.samples, seed=args.seed, ref=ref)
            out[f"typicality (groups of {args.group})"] = roc_auc_score(y[::args.group],
                                                                      g.numpy()[::args.group])
        print(f"  {method}: AUROC {out[method]:.4f} ({time.perf_counter() - tick:.0f} s)",
              flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=10_000, help="training images (default 10000)")
    p.add_argument("--test", type=int, default=1000, help="images per scored set (default 1000)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--samples", type=int, default=50, help="importance samples per example")
    p.add_argument("--mu", type=float, default=0.2, help="background perturbation rate")
    p.add_argument("--group", type=int, default=10, help="typicality group size (also 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--colour-run", help="a run trained on CIFAR-10 in colour: score the colour pair")
    p.add_argument("--colour-background", help="its background run (for likelihood-ratio)")
    p.add_argument("--colour-mnist", action="store_true", help="train on MNIST as 32x32x3 and "
                   "score it against CIFAR-10 in colour")
    p.add_argument("--no-grey", action="store_true", help="skip the grey pair (two trainings)")
    args = p.parse_args()
    if args.test % args.group:
        p.error("--test must be a multiple of --group (each group holds one set's images)")
    torch.set_num_threads(args.threads)
    results = {}
    if not args.no_grey:
        m_train, m_test = mnist("train")[:args.train], mnist("test")[:args.test]
        c_train, c_test = cifar_grey("train")[:args.train], cifar_grey("test")[:args.test]
        with tempfile.TemporaryDirectory(prefix="vaekit-ood-") as tmp:
            results["MNIST model: MNIST vs grey CIFAR-10"] = direction(
                "mnist", m_train, m_test, c_test, args, Path(tmp))
            results["grey CIFAR-10 model: grey CIFAR-10 vs MNIST"] = direction(
                "cifar-grey", c_train, c_test, m_test, args, Path(tmp))
    if args.colour_run:
        run = vaekit.load(args.colour_run)
        bg = vaekit.load(args.colour_background).model if args.colour_background else None
        methods = [m for m in SCORES if bg is not None or m != "likelihood-ratio"]
        c_test = cifar_colour("test")
        print(f"colour CIFAR-10 model {args.colour_run}: CIFAR-10 vs MNIST as 32x32x3", flush=True)
        results["colour CIFAR-10 model: CIFAR-10 vs MNIST 32x32x3"] = scored(
            run, c_test[:args.test], mnist_colour("test")[:args.test], c_test[-args.test:], bg,
            args, methods)
    if args.colour_mnist:
        c_test = cifar_colour("test")[:args.test]
        with tempfile.TemporaryDirectory(prefix="vaekit-ood-") as tmp:
            results["MNIST 32x32x3 model: MNIST 32x32x3 vs CIFAR-10"] = direction(
                "mnist-colour", mnist_colour("train")[:args.train], mnist_colour("test")[:args.test],
                c_test, args, Path(tmp))
    if not results:
        p.error("nothing to score: --no-grey without --colour-run or --colour-mnist")
    columns = list(dict.fromkeys(c for r in results.values() for c in r))
    trained = not args.no_grey or args.colour_mnist
    grey = (f"models trained here: {args.train} training images, {args.epochs} epochs, MLP "
            f"{args.hidden}, latent {args.latent}, background mu {args.mu}; " if trained else "")
    print(f"\nAUROC (out-of-distribution = positive); {grey}{args.samples} importance samples, "
          f"{args.test} + {args.test} test images, seed {args.seed}\n")
    print("| pair | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for pair, r in results.items():
        print(f"| {pair} | " + " | ".join(f"{r[c]:.4f}" if c in r else "-" for c in columns) + " |")


if __name__ == "__main__":
    main()
