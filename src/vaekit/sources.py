"""User data: .npy, .npz, .csv files and folders of images, read as the user gave them (a `Raw`),
and `read_source`, the one entry for what --data names (a built-in of datasets.py, or a file)."""

from __future__ import annotations

import csv
import math
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .datasets import (  # noqa: F401  (re-exported: where readers have always been imported from)
    BUILTINS,
    CLASS_NAMES,
    IDX_DATASETS,
    IDX_FILES,
    OWN_TEST_SPLIT,
    Raw,
    download,
    find_idx,
    md5sum,
    read_idx,
)
from .errors import VaekitError

LAYOUTS = ("auto", "channels-first", "channels-last")
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what an image's channel axis holds, for layout auto


def as_examples(x: np.ndarray, where: Path | str, layout: str = "auto") -> tuple[np.ndarray, bool]:
    """The layout rule, the one place of it: (n, d) is tabular; (n, h, w) grey images become
    (n, 1, h, w); 4-D images become (n, c, h, w). For 4-D with layout auto, channels-first when
    axis 1 is 1, 3 or 4 and the last axis is not, channels-last when the last axis is and axis 1
    is not; when both or neither are, the layout must be given (--layout)."""
    if x.ndim == 2:
        return x, False
    if x.ndim == 3:
        return x[:, None], True
    if x.ndim == 4:
        if layout == "auto":
            first, last = x.shape[1] in CHANNELS, x.shape[-1] in CHANNELS
            if first == last:
                which = "both axis 1 and the last axis" if first else "neither axis 1 nor the last axis"
                raise VaekitError(f"{where} holds images of shape {x.shape[1:]}: {which} could hold "
                                  "the channels (1, 3 or 4); say which with --layout channels-first "
                                  "(n, c, h, w) or --layout channels-last (n, h, w, c) (a run's own "
                                  "data: the key layout in its config.yaml)")
            layout = "channels-first" if first else "channels-last"
        return (np.moveaxis(x, -1, 1) if layout == "channels-last" else x), True
    raise VaekitError(f"{where} holds an array of shape {x.shape}; expected (n, d) tabular, "
                      "(n, h, w) or (n, c, h, w) / (n, h, w, c) images")


ARRAY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError, KeyError, struct.error, SyntaxError, tokenize.TokenError)
# ^ what numpy and zipfile raise on damaged bytes (a .npy header is parsed as a Python literal)
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(f, available: int, where: str) -> np.ndarray:
    """One .npy array from f, whose header is checked against the bytes there (available) first:
    a header may claim terabytes."""
    start = f.tell()
    version = np.lib.format.read_magic(f)
    if version not in NPY_HEADERS:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = NPY_HEADERS[version](f)
    need = math.prod(shape) * dtype.itemsize
    if need > available - (f.tell() - start):
        raise VaekitError(f"{where} is truncated: its header says shape {shape} of {dtype} "
                          f"({need} bytes) but it holds fewer; re-save it with numpy.save")
    f.seek(start)
    return np.lib.format.read_array(f, allow_pickle=False)


DEFLATE_MAX_RATIO = 1100  # deflate expands at most ~1032x: a bound on what a member can hold


def npz_member(z: zipfile.ZipFile, key: str | None, path: Path) -> np.ndarray | None:
    """The array saved under key in an open .npz, its size bounded by what the archive can hold
    (the zip's own size fields may lie)."""
    if key is None:
        return None
    info = z.getinfo(f"{key}.npy")
    if info.compress_size > path.stat().st_size:
        raise ValueError("member larger than the archive")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
    with z.open(info) as f:
        return read_npy(f, min(info.file_size, ratio * info.compress_size), f"{path}[{key}]")


# The keys an .npz is read by. Its own train/test split: x_train and x_test (with y_train and
# y_test, or neither). Otherwise the examples: the first of X, x, data present (else the first
# array), labels: the first of y, Y, labels present. Either way class_names (strings, one per
# integer label 0..K-1) names the labels.
NPZ_EXAMPLES, NPZ_LABELS, NPZ_CLASS_NAMES = ("X", "x", "data"), ("y", "Y", "labels"), "class_names"
NPZ_SPLITS = ("train", "test")  # x_train/y_train, x_test/y_test


def npz_keys(z: zipfile.ZipFile, path: Path) -> list[str]:
    keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    if not keys:
        raise VaekitError(f"{path} holds no arrays; save one under the key 'X'")
    return keys


def npz_has_split(keys: list[str], path: Path) -> bool:
    """Whether an .npz holds its own train/test split (x_train and x_test); half of one is an error."""
    xs = [f"x_{s}" for s in NPZ_SPLITS if f"x_{s}" in keys]
    ys = [f"y_{s}" for s in NPZ_SPLITS if f"y_{s}" in keys]
    if len(xs) == 1 or (xs and len(ys) == 1):
        half = xs if len(xs) == 1 else ys
        raise VaekitError(f"{path} holds {half[0]} without its other half; save x_train and "
                          "x_test (and y_train and y_test, or neither) as the file's own split, "
                          "or all examples under X")
    return bool(xs)


