"""Training throughput: vaekit vs the textbook PyTorch VAE loop, side by side in one run.

Both train the same 784-400-20 Bernoulli MLP VAE on MNIST in [0, 1] (not binarized), batch 128,
Adam 1e-3, on the same 54,000 training images for the same epochs, and evaluate on the same
validation images after every epoch. The textbook loop is the one in pytorch/examples `vae/main.py`:
a DataLoader over a TensorDataset, sigmoid + binary_cross_entropy summed, separate mean and
log-variance layers. Both sides are timed the same way, by wall clock (time.perf_counter), twice:

- training only: the epochs' minibatch steps, no per-epoch evaluation on either side (the same work);
- training + per-epoch validation: each side's whole epoch loop as it runs it. The textbook loop
  computes the validation ELBO; vaekit's loop computes the validation ELBO, its MI estimate (1000
  examples) and active units, and writes best.pt, last.pt and metrics.jsonl (more work per epoch).

Prints samples/s of each (training images per second of wall time), the ratios side by side, the
per-epoch cost of validation and bookkeeping on each side, and both test -ELBOs (nats per example).

    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --epochs 10
    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --device cuda --repeats 3

On a GPU (--device cuda) both sides train there: the textbook loop copies each batch from pinned host
memory as pytorch/examples does with CUDA, and each timed epoch ends with torch.cuda.synchronize()
(vaekit's epoch ends by reading its loss sums back, which waits for the GPU too).
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit.data import load_dataset
from vaekit.evaluate import evaluate
from vaekit.runtime import resolve_device

REPO = Path(__file__).resolve().parents[1]


class TextbookVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def textbook_loss(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def textbook_neg_elbo(model, loader, device) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for (x,) in loader:
            x = x.to(device)
            recon, mu, logvar = model(x)
            total += textbook_loss(recon, x, mu, logvar).item()
    return total / len(loader.dataset)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_textbook(ds, epochs: int, seed: int, device: torch.device) -> tuple[float, float, float]:
    """(seconds of training steps, seconds of the epoch loop with validation, test -ELBO)."""
    torch.manual_seed(seed)
    model = TextbookVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pin = device.type == "cuda"
    train = DataLoader(TensorDataset(ds.x_train), batch_size=128, shuffle=True, pin_memory=pin)
    val = DataLoader(TensorDataset(ds.x_val), batch_size=128, pin_memory=pin)
    train_seconds = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        tick = time.perf_counter()
        model.train()
        for (x,) in train:
            x = x.to(device, non_blocking=True)
            opt.zero_grad()
            recon, mu, logvar = model(x)
            loss = textbook_loss(recon, x, mu, logvar)
            loss.backward()
            opt.step()
        sync(device)
        train_seconds += time.perf_counter() - tick
        textbook_neg_elbo(model, val, device)
    loop_seconds = time.perf_counter() - start
    test = textbook_neg_elbo(model, DataLoader(TensorDataset(ds.x_test), batch_size=128), device)
    return train_seconds, loop_seconds, test


def run_vaekit(cfg, ds) -> tuple[float, float, float, float]:
    """(seconds of training steps, seconds of the epoch loop with validation, test -ELBO, wall time
    of the whole train() call).

    Training steps: the per-epoch `seconds` of metrics.jsonl, vaekit's own wall-clock time of each
    epoch's minibatch loop (its validation pass is timed after it, apart). The epoch loop: from the
    first call of train.train_epoch to the call of train.finish (test evaluation and pictures), which
    the wrappers below stamp without changing what they do."""
    loop = importlib.import_module("vaekit.train")  # the module (vaekit.train is the function)
    stamps: dict[str, float] = {}

    def stamped(name: str, fn):
        def call(*args, **kwargs):
            stamps.setdefault(name, time.perf_counter())
            return fn(*args, **kwargs)
        return call

    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(loop, "train_epoch", stamped("start", loop.train_epoch)), \
            mock.patch.object(loop, "finish", stamped("end", loop.finish)):
        start = time.perf_counter()
        run = vaekit.train(cfg, out=Path(tmp) / "run", quiet=True, hooks=[], dataset=ds)
        wall = time.perf_counter() - start
        train_seconds = sum(r["seconds"] for r in run.metrics)
        # the last epoch's weights: the same point as the textbook loop
        last = vaekit.load(Path(tmp) / "run", "last", cfg.train.device).model
        test = -evaluate(last, ds.x_test)["elbo"]
    return train_seconds, stamps["end"] - stamps["start"], test, wall


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda (both sides train there)")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternating runs of each side; the fastest of each is compared")
    args = p.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = vaekit.Config.from_flat({"data": "mnist", "data_dir": args.data_dir, "backbone": "mlp",
                                   "hidden": [400], "latent_dim": 20, "likelihood": "bernoulli",
                                   "epochs": args.epochs,
                                   "batch_size": 128, "lr": 1e-3, "patience": 0, "seed": args.seed,
                                   "device": str(device)})
    ds, cfg = load_dataset(cfg)
    print(f"MNIST [0,1], 784-400-20 bernoulli VAE, batch 128, Adam 1e-3, {args.epochs} epochs, "
          f"{len(ds.x_train)} training images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {device_name(device)}")
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternating, so a machine's drifting speed hits both sides
        ours.append(run_vaekit(cfg, ds))
        theirs.append(run_textbook(ds, args.epochs, args.seed, device))
    images = len(ds.x_train) * args.epochs
    if args.repeats > 1:
        print(f"training-only samples/s of each of {args.repeats} alternating runs: vaekit "
              + ", ".join(f"{images / r[0]:.0f}" for r in ours) + "; textbook "
              + ", ".join(f"{images / r[0]:.0f}" for r in theirs) + " (the fastest of each below)")
    ours_train, ours_loop = min(r[0] for r in ours), min(r[1] for r in ours)
    theirs_train, theirs_loop = min(r[0] for r in theirs), min(r[1] for r in theirs)
    ours_test, wall, theirs_test = ours[-1][2], min(r[3] for r in ours), theirs[-1][2]
    print("samples/s = training images / wall-clock seconds (time.perf_counter), same epochs both sides")
    print(f"{'':58} {'textbook':>9} {'vaekit':>9} {'ratio':>7}")
    for label, theirs, ours in [
            ("training only, no per-epoch evaluation on either side", theirs_train, ours_train),
            ("training + per-epoch validation pass on both sides", theirs_loop, ours_loop)]:
        print(f"{label:58} {images / theirs:9.0f} {images / ours:9.0f} {theirs / ours:6.2f}x")
    extra_theirs, extra_ours = ((loop - train) / args.epochs for loop, train in
                                [(theirs_loop, theirs_train), (ours_loop, ours_train)])
    print(f"per-epoch validation and bookkeeping, s/epoch: textbook {extra_theirs:.2f} "
          f"(validation ELBO), vaekit {extra_ours:.2f} (validation ELBO, "
          "MI estimate, active units, best.pt, last.pt, metrics.jsonl)")
    print(f"test -ELBO (nats): textbook {theirs_test:.2f}, vaekit {ours_test:.2f}, difference "
          f"{ours_test - theirs_test:+.2f} (target within 1); speed target: ratio >= 2x")
    print(f"vaekit wall time of the whole train() call (data checks, checkpoints, test evaluation, "
          f"pictures): {wall:.1f}s")


if __name__ == "__main__":
    main()
