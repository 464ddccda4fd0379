"""Training throughput of the conv VAE on CIFAR-10: vaekit vs a textbook PyTorch loop, same net.

Both sides train the same network, vaekit's conv backbone (`nets.conv_encoder`/`nets.conv_decoder`
built from --channels and --blocks, so the textbook side imports the same builders), with a
Bernoulli likelihood on pixels scaled to [0, 1] (binary cross-entropy with logits, summed; not a
proper likelihood of 8-bit colour data, but one both sides compute identically), batch 128, Adam
1e-3, on the same training images for the same epochs. The textbook loop is written as
pytorch/examples `vae/main.py` writes it: a DataLoader over a TensorDataset, the encoder's output
split into mean and log-variance, the reparameterization by hand, the loss summed over the batch.

Both are timed the same way, by wall clock (time.perf_counter) around each epoch's minibatch steps,
with no per-epoch evaluation counted on either side: for vaekit the per-epoch `seconds` of its
metrics.jsonl (its own clock of the minibatch loop; its validation pass is timed apart), for the
textbook loop the same span of its loop. On a shared machine the load moves: the two sides alternate,
--repeats times each (textbook first), and the best (fastest) time of each is compared. Prints
images/s of each and their ratio, and the wall time of vaekit's whole train() call (per-epoch
validation, checkpoints, test evaluation, pictures).

    python benchmarks/conv_throughput.py --data ../shared/data/cifar10/cifar10.npz --threads 2
    python benchmarks/conv_throughput.py --limit-train 2000 --epochs 1 --threads 2    # brief
    python benchmarks/conv_throughput.py --device cuda --epochs 3      # on a GPU, both sides there

On a GPU (--device cuda) the textbook loop copies each batch from pinned host memory, as
pytorch/examples does with CUDA, and each timed epoch ends with torch.cuda.synchronize() (vaekit's
epoch ends by reading its loss sums back, which waits for the GPU too). TF32 stays as torch sets it
(off for matrix products, on for cuDNN convolutions) on both sides.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit.data import dataset_from_arrays
from vaekit.nets import NetOptions, conv_decoder, conv_encoder
from vaekit.runtime import resolve_device

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)


class TextbookConvVAE(nn.Module):
    def __init__(self, latent_dim: int, opts: NetOptions):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = conv_encoder(SHAPE, 2 * latent_dim, opts)
        self.decoder = conv_decoder(latent_dim, SHAPE, opts)  # Bernoulli logits, one per value

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def textbook_loss(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_textbook(x_train: torch.Tensor, args, device: torch.device) -> float:
    """Seconds of the epochs' minibatch steps."""
    torch.manual_seed(args.seed)
    model = TextbookConvVAE(args.latent_dim, NetOptions(channels=tuple(args.channels),
                                                        blocks=args.blocks)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = DataLoader(TensorDataset(x_train), batch_size=128, shuffle=True,
                       pin_memory=device.type == "cuda")
    seconds = 0.0
    for _ in range(args.epochs):
        tick = time.perf_counter()
        model.train()
        for (x,) in train:
            x = x.to(device, non_blocking=True)
            opt.zero_grad()
            logits, mu, logvar = model(x)
            loss = textbook_loss(logits, x, mu, logvar)
            loss.backward()
            opt.step()
        sync(device)
        seconds += time.perf_counter() - tick
    return seconds


def warm_up(args, device: torch.device) -> None:
    """A few untimed steps of the same net first, so that neither side pays for the first calls
    of the conv kernels (one-time setup; cuDNN's choice of algorithms on a GPU) in its timing."""
    model = TextbookConvVAE(args.latent_dim, NetOptions(channels=tuple(args.channels),
                                                        blocks=args.blocks)).to(device)
    x = torch.rand(128, *SHAPE, device=device)
    for _ in range(3):
        logits, mu, logvar = model(x)
        textbook_loss(logits, x, mu, logvar).backward()
    sync(device)


def run_vaekit(cfg, ds) -> tuple[float, float]:
    """(seconds of the epochs' minibatch steps, by vaekit's own clock; wall time of train())."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = vaekit.train(cfg, out=Path(tmp) / "run", quiet=True, hooks=[], dataset=ds)
        wall = time.perf_counter() - start
        return sum(r["seconds"] for r in run.metrics), wall


def comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10" / "cifar10.npz"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--channels", type=comma_ints, default=[32, 64, 128])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=10000,
                   help="the first N (shuffled) training images; 0: all 50,000")
    p.add_argument("--repeats", type=int, default=2, help="alternating timings of each side")
    p.add_argument("--test", type=int, default=1000, help="test images vaekit evaluates at the end")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both sides train there)")
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with np.load(args.data) as f:  # (N, 32, 32, 3) uint8, channels last, sorted by class
        x, x_test = f["x_train"], f["x_test"]
    rng = np.random.default_rng(args.seed)
    x = x[rng.permutation(len(x))[:args.limit_train or None]]
    x_test = x_test[rng.permutation(len(x_test))[:args.test]]
    cfg = vaekit.Config.from_flat({"backbone": "conv", "likelihood": "bernoulli",
                                   "channels": args.channels, "blocks": args.blocks,
                                   "latent_dim": args.latent_dim, "epochs": args.epochs,
                                   "batch_size": 128, "lr": 1e-3, "patience": 0, "seed": args.seed,
                                   "threads": args.threads, "device": str(device)})
    ds, cfg = dataset_from_arrays(x, cfg, x_test=x_test)  # [0, 1], (3, 32, 32), 10% validation
    n = len(ds.x_train)
    images = n * args.epochs
    print(f"CIFAR-10 {args.data}: conv VAE (channels {','.join(map(str, args.channels))}, blocks "
          f"{args.blocks}, L={args.latent_dim}), bernoulli likelihood on [0,1] pixels (both sides), "
          f"batch 128, Adam 1e-3, {args.epochs} epoch(s) of {n} training images, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    warm_up(args, device)
    seconds: dict[str, list[float]] = {"textbook": [], "vaekit": []}
    walls = []
    for _ in range(args.repeats):
        seconds["textbook"].append(run_textbook(ds.x_train.reshape(n, *SHAPE), args, device))
        train_seconds, wall = run_vaekit(cfg, ds)
        seconds["vaekit"].append(train_seconds)
        walls.append(wall)
    theirs, ours, wall = min(seconds["textbook"]), min(seconds["vaekit"]), min(walls)
    print("images/s = training images / wall-clock seconds of the minibatch steps (time.perf_counter), "
          f"best of {args.repeats} alternating runs per side; each run: "
          + "; ".join(f"{k} " + ", ".join(f"{images / t:.1f}" for t in v) for k, v in seconds.items()))
    print(f"{'textbook loop':>14} {'vaekit':>9} {'ratio':>7}")
    print(f"{images / theirs:14.1f} {images / ours:9.1f} {theirs / ours:6.2f}x")
    print(f"vaekit wall time of the whole train() call (per-epoch validation, checkpoints, test "
          f"evaluation on {len(ds.x_test)} images, pictures): {wall:.1f}s")


if __name__ == "__main__":
    main()