def read_npz(z: zipfile.ZipFile, path: Path, split: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Examples and labels of an open .npz: with its own split the part asked for (split None:
    train then test); else the whole file."""
    keys = npz_keys(z, path)
    if not npz_has_split(keys, path):
        xkey = next((k for k in NPZ_EXAMPLES if k in keys), keys[0])
        ykey = next((k for k in NPZ_LABELS if k in keys), None)
        return npz_member(z, xkey, path), npz_member(z, ykey, path)
    labelled = all(f"y_{s}" in keys for s in NPZ_SPLITS)
    parts = [(npz_member(z, f"x_{s}", path), npz_member(z, f"y_{s}" if labelled else None, path))
             for s in (NPZ_SPLITS if split is None else (split,))]
    if len(parts) == 1:
        return parts[0]
    if len({p[0].shape[1:] for p in parts}) > 1:
        raise VaekitError(f"{path}: x_train has examples of shape {parts[0][0].shape[1:]} but "
                          f"x_test {parts[1][0].shape[1:]}; they must match")
    ys = [p[1] for p in parts]
    return np.concatenate([p[0] for p in parts]), None if ys[0] is None else np.concatenate(ys)


def read_array_file(path: Path, split: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """An .npy array, or an .npz's examples, labels and class names (see NPZ_EXAMPLES)."""
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                return read_npy(f, path.stat().st_size, str(path)), None, None
        with zipfile.ZipFile(path) as z:
            x, y = read_npz(z, path, split)
            names = npz_member(z, NPZ_CLASS_NAMES if NPZ_CLASS_NAMES in npz_keys(z, path) else None,
                               path)
            return x, y, names
    except ARRAY_ERRORS as e:
        raise VaekitError(f"cannot read {path}: corrupt or not a {path.suffix} file "
                          f"({type(e).__name__}); re-save it with numpy.save/savez") from None


def has_own_test_split(source: str) -> bool:
    """A built-in dataset with its own test split, or an .npz holding x_train and x_test."""
    if source in OWN_TEST_SPLIT:
        return True
    path = Path(source)
    if source in BUILTINS or path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return npz_has_split(npz_keys(z, path), path)
    except ARRAY_ERRORS:
        return False  # reading it says what is wrong


def names_of_labels(names: np.ndarray | None, y: np.ndarray | None, where: str) -> list[str] | None:
    """class_names as a list of strings, checked against the labels they name (0..K-1)."""
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise VaekitError(f"{where}: class_names must be a 1-D array of strings, one per class; "
                          "re-save it")
    if y is None or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(names):
        raise VaekitError(f"{where}: class_names names {len(names)} classes, so the labels must be "
                          f"integers 0..{len(names) - 1}; fix the labels or drop class_names")
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in names.tolist()]


def is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


F32_MAX = float(np.finfo(np.float32).max)


def read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Numeric columns; a first row with any non-number is a header."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VaekitError(f"cannot read {path} as CSV ({type(e).__name__}); "
                          "save it as comma-separated UTF-8 text") from None
    if not rows:
        raise VaekitError(f"{path} is empty; give a CSV with one row per example")
    header = rows[0] if not all(is_number(c) for c in rows[0]) else None
    body = rows[1:] if header else rows
    width = len(rows[0])
    label_idx = None
    if label_column is not None:
        if header and label_column in header:
            label_idx = header.index(label_column)
        elif label_column.lstrip("-").isdigit() and -width <= int(label_column) < width:
            label_idx = int(label_column) % width
        else:
            raise VaekitError(f"--label-column {label_column!r} is not a column of {path} "
                              f"(columns: {', '.join(header) if header else width}); name one "
                              "that is (after training: --label-column none if it has none)")
    labels, values = [], []
    for line, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise VaekitError(f"{path} line {line} has {len(row)} fields, expected {width}; "
                              "fix the row")
        if label_idx is not None:
            labels.append(row[label_idx].strip())
        try:
            values.append([float(c) for i, c in enumerate(row) if i != label_idx])
        except ValueError:
            i = next(i for i, c in enumerate(row) if i != label_idx and not is_number(c))
            column = f"column {header[i]!r}" if header else f"column {i} (from 0)"
            what = "is empty" if not row[i].strip() else f"holds {row[i].strip()[:40]!r}"
            raise VaekitError(f"{path} line {line}, {column} {what}, not a number; only numeric "
                              "columns can be modelled (fill or remove the row; name a label "
                              "with --label-column)") from None
        bad = next((v for v in values[-1] if not abs(v) <= F32_MAX), None)  # NaN fails too
        if bad is not None:
            raise VaekitError(f"{path} line {line} has the value {bad:g}: NaN, Inf and values "
                              f"beyond float32's range (±{F32_MAX:.1e}) cannot be modelled; fix "
                              "or remove the row")
    y = None
    if label_idx is not None:
        y = np.array(labels)
        if all(is_number(v) for v in labels):
            y = y.astype(np.float64)
            y = y.astype(np.int64) if np.all(y == np.round(y)) else y
    return np.asarray(values, dtype=np.float32), y


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error)  # Pillow on damaged
# files: UnidentifiedImageError and "truncated" are OSErrors; some chunk parsers raise the others


