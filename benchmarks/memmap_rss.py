"""Training on a memory-mapped .npy larger than the memory it may use: peak RSS and samples/s.

Writes a float32 array of --gb gigabytes (rows of 784 values: a 28x28 table, a mixture of a few
gaussian blobs) chunk by chunk into a temporary folder, then trains one epoch on it with
`--stream on` in a child process and reports that process's peak resident memory (ru_maxrss) and
its training samples/s; then the same model on the first --in-memory-gb of the file read whole,
for the throughput beside it.

    python benchmarks/memmap_rss.py --gb 4          # the issue's figure: peak RSS < 1.5 GB
    python benchmarks/memmap_rss.py --gb 0.5        # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 784
CHUNK = 20_000  # rows written at a time


def write(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM)).astype(np.float32) * 3
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, DIM))
    for i in range(0, rows, CHUNK):
        n = min(CHUNK, rows - i)
        out[i:i + n] = centres[rng.integers(0, 8, n)] + rng.normal(size=(n, DIM)).astype(np.float32)
        out.flush()
    del out


def train(data: Path, out: Path, stream: str, threads: int, extra: list[str]) -> dict:
    # VmHWM of /proc/self/status, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and
    # exec, so the child would report this process's peak (the file written through a map: 4 GB)
    code = ("import sys; from vaekit.cli import main; c = main(sys.argv[1:]); "
            "print('MAXRSS', next(l.split()[1] for l in open('/proc/self/status') "
            "if l.startswith('VmHWM:'))); sys.exit(c)")
    cmd = [sys.executable, "-c", code, "train", "--data", str(data), "--stream", stream,
           "--epochs", "1", "--batch-size", "512", "--hidden", "256", "--latent-dim", "16",
           "--threads", str(threads), "--out", str(out), "--quiet", *extra]
    tick = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    rss_kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS")))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    n_train = json.loads((out / "manifest.json").read_text())["data"]["n_train"]
    return {"peak_rss_gb": rss_kb / 2**20, "samples_per_s": n_train / row["seconds"],
            "epoch_seconds": row["seconds"], "wall_seconds": wall, "n_train": n_train}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=4.0, help="size of the memory-mapped file")
    p.add_argument("--in-memory-gb", type=float, default=0.25, help="size of the in-memory run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", help="where to write the file (default: a temporary folder)")
    a = p.parse_args()
    rows = int(a.gb * 2**30 / (4 * DIM))
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        big = Path(tmp) / "big.npy"
        write(big, rows)
        small = Path(tmp) / "small.npy"
        np.save(small, np.load(big, mmap_mode="r")[:int(a.in_memory_gb * 2**30 / (4 * DIM))])
        streamed = train(big, Path(tmp) / "s", "on", a.threads, [])
        whole = train(small, Path(tmp) / "m", "off", a.threads, [])
        print(f"file: {big.stat().st_size / 2**30:.2f} GiB, {rows} rows x {DIM} float32; "
              "peak RSS: each training process's own VmHWM")
    for name, r in (("memory-mapped, --stream on", streamed), ("in memory, --stream off", whole)):
        print(f"{name:>28}: {r['n_train']:>9} training rows, {r['samples_per_s']:8.0f} samples/s, "
              f"epoch {r['epoch_seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GiB "
              f"(process wall {r['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
