"""Benchmark: importance-sampled log p(x) with K=5000 over the 10,000 MNIST test images for the
784-400-20 VAE, against the time its matrix products alone need at this machine's measured matmul
throughput (target: within 2x), and against pythae's `get_nll` on the same weights (a subset).

The pythae comparison runs both at the same K, the same batch and on the same examples: pythae's
`get_nll(x, n_samples=K, batch_size=B)` takes one example at a time and decodes B draws of z per pass
(K/B passes); vaekit's `log_likelihood(..., batch_size=1, chunk_size=B)` is run with exactly that pass
structure on the same first --pythae-n test images, and then with its own chunking (--chunk-size;
many examples share a pass) on the same images, for reference. K must be a multiple of B: pythae draws
B * max(1, K // B) samples, not K, otherwise.

    python benchmarks/iw_loglik.py --data-dir ../shared/data/mnist --threads 1
    python benchmarks/iw_loglik.py --run RUN_DIR --n 1000    # a trained 784-400-20 run; a subset

pythae is optional: install it apart from the project's environment, e.g.
    python3 -m venv --system-site-packages /tmp/pythae-venv && /tmp/pythae-venv/bin/pip install pythae
and run this script with /tmp/pythae-venv/bin/python; without it that part is skipped.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time

import torch
import torch.nn.functional as F

from vaekit import Config, load, train
from vaekit.data import load_for_model
from vaekit.evaluate import CHUNK_SIZE, log_likelihood, summarize_log_likelihood


def best_seconds(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def linears(net) -> list[torch.nn.Linear]:
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)]


def layer_seconds(layers: list[torch.nn.Linear], rows: int) -> float:
    """Time of y = x W^T + b for each layer's shape with `rows` rows, best of 20, summed."""
    total = 0.0
    for layer in layers:
        x = torch.randn(rows, layer.in_features)
        w, b = torch.randn(layer.out_features, layer.in_features), torch.randn(layer.out_features)
        total += best_seconds(lambda x=x, w=w, b=b: F.linear(x, w, b))
    return total


def matmul_flops(model, n: int, k: int) -> float:
    """FLOPs of the linear layers: the encoder once per example, the decoder once per draw."""
    def flops(net):
        return sum(2 * m.in_features * m.out_features for m in linears(net))
    return n * flops(model.encoder) + n * k * flops(model.decoder)


def trained_model(args):
    if args.run:
        return load(args.run)
    cfg = Config.from_flat({"data": "mnist", "data_dir": args.data_dir, "backbone": "mlp",
                            "hidden": [400], "latent_dim": 20, "binarize": "dynamic",
                            "likelihood": "bernoulli",
                            "epochs": args.train_epochs, "threads": args.threads})
    print(f"training 784-400-20 for {args.train_epochs} epoch(s) ...", flush=True)
    return train(cfg, tempfile.mkdtemp(prefix="iw-bench-"), quiet=True)


