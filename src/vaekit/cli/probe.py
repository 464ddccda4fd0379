"""vaekit probe"""

from __future__ import annotations

import json
import sys
import warnings

from threadpoolctl import threadpool_limits

from .. import latent
from ..errors import VaekitError
from ..probe import MIN_TEST_EXAMPLES, ProbeWarning, probe
from .common import add_seed_option, check_seed_option, load_run
from .data_args import add_data_arguments, load_data

HELP = ("How good the representation is on labelled data: logistic-regression and k-NN accuracy "
        "on held-out examples, k-means ARI/NMI, for the latent means vs the raw inputs; prints the "
        f"sample sizes and refuses fewer than {MIN_TEST_EXAMPLES} held-out examples.")


def add_arguments(p) -> None:
    add_data_arguments(p, "labelled examples")
    p.add_argument("--test-data", help="labelled examples to test on, read with the same data "
                   "options (default: a seeded, stratified 25%% of --data)")
    add_seed_option(p, "the split and k-means")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    check_seed_option(args)
    r = load_run(args)
    x, y = load_data(r, args)
    if y is None:
        raise VaekitError("probe needs labelled data (a label column, y in an .npz, image "
                          "subfolders, or a built-in dataset)")
    xt, yt = None, None
    if args.test_data is not None:
        xt, yt = load_data(r, args, args.test_data)
        if yt is None:
            raise VaekitError(f"--test-data {args.test_data} has no labels; give labelled data")
    code = latent.encode(r.model, x).mean.numpy()
    features = {"latent": (code, None if xt is None else latent.encode(r.model, xt).mean.numpy()),
                "raw": (x.numpy(), None if xt is None else xt.numpy())}
    with threadpool_limits(args.threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProbeWarning)
        result = probe(features, y, yt, seed=args.seed)
    for w in caught:  # one line each on stderr, not Python's two-line warning format
        print(f"vaekit probe: warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    sizes = result["latent"]
    print(f"n train {sizes['n_train']}, n test {sizes['n_test']}, {sizes['n_classes']} classes")
    print(f"{'features':<9} {'dim':>5} {'logreg acc':>10} {'k-NN acc':>9} {'k-means ARI':>11} "
          f"{'NMI':>6}")
    for name, m in result.items():
        print(f"{name:<9} {m['dim']:>5} {m['logreg_accuracy']:>10.3f} {m['knn_accuracy']:>9.3f} "
              f"{m['kmeans_ari']:>11.3f} {m['kmeans_nmi']:>6.3f}")
    return 0
