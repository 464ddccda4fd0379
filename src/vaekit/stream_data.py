"""`make_dataset` for a file read batch by batch (--stream): the same splits, checks and
preprocessing as in memory, from one streaming pass per split, never the whole array at once."""

from __future__ import annotations

import numpy as np
import torch

from .config import Config
from .data import (
    BINARIZE_SEED_OFFSET,
    Dataset,
    preprocessing,
    resolve_config,
    scale_of,
    seeded_split,
    to_model_space,
)
from .datasets import BUILTINS, Raw
from .errors import VaekitError
from .sources import F32_MAX, has_own_test_split
from .streams import FileRows, chunks, moments, open_reader, reader_labels

SPLIT_NAMES = {"train": "the training split",
               "val": "the validation split (rows held out of the training data)",
               "test": "the test split"}


def streamed_dataset(cfg: Config) -> tuple[Dataset, Config]:
    """Dataset whose splits are `streams.FileRows` of --data (and --test-data): the rows
    make_dataset would put in each split (the same seeded splits), the training statistics from
    one float64 streaming pass (`streams.Moments`), the likelihood's checks chunk by chunk."""
    d, seed = cfg.data, cfg.train.seed
    if d.data in BUILTINS or has_own_test_split(d.data):
        raise VaekitError(f"--stream reads .npy/.parquet files and image folders; {d.data} is "
                          "read whole: pass --stream off")
    reader = open_reader(d.data, d)
    test_reader = reader if d.test_data is None else open_reader(d.test_data, d)
    if d.test_data is None:
        keep, test_rows = seeded_split(len(reader), d.test_fraction, seed)
    else:
        keep, test_rows = np.arange(len(reader)), np.arange(len(test_reader))
    kept, held = seeded_split(len(keep), d.val_fraction, seed + 1)
    rows = {"train": keep[kept], "val": keep[held], "test": test_rows}
    readers = {"train": reader, "val": reader, "test": test_reader}
    first = reader.read(rows["train"][:1])
    shape = first.shape[1:]
    if test_reader.read(test_rows[:1]).shape[1:] != shape:
        raise VaekitError(f"the test examples have shape {test_reader.read(test_rows[:1]).shape[1:]}"
                          f" but the training examples {shape}; they must match")
    stats = {name: moments(readers[name], r) for name, r in rows.items()}
    for name, m in stats.items():
        if m.bad:
            raise VaekitError(f"{SPLIT_NAMES[name]} contains {m.bad} NaN/Inf value(s) or value(s) "
                              f"beyond float32's range (|x| > {F32_MAX:.3g}); remove or impute "
                              "them first")
    train = stats["train"]
    labels = {name: None if (y := reader_labels(readers[name])) is None else y[r]
              for name, r in rows.items()}
    # what the 'auto' rules read of the training data: its dtype, shape and range
    summary = Raw(np.stack([train.lo, train.hi]).astype(first.dtype).reshape(2, *shape),
                  labels["train"], len(shape) == 3, 255.0 if first.dtype == np.uint8 else 1.0)
    likelihood, lik, standardize, dequantize, shift, scale = preprocessing(
        summary, cfg, lambda: scale_of(train.mean, train.std))
    for name, r in rows.items():
        for x in chunks(readers[name], r):
            lik.check(to_model_space(x, shift, scale), f"the {name} data")
    noise = "binarize" if d.binarize == "dynamic" else "dequantize" if dequantize else None
    xs = {name: FileRows(readers[name], r, shift, scale,
                         None if name == "train" else noise,
                         seed + BINARIZE_SEED_OFFSET + (name == "test"),
                         cfg.train.workers if name == "train" else 0)
          for name, r in rows.items()}
    xs["train"].data_mean = train.mean
    info = resolve_config(cfg, likelihood, standardize, dequantize, summary, scale) | {
        "n_train": len(rows["train"]), "n_val": len(rows["val"]), "n_test": len(rows["test"]),
        "streamed": True}
    ds = Dataset(xs["train"], xs["val"], xs["test"], labels["train"], labels["val"],
                 labels["test"], tuple(shape), len(shape) == 3, torch_of(shift), torch_of(scale),
                 likelihood, info)
    return ds, cfg


def torch_of(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def file_for_model(model, cfg: Config, source: str) -> tuple[FileRows, np.ndarray | None]:
    """A file for a trained model (`data.load_for_model`, lazy), every row in file order, in
    the model's space, checked chunk by chunk (finite, the likelihood's support); the noise of a
    binarized or dequantized run drawn once, seeded, as for its test split."""
    reader = open_reader(source, cfg.data)
    rows = np.arange(len(reader))
    shape = reader.read(rows[:1]).shape[1:]
    if tuple(shape) != tuple(model.input_shape) and int(np.prod(shape)) != model.dim:
        raise VaekitError(f"{source} has examples of shape {tuple(shape)} but the model was "
                          f"trained on shape {tuple(model.input_shape)}; give matching data")
    shift, scale = model.shift.cpu().numpy(), model.scale.cpu().numpy()
    bad = 0
    for x in chunks(reader, rows):
        m = moments_of(x)
        bad += m.bad
        if not m.bad:
            model.likelihood.check(to_model_space(x, shift, scale), source)
    if bad:
        raise VaekitError(f"{source} contains {bad} NaN/Inf value(s) or value(s) beyond "
                          f"float32's range (|x| > {F32_MAX:.3g}); remove or impute them first")
    noise = ("binarize" if cfg.data.binarize == "dynamic" else
             "dequantize" if cfg.data.dequantize == "on" else None)
    return (FileRows(reader, rows, shift, scale, noise, cfg.train.seed + BINARIZE_SEED_OFFSET + 1),
            reader_labels(reader))


def moments_of(x: np.ndarray):
    from .streams import Moments

    m = Moments()
    m.add(x)
    return m
