"""vaekit probe"""

from __future__ import annotations

import json

from .. import latent
from ..data import load_for_model
from ..errors import VaekitError
from ..probe import probe
from ..runs import load
from .data_args import add_data_arguments, load_data

HELP = ("How good the representation is on labelled data: logistic-regression and k-NN accuracy "
        "on held-out examples, k-means ARI/NMI, for the latent means vs the raw inputs.")


def add_arguments(p) -> None:
    add_data_arguments(p, "labelled examples")
    p.add_argument("--test-data", help="labelled examples to test on (default: a seeded, "
                   "stratified 25%% of --data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and k-means (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    r = load(args.run_dir)
    x, y = load_data(r, args)
    if y is None:
        raise VaekitError("probe needs labelled data (a label column, y in an .npz, image "
                          "subfolders, or a built-in dataset)")
    xt, yt = None, None
    if args.test_data is not None:
        xt, yt = load_for_model(r.model, r.config, args.test_data, "test", whole=True)
        if yt is None:
            raise VaekitError(f"--test-data {args.test_data} has no labels; give labelled data")
    code = latent.encode(r.model, x)[0].numpy()
    features = {"latent": (code, None if xt is None else latent.encode(r.model, xt)[0].numpy()),
                "raw": (x.numpy(), None if xt is None else xt.numpy())}
    result = probe(features, y, yt, seed=args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'features':<9} {'dim':>5} {'logreg acc':>10} {'k-NN acc':>9} {'k-means ARI':>11} "
          f"{'NMI':>6}")
    for name, m in result.items():
        print(f"{name:<9} {m['dim']:>5} {m['logreg_accuracy']:>10.3f} {m['knn_accuracy']:>9.3f} "
              f"{m['kmeans_ari']:>11.3f} {m['kmeans_nmi']:>6.3f}")
    return 0
