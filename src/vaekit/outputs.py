"""Writing results the user asked for: arrays as .npy/.csv, images as a PNG grid; atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import VaekitError
from .images import save_grid
from .runs import atomic_write

TABLE_SUFFIXES = (".npy", ".csv")
EXAMPLE_SUFFIXES = (".png", *TABLE_SUFFIXES)  # generated or decoded examples
LATENT_SUFFIXES = (*TABLE_SUFFIXES, ".parquet")


def check_out(path: str | Path, suffixes: Sequence[str] | None = None, option: str = "--out") -> Path:
    """Before any work: can a file be written at path? One clear error if not (a folder there, a
    file where a folder should be, a read-only folder, a suffix we cannot write)."""
    path = Path(path)
    if path.is_dir():
        raise VaekitError(f"{option} {path} is a folder; give a file name, e.g. "
                          f"{path / ('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes is not None and path.suffix not in suffixes:
        raise VaekitError(f"cannot write {path.name}: use {', '.join(suffixes)} for {option}")
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not folder.is_dir():
        raise VaekitError(f"{option} {path}: {folder} is a file, not a folder; choose another "
                          f"{option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VaekitError(f"{option} {path}: cannot write in {folder} (read-only); choose another "
                          f"{option}")
    return path


def write_table(path: str | Path, values: np.ndarray, columns: Sequence[str] | None = None) -> None:
    """(N, ...) values to .npy as they are, or to .csv one row per example (flattened)."""
    path = Path(path)
    values = np.asarray(values)
    if path.suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, values, allow_pickle=False))
    elif path.suffix == ".csv":
        buf = io.StringIO()
        flat = values.reshape(len(values), -1)
        header = ",".join(columns) if columns is not None else ""
        np.savetxt(buf, flat, delimiter=",", fmt="%.7g", header=header, comments="")
        atomic_write(path, buf.getvalue())
    else:
        raise VaekitError(f"cannot write {path.name}: use a .npy or .csv file for --out")


def write_examples(path: str | Path, model_space: torch.Tensor, data_space: torch.Tensor,
                   image: bool, ncol: int | None = None) -> None:
    """Generated examples: a PNG grid (image data, model space in [0, 1]) or a table (data space)."""
    path = Path(path)
    if path.suffix == ".png":
        if not image:
            raise VaekitError(f"{path.name}: a PNG grid needs image data; this model's data is "
                              "tabular, so write .npy or .csv")
        save_grid(path, model_space.reshape(len(model_space), *data_space.shape[1:]).cpu(),
                  ncol=ncol, scale=2)
    elif path.suffix in TABLE_SUFFIXES:
        write_table(path, data_space.detach().cpu().numpy())
    else:
        raise VaekitError(f"cannot write {path.name}: use .png (images), .npy or .csv for --out")


def write_decoded(path: str | Path, model, x_model: torch.Tensor, ncol: int | None = None) -> None:
    """Decoded model-space examples: a PNG grid for image data, else data-space .npy/.csv."""
    x_model = x_model.detach().cpu()
    write_examples(path, x_model, model.restore(x_model.to(model.device)).cpu(),
                   image=len(model.input_shape) == 3, ncol=ncol)


def write_latents(path: str | Path, values: np.ndarray, columns: Sequence[str]) -> None:
    """Per-example latent values (N, K) to .npy, .csv (with a header) or .parquet (pyarrow)."""
    path = Path(path)
    if path.suffix != ".parquet":
        if path.suffix not in TABLE_SUFFIXES:
            raise VaekitError(f"cannot write {path.name}: use .npy, .csv or .parquet for --out")
        write_table(path, values, columns)
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise VaekitError("writing .parquet needs pyarrow: pip install pyarrow "
                          "(or write .npy / .csv)") from None
    table = pa.table({c: values[:, i] for i, c in enumerate(columns)})
    atomic_write(path, lambda f: pq.write_table(table, f))
