"""CLI pieces shared by the commands that read data for a trained run (encode, score, latent...)."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..data import load_for_model
from ..errors import VaekitError


def add_data_arguments(p, what: str = "examples") -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--data", help=f"{what}: a built-in name (its --split) or a file/folder (every "
                   "example, in file order); default: the run's own data, its --split")
    p.add_argument("--split", choices=("test", "train", "val"), default="test",
                   help="which split of the run's data or a built-in dataset (default: test)")


def load_data(run, args) -> tuple[Tensor, np.ndarray | None]:
    """Model-space examples (N, D) and their labels (or None), as asked by --data/--split."""
    return load_for_model(run.model, run.config, args.data, args.split, whole=args.data is not None)


def check_index(x: Tensor, index: int, option: str = "--index") -> int:
    if not -len(x) <= index < len(x):
        raise VaekitError(f"{option} {index} is out of range: the data has {len(x)} examples "
                          f"(0..{len(x) - 1})")
    return index % len(x)


def int_list(text: str) -> list[int]:
    """'0,3,5' -> [0, 3, 5] (an argparse type)."""
    import argparse

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
