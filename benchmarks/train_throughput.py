"""Training throughput: vaekit vs the textbook PyTorch VAE loop, side by side in one run.

Both train the same 784-400-20 Bernoulli MLP VAE on MNIST in [0, 1] (not binarized), batch 128,
Adam 1e-3, on the same 54,000 training images for the same epochs, and evaluate on the same
validation images after every epoch. The textbook loop is the one in pytorch/examples `vae/main.py`:
a DataLoader over a TensorDataset, sigmoid + binary_cross_entropy summed, separate mean and
log-variance layers. Prints samples/s of each (training images per second of wall time, the
per-epoch evaluation included), their ratio, and both test -ELBOs (nats per example).

    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist --epochs 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit.data import load_dataset
from vaekit.evaluate import evaluate

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


def textbook_neg_elbo(model, loader) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for (x,) in loader:
            recon, mu, logvar = model(x)
            total += textbook_loss(recon, x, mu, logvar).item()
    return total / len(loader.dataset)


def run_textbook(ds, epochs: int, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = TextbookVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = DataLoader(TensorDataset(ds.x_train), batch_size=128, shuffle=True)
    val = DataLoader(TensorDataset(ds.x_val), batch_size=128)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for (x,) in train:
            opt.zero_grad()
            recon, mu, logvar = model(x)
            loss = textbook_loss(recon, x, mu, logvar)
            loss.backward()
            opt.step()
        textbook_neg_elbo(model, val)
    seconds = time.perf_counter() - start
    test = textbook_neg_elbo(model, DataLoader(TensorDataset(ds.x_test), batch_size=128))
    return len(ds.x_train) * epochs / seconds, test


def run_vaekit(cfg, ds, epochs: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = vaekit.train(cfg, out=Path(tmp) / "run", quiet=True, hooks=[], dataset=ds)
        seconds = sum(r["seconds"] for r in run.metrics)
        wall = time.perf_counter() - start
        last = vaekit.load(Path(tmp) / "run", "last").model  # same point as the textbook loop
        test = -evaluate(last, ds.x_test)["elbo"]
    return len(ds.x_train) * epochs / seconds, test, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = vaekit.Config.from_flat({"data": "mnist", "data_dir": args.data_dir, "hidden": [400],
                                   "latent_dim": 20, "likelihood": "bernoulli", "epochs": args.epochs,
                                   "batch_size": 128, "lr": 1e-3, "patience": 0, "seed": args.seed})
    ds, cfg = load_dataset(cfg)
    print(f"MNIST [0,1], 784-400-20 bernoulli VAE, batch 128, Adam 1e-3, {args.epochs} epochs, "
          f"{len(ds.x_train)} training images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    ours, ours_test, wall = run_vaekit(cfg, ds, args.epochs)
    theirs, theirs_test = run_textbook(ds, args.epochs, args.seed)
    print(f"{'':10} {'samples/s':>10} {'test -ELBO':>11}")
    print(f"{'textbook':10} {theirs:10.0f} {theirs_test:11.2f}")
    print(f"{'vaekit':10} {ours:10.0f} {ours_test:11.2f}")
    print(f"ratio vaekit/textbook: {ours / theirs:.2f}x  (target >= 2x); "
          f"test -ELBO difference: {ours_test - theirs_test:+.2f} nats (target within 1)")
    print(f"vaekit wall time including data checks, checkpoints and test evaluation: {wall:.1f}s")


if __name__ == "__main__":
    main()