def read_image_folder(folder: Path, image_size: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images in folder (or in its subfolders, whose names become labels), as uint8 (n, c, h, w)."""
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VaekitError(f"no PNG/JPEG images in {folder}; point --data at a folder of images")
    nested = any(p.parent != folder for p in files)
    images = []
    try:
        with warnings.catch_warnings():  # PIL warns between 89M and 179M pixels, raises above
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for p in files:
                with Image.open(p) as im:
                    im.load()
                    images.append(im.copy())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VaekitError(f"image {p} has more pixels than Pillow reads safely (a possible "
                          "decompression bomb); shrink it or remove it from the folder") from None
    except IMAGE_ERRORS as e:
        raise VaekitError(f"cannot read image {p} ({type(e).__name__}); remove or re-save it") from None
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16") for im in images)
    sizes = {im.size for im in images}
    if image_size is None and len(sizes) > 1:
        raise VaekitError(f"images in {folder} have different sizes {sorted(sizes)[:3]}; "
                          "pass --image-size to resize them")
    arrays = []
    for im in images:
        im = im.convert("L" if gray else "RGB")
        if image_size is not None:
            im = im.resize((image_size, image_size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    labels = np.array([p.parent.name for p in files]) if nested else None
    return np.stack(arrays), labels


def read_user(source: str, label_column: str | None, image_size: int | None, layout: str = "auto",
              split: str | None = None) -> Raw:
    """A file or folder; split ("train"/"test") picks a part of an .npz with its own split."""
    path = Path(source)
    if not path.exists():
        raise VaekitError(f"data {source!r} not found; give {', '.join(BUILTINS)}, or "
                          "the path of a .npy/.npz/.csv/.parquet file or an image folder")
    names = None
    if path.is_dir():
        x, y = read_image_folder(path, image_size)
        layout = "channels-first"  # decoded as (n, c, h, w) whatever the option says
    elif path.suffix in (".npy", ".npz"):
        x, y, names = read_array_file(path, split)
    elif path.suffix == ".csv":
        x, y = read_csv(path, label_column)
    elif path.suffix == ".parquet":  # numeric columns, whole (--stream on reads it by row groups)
        from .streams import ParquetReader

        reader = ParquetReader(str(path), label_column)
        x, y = reader.read(np.arange(len(reader))), reader.labels()
    else:
        raise VaekitError(f"unsupported data file {path.name}; use .npy, .npz, .csv, .parquet or "
                          "a folder of PNG/JPEG images")
    return raw_from_array(x, y, str(path), layout, names)


def raw_from_array(x: np.ndarray, y: np.ndarray | None, where: str, layout: str = "auto",
                   class_names: np.ndarray | None = None) -> Raw:
    """Check an array of examples (and labels) and describe it: file contents or in-memory data."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub" or x.size == 0:
        raise VaekitError(f"{where} holds {x.dtype} data of shape {x.shape}; give a non-empty "
                          "numeric array")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:  # models compute in float32
        big = np.isfinite(x) & (np.abs(x) > F32_MAX)
        if big.any():
            raise VaekitError(f"{where} holds {int(big.sum())} value(s) beyond float32's range "
                              f"(±{F32_MAX:.1e}), e.g. {x[big][0]:g}; rescale the data")
    x, image = as_examples(x, where, layout)
    if y is not None and len(y) != len(x):
        raise VaekitError(f"{where} has {len(x)} examples but {len(y)} labels; they must match")
    names = names_of_labels(class_names, y, where)
    return Raw(x, y, image, 255.0 if x.dtype == np.uint8 else 1.0, names)


def read_source(source: str, cfg, split: str | None = None) -> Raw:
    """What --data (or --test-data) names, cfg a DataConfig: a built-in dataset's split ("train" or
    "test"; None: train); a user file or folder whole, or the part `split` of an .npz with its own
    split (None: train then test)."""
    if source in BUILTINS:
        return BUILTINS[source](split or "train", cfg)
    return read_user(source, cfg.label_column, cfg.image_size, cfg.layout, split)
