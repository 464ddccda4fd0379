"""Load test of `vaekit serve`: requests/s and p50/p99 latency at 1, 8 and 64 concurrent clients,
every response checked against the offline `vaekit score` of the same rows.

    python benchmarks/serve_load.py                       # a small table run, trained here
    python benchmarks/serve_load.py --run runs/x --data rows.npy --method kl

It trains a small gaussian run on a synthetic 10-column table (unless --run), scores --rows rows
with `vaekit score RUN --data rows.npy --method M --out scores.csv` (the offline reference), starts
`vaekit serve RUN --port P --threads 1` on 127.0.0.1 in a subprocess and drives it with asyncio
clients, one keep-alive connection each (plain HTTP/1.1, TCP_NODELAY): each request POSTs
--per-request consecutive rows to /score, up to --requests requests or --seconds seconds per
concurrency level, whichever ends first, after --warmup requests not counted. A response must
equal the offline scores of its rows to the CSV's 7 significant digits (warm-up ones too). Exit
status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vaekit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaekit", *args]


def environment() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's vaekit
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def small_run(root: Path) -> tuple[Path, np.ndarray]:
    """A gaussian VAE on a 10-column table (2,000 rows, 20 epochs), and 2,000 rows it never saw."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 10))
    table = lambda n: (rng.normal(size=(n, 3)) @ mix * 2 + 5 + 0.2 * rng.normal(size=(n, 10)))  # noqa: E731
    np.save(root / "train.npy", table(2000).astype(np.float32))
    subprocess.run(vaekit_cmd("train", "--data", str(root / "train.npy"), "--epochs", "20",
                              "--threads", "1", "--quiet", "--out", str(root / "run")),
                   check=True, env=environment(), stdout=subprocess.DEVNULL)
    return root / "run", table(2000).astype(np.float32)


def offline_scores(run: Path, rows: np.ndarray, method: str, root: Path) -> np.ndarray:
    np.save(root / "rows.npy", rows)
    subprocess.run(vaekit_cmd("score", str(run), "--data", str(root / "rows.npy"), "--method", method,
                              "--threads", "1", "--out", str(root / "scores.csv")),
                   check=True, env=environment(), stdout=subprocess.DEVNULL)
    with open(root / "scores.csv") as f:
        return np.array([float(r["score"]) for r in csv.DictReader(f)])


class Connection:
    """One keep-alive HTTP/1.1 connection, each request written in one piece with TCP_NODELAY (a
    client that sends headers and body apart meets Nagle's algorithm and delayed ACKs, and then
    measures 40 ms stalls of its own, not the server)."""

    def __init__(self, port: int):
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def level(port: int, rows: np.ndarray, want: np.ndarray, args, clients: int) -> dict:
    """`clients` concurrent clients until --requests requests or --seconds: latencies, mismatches."""
    k, n_slices = args.per_request, len(rows) // args.per_request
    bodies = [json.dumps({"x": rows[i * k:i * k + k].tolist(), "method": args.method}).encode()
              for i in range(n_slices)]  # serialized once: the clients' CPU goes to HTTP
    latencies: list[float] = []
    bad = issued = 0
    stop = time.perf_counter() + args.seconds

    async def client() -> None:
        nonlocal issued, bad
        conn = Connection(port)
        await conn.open()
        while issued < args.requests and time.perf_counter() < stop:
            i = issued % n_slices
            issued += 1
            t = time.perf_counter()
            status, body = await conn.post("/score", bodies[i])
            latencies.append(time.perf_counter() - t)
            got = np.asarray(json.loads(body)["scores"]) if status == 200 else None
            if got is None or not np.allclose(got, want[i * k:i * k + k], rtol=2e-6, atol=1e-6):
                bad += 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "rps": len(ms) / wall,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "bad": bad}


def wait_healthy(base: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"vaekit serve exited early: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("vaekit serve did not answer /health within a minute")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a run or model folder (default: train a small table run here)")
    p.add_argument("--data", help=".npy rows to send (with --run; default: unseen table rows)")
    p.add_argument("--method", default="elbo", help="score method (default: elbo, 16 draws)")
    p.add_argument("--rows", type=int, default=512, help="distinct rows sent (default: 512)")
    p.add_argument("--per-request", type=int, default=4, help="rows per request (default: 4)")
    p.add_argument("--requests", type=int, default=1000, help="max requests per level (default: 1000)")
    p.add_argument("--seconds", type=float, default=20, help="max seconds per level (default: 20)")
    p.add_argument("--warmup", type=int, default=300, help="requests sent first, at 8 clients, not "
                   "counted: a fresh server's first requests are slow (default: 300)")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels (default: 1,8,64)")
    p.add_argument("--max-wait-ms", default="5", help="the server's batching wait (default: 5)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vaekit-serve-load-") as tmp:
        root = Path(tmp)
        if args.run:
            run, rows = Path(args.run), np.load(args.data)
        else:
            run, rows = small_run(root)
        rows = rows[:args.rows]
        want = offline_scores(run, rows, args.method, root)
        port = free_port()
        server = subprocess.Popen(vaekit_cmd("serve", str(run), "--port", str(port), "--threads", "1",
                                             "--max-wait-ms", args.max_wait_ms),
                                  env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, server)
            print(f"vaekit serve {run.name} on 127.0.0.1 (--threads 1, --max-wait-ms {args.max_wait_ms}); "
                  f"POST /score method {args.method}, {args.per_request} rows per request, "
                  f"at most {args.requests} requests or {args.seconds:g} s per level")
            print(f"{'clients':>7} {'requests':>8} {'req/s':>8} {'rows/s':>8} {'p50 ms':>8} "
                  f"{'p99 ms':>8} {'mismatches':>10}")
            failed = 0
            warm = argparse.Namespace(**{**vars(args), "requests": args.warmup})
            failed += asyncio.run(level(port, rows, want, warm, 8))["bad"]
            for clients in (int(c) for c in args.clients.split(",")):
                r = asyncio.run(level(port, rows, want, args, clients))
                failed += r["bad"]
                print(f"{r['clients']:>7} {r['requests']:>8} {r['rps']:>8.1f} "
                      f"{r['rps'] * args.per_request:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
                      f"{r['bad']:>10}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("every response equals the offline `vaekit score`" if not failed
          else f"{failed} responses differ from the offline `vaekit score`")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
