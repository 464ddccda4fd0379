"""CLI pieces shared by the commands that read data for a trained run (encode, score, latent...)."""

from __future__ import annotations

import argparse

import numpy as np
from torch import Tensor

from ..data import load_for_model
from ..errors import VaekitError
from ..sources import BUILTINS
from .common import add_compute_options, add_read_options, option_name, read_options

SPLIT_HELP = ("which split: of the run's own data (the rows it trained, validated or tested on), "
              "or of a built-in --data (its own test split, or the run's seeded --test-fraction; "
              "val: the run's seeded --val-fraction of the rest); not for a file (default: test)")


def add_data_arguments(p, what: str = "examples", stream: bool = False) -> None:
    """RUN_DIR, --data, --split, the data options of `train` and --threads/--device; with
    stream, --stream (for commands that read their data in order, chunk by chunk)."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `vaekit train`")
    p.add_argument("--data", help=f"{what}: a built-in name ({', '.join(BUILTINS)}; its --split) "
                   "or a file/folder (every example, in file order); default: the run's own data, "
                   "its --split")
    p.add_argument("--split", choices=("test", "train", "val"), default=argparse.SUPPRESS,
                   help=SPLIT_HELP)
    add_read_options(p)
    if stream:
        p.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                       help="read a --data file chunk by chunk, in order, never whole (.npy "
                       "memory-mapped, .parquet by row groups, image folders per chunk); auto: a "
                       ".npy/.parquet file above 1 GiB (default: auto)")
    add_compute_options(p)


def split_of(args) -> str:
    """--split, which a file given with --data does not have (it is read whole, in order)."""
    split = getattr(args, "split", None)
    if split is not None and args.data is not None and args.data not in BUILTINS:
        raise VaekitError(f"--split applies to the run's own data and to built-in datasets; "
                          f"--data {args.data} is read whole, in file order: drop --split")
    return split or "test"


def load_data(run, args, source: str | None = None) -> tuple[Tensor, np.ndarray | None]:
    """Model-space examples (N, D) and their labels (or None), as asked by --data/--split and the
    data options (source: another file to read the same way, e.g. probe's --test-data)."""
    if source is not None:
        return load_for_model(run.model, run.config, source, **read_options(args))
    check_file_options(args)
    reading = read_options(args) | ({"stream": args.stream} if hasattr(args, "stream") else {})
    return load_for_model(run.model, run.config, args.data, split_of(args),
                          lazy=hasattr(args, "stream"), **reading)


def check_file_options(args) -> None:
    """--label-column, --image-size and --layout say how to read a file; with no file they would
    be ignored."""
    files = [s for s in (args.data, getattr(args, "test_data", None))
             if s is not None and s not in BUILTINS]
    given = [option_name(k) for k in ("label_column", "image_size", "layout") if hasattr(args, k)]
    if given and not files:
        raise VaekitError(f"{' and '.join(given)} say how to read a file given with --data; the "
                          "run's own data and the built-in datasets are read as for training: "
                          "drop it")


def check_index(x: Tensor, index: int, option: str = "--index") -> int:
    if not -len(x) <= index < len(x):
        raise VaekitError(f"{option} {index} is out of range: the data has {len(x)} examples "
                          f"(0..{len(x) - 1})")
    return index % len(x)


def int_list(text: str) -> list[int]:
    """'0,3,5' -> [0, 3, 5] (an argparse type)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
