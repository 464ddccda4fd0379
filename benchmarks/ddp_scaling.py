"""Data-parallel scaling on CPU: the same run with 1 process and with N gloo processes.

Both train the same model on the same data with the same global batch and seed; the N-process
run is `vaekit train --nproc N` (torchrun's launcher, DistributedDataParallel over gloo). Prints
each run's training samples/s (training examples per second of the epochs' wall time, from
metrics.jsonl: the ranks' steps, rank 0's validation and checkpoints) and the final metrics side by
side. With `--model ae` (no draws of z) the figures agree to float rounding; a VAE's agree in
distribution (each rank draws its own z).

    python benchmarks/ddp_scaling.py --nproc 2 --epochs 3
    python benchmarks/ddp_scaling.py --data ../shared/data/mnist --data-dir ../shared/data --nproc 2

A --data of a large .npy also measures streaming: add --stream on (and --workers K). The figures
depend on the machine: 2 processes on a 2-core CPU share those cores (each gets 1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("train_loss", "val_elbo", "val_reconstruction", "val_kl")


def run(argv: list[str], out: Path, nproc: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "vaekit", "train", *argv, "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    else:
        cmd += ["--threads", str(threads)]
    tick = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - tick
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    n_train = json.loads((out / "manifest.json").read_text())["data"]["n_train"]
    seconds = sum(r["seconds"] for r in rows)
    return {"samples_per_s": n_train * len(rows) / seconds, "epoch_seconds": seconds,
            "wall_seconds": wall, "last": {k: rows[-1].get(k) for k in KEYS},
            "test": json.loads((out / "summary.json").read_text())["test"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--model", default="ae", choices=("ae", "vae"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("extra", nargs="*", help="more `vaekit train` options, after --")
    a = p.parse_args()
    argv = ["--data", a.data, "--data-dir", a.data_dir, "--model", a.model, "--epochs",
            str(a.epochs), "--batch-size", str(a.batch_size), "--patience", "0", *a.extra]
    with tempfile.TemporaryDirectory() as tmp:
        one = run(argv, Path(tmp) / "one", 1, a.threads)
        many = run(argv, Path(tmp) / "many", a.nproc, a.threads)
    print(f"{'':>22} {'1 process':>14} {f'{a.nproc} processes':>14}")
    print(f"{'samples/s (epochs)':>22} {one['samples_per_s']:14.0f} {many['samples_per_s']:14.0f}")
    print(f"{'epoch seconds':>22} {one['epoch_seconds']:14.2f} {many['epoch_seconds']:14.2f}")
    print(f"{'wall seconds':>22} {one['wall_seconds']:14.1f} {many['wall_seconds']:14.1f}")
    for k in KEYS:
        x, y = one["last"][k], many["last"][k]
        if x is not None:
            print(f"{k:>22} {x:14.6f} {y:14.6f}  rel diff {abs(x - y) / max(abs(x), 1e-12):.1e}")
    x, y = one["test"]["reconstruction"], many["test"]["reconstruction"]
    print(f"{'test reconstruction':>22} {x:14.6f} {y:14.6f}  rel diff {abs(x - y) / abs(x):.1e}")


if __name__ == "__main__":
    main()