def pythae_nll(model, x, k: int, batch: int) -> tuple[float, float] | str:
    """(mean log p(x), seconds) from pythae's VAE.get_nll on the same weights, or why not
    (despite its name, get_nll returns the mean of log p(x), in nats)."""
    try:
        from pythae.models import VAE as PythaeVAE
        from pythae.models import VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError as e:
        return f"pythae is not importable ({e}); see this script's docstring"

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = model.encoder

        def forward(self, x):
            mu, logvar = self.net(x.reshape(len(x), -1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = model.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(len(z), 1, 28, 28))

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=model.latent_dim, reconstruction_loss="bce")
    p = PythaeVAE(config, encoder=Encoder(), decoder=Decoder()).eval()
    t = time.perf_counter()
    with torch.no_grad():
        value = p.get_nll(x.reshape(len(x), 1, 28, 28), n_samples=k, batch_size=batch)
    return float(value), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a trained 784-400-20 MNIST run folder (else train one briefly)")
    ap.add_argument("--data-dir", default="data", help="folder with the MNIST IDX files")
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--k", type=int, default=5000, help="importance samples per example")
    ap.add_argument("--n", type=int, default=10000, help="test examples (first N)")
    ap.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pythae-n", type=int, default=10, help="examples for pythae (0: skip)")
    ap.add_argument("--pythae-batch", type=int, default=100, help="pythae get_nll batch_size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    run = trained_model(args)
    model = run.model.eval()
    x, _ = load_for_model(model, run.config, None, "test")
    x = x[:args.n]
    n, k = len(x), args.k
    dim = model.dim
    widths = "-".join(str(m.out_features) for m in linears(model.decoder)[:-1])
    print(f"model {dim}-{widths}-{model.latent_dim}, {n} test images, K={k}, "
          f"{args.threads} thread(s), chunk {args.chunk_size} draws")

    # the matrix products alone: each layer's shape at the pass size, timed here, times the passes;
    # and, for reference, all FLOPs at the best-case rate of the biggest layer's GEMM
    c = args.chunk_size
    ideal = (layer_seconds(linears(model.decoder), c) * n * k / c
             + layer_seconds(linears(model.encoder), c) * n / c)
    flops = matmul_flops(model, n, k)
    big = max(linears(model.decoder), key=lambda m: m.in_features * m.out_features)
    peak = 2 * c * big.in_features * big.out_features / layer_seconds([big], c)
    print(f"matrix products alone: {flops / 1e12:.2f} TFLOP in {ideal:.1f} s (each layer timed at "
          f"{c} rows: {flops / ideal / 1e9:.1f} GFLOP/s); at the {c}x{big.in_features} @ "
          f"{big.in_features}x{big.out_features} GEMM's rate ({peak / 1e9:.1f} GFLOP/s): "
          f"{flops / peak:.1f} s")

    t = time.perf_counter()
    ll = log_likelihood(model, x, k, chunk_size=args.chunk_size)
    wall = time.perf_counter() - t
    s = summarize_log_likelihood(ll, k)
    print(f"vaekit log_likelihood: {s['log_likelihood']:.2f} +- {s['log_likelihood_stderr']:.2f} "
          f"nats; wall {wall:.1f} s = {wall / ideal:.2f}x the matmul-only time "
          f"({wall / (flops / peak):.2f}x at the big GEMM's rate); "
          f"{wall / n * 1e3:.1f} ms per example")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"peak resident memory of this process so far: {rss:.2f} GiB")

    if args.pythae_n > 0:
        compare_with_pythae(model, x[:args.pythae_n], k, args.pythae_batch, args.chunk_size)


def timed_ll(model, x, k: int, **kwargs) -> tuple[float, float]:
    """(mean log p(x), seconds) of vaekit's log_likelihood with the given chunking."""
    torch.manual_seed(0)
    t = time.perf_counter()
    ll = log_likelihood(model, x, k, **kwargs)
    return float(ll.double().mean()), time.perf_counter() - t


def compare_with_pythae(model, x, k: int, batch: int, chunk: int) -> None:
    """pythae's get_nll and vaekit at the same K, the same draws per pass, on the same examples."""
    if k % batch:
        print(f"pythae: skipped: --k {k} is not a multiple of --pythae-batch {batch} (get_nll would "
              f"draw {batch * max(1, k // batch)} samples per example, not K)")
        return
    torch.manual_seed(0)
    got = pythae_nll(model, x, k, batch)
    if isinstance(got, str):
        print(f"pythae: skipped: {got}")
        return
    m = len(x)
    print(f"same K={k}, same {m} test images (the first), same weights; per example, K/{batch} = "
          f"{k // batch} passes of {batch} draws unless said:")
    rows = [(f"pythae get_nll(batch_size={batch})", *got),
            (f"vaekit log_likelihood(batch_size=1, chunk_size={batch})",
             *timed_ll(model, x, k, batch_size=1, chunk_size=batch)),
            (f"vaekit log_likelihood(chunk_size={chunk}): examples share a pass",
             *timed_ll(model, x, k, chunk_size=chunk))]
    for label, value, seconds in rows:
        print(f"  {label:68} {value:9.2f} nats  {seconds / m * 1e3:8.1f} ms/example  "
              f"{seconds / rows[1][2]:5.2f}x vaekit's time at the same batch")


if __name__ == "__main__":
    main()
