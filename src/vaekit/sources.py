"""Readers: built-in datasets (digits, MNIST, Fashion-MNIST with verified download) and user files
(.npy, .npz, .csv, a folder of images). Each returns a `Raw`: the data as the user gave it."""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import tokenize
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VaekitError


@dataclass
class Raw:
    x: np.ndarray  # (N, *shape): (N, D) tabular, (N, C, H, W) images
    y: np.ndarray | None  # (N,) labels, if any
    image: bool
    pixel_max: float = 1.0  # intrinsic scale of the values (255 for uint8, 16 for digits)


# --- built-in datasets ------------------------------------------------------------------------
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DATASETS = {  # md5 of the official .gz files
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}


def read_digits(split: str) -> Raw:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16); no own test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Raw(d.images.astype(np.float32)[:, None], d.target.astype(np.int64), True, 16.0)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str) -> None:
    """Fetch url to dest, verifying its md5; dest appears only when complete and correct (and the
    folders made for it are removed again when it does not)."""
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # innermost first
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        got = md5sum(Path(tmp))
        if got != md5:
            raise VaekitError(f"checksum mismatch for {url}: expected md5 {md5}, got {got}; "
                              "the mirror serves a different file: pass another --data-url "
                              "or put the official files in --data-dir")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise VaekitError(f"could not download {url} ({e}); check --data-url or your network, "
                          f"or put the files in {dest.parent}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        for folder in made if not dest.exists() else []:
            if any(folder.iterdir()):
                break
            folder.rmdir()


def find_idx(name: str, data_dir: Path, stem: str, url: str | None) -> Path:
    """The IDX file `stem` (.gz or plain) of dataset `name`: in data_dir/name (where downloads go),
    or directly in data_dir when that folder is named `name` or the file is `name`'s official .gz
    (md5); else downloaded to data_dir/name. Another dataset's files are never taken for this one
    (MNIST and Fashion-MNIST use the same file names)."""
    info = IDX_DATASETS[name]
    for candidate in (data_dir / name / f"{stem}.gz", data_dir / name / stem):
        if candidate.is_file():
            return candidate
    flat = [p for p in (data_dir / f"{stem}.gz", data_dir / stem) if p.is_file()]
    for candidate in flat:
        if data_dir.name == name or (candidate.suffix == ".gz"
                                     and md5sum(candidate) == info["md5"][candidate.name]):
            return candidate
    base = (url or info["url"]).rstrip("/") + "/"
    dest = data_dir / name / f"{stem}.gz"
    try:
        download(base + dest.name, dest, info["md5"][dest.name])
    except VaekitError as e:
        if not flat:
            raise
        raise VaekitError(f"{e} ({flat[0]} is not taken for {name}: it is not the official file "
                          f"and {data_dir} is not named {name})") from None
    return dest


def read_at_most(f, n: int, block: int = 1 << 24) -> bytearray:
    """Up to n bytes of f, read in blocks: never allocates more than the file really holds."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(n - len(buf), block))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (unsigned bytes), validated against its own header; writable (N, ...) uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] < 1:
                raise VaekitError(f"{path} is not an IDX file of unsigned bytes; delete or replace it")
            header = f.read(4 * head[3])
            dims = [int.from_bytes(header[4 * i: 4 * i + 4], "big") for i in range(head[3])]
            size = math.prod(dims)  # exact: a header may claim far more than any memory
            body = read_at_most(f, size + 1) if len(header) == 4 * head[3] else bytearray()
    except (OSError, EOFError, zlib.error) as e:
        raise VaekitError(f"{path} is corrupt ({e}); delete it so it is downloaded again") from None
    if len(header) != 4 * head[3] or len(body) != size:
        raise VaekitError(f"{path} is truncated or corrupt (header says {dims}); "
                          "delete it so it is downloaded again")
    return np.frombuffer(body, np.uint8).reshape(dims)  # a bytearray's buffer: writable


def read_idx_dataset(name: str, split: str, data_dir: str, url: str | None) -> Raw:
    images_stem, labels_stem = IDX_FILES["test" if split == "test" else "train"]
    folder = Path(data_dir)
    x = read_idx(find_idx(name, folder, images_stem, url))
    y = read_idx(find_idx(name, folder, labels_stem, url))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise VaekitError(f"{name} files in {folder} do not match (images {x.shape}, "
                          f"labels {y.shape}); replace them")
    return Raw(x[:, None], y.astype(np.int64), True, 255.0)


# --- user files ---------------------------------------------------------------------------------
def as_examples(x: np.ndarray, path: Path | str) -> tuple[np.ndarray, bool]:
    """(n, d) tabular, (n, h, w) or (n, c, h, w) images (channels-last is moved first)."""
    if x.ndim == 2:
        return x, False
    if x.ndim == 3:
        return x[:, None], True
    if x.ndim == 4:
        if x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            x = np.moveaxis(x, -1, 1)
        return x, True
    raise VaekitError(f"{path} holds an array of shape {x.shape}; expected (n, d) tabular, "
                      "(n, h, w) or (n, c, h, w) images")


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


def read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npy array, or from an .npz the arrays under X (or x, data, the first) and y (labels)."""
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                return read_npy(f, path.stat().st_size, str(path)), None
        with zipfile.ZipFile(path) as z:
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            if not keys:
                raise VaekitError(f"{path} holds no arrays; save one under the key 'X'")
            xkey = next((k for k in ("X", "x", "data") if k in keys), keys[0])
            ykey = next((k for k in ("y", "Y", "labels") if k in keys), None)
            return npz_member(z, xkey, path), npz_member(z, ykey, path)
    except ARRAY_ERRORS as e:
        raise VaekitError(f"cannot read {path}: corrupt or not a {path.suffix} file "
                          f"({type(e).__name__}); re-save it with numpy.save/savez") from None


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
            raise VaekitError(f"{path} line {line} has a non-numeric value; only numeric "
                              "columns can be modelled (name a label with --label-column)") from None
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


def read_user(source: str, label_column: str | None, image_size: int | None) -> Raw:
    path = Path(source)
    if not path.exists():
        raise VaekitError(f"data {source!r} not found; give digits, mnist, fashion-mnist, or "
                          "the path of a .npy/.npz/.csv file or an image folder")
    if path.is_dir():
        x, y = read_image_folder(path, image_size)
    elif path.suffix in (".npy", ".npz"):
        x, y = read_array_file(path)
    elif path.suffix == ".csv":
        x, y = read_csv(path, label_column)
    else:
        raise VaekitError(f"unsupported data file {path.name}; use .npy, .npz, .csv or a folder "
                          "of PNG/JPEG images")
    return raw_from_array(x, y, str(path))


def raw_from_array(x: np.ndarray, y: np.ndarray | None, where: str) -> Raw:
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
    x, image = as_examples(x, where)
    if y is not None and len(y) != len(x):
        raise VaekitError(f"{where} has {len(x)} examples but {len(y)} labels; they must match")
    return Raw(x, y, image, 255.0 if x.dtype == np.uint8 else 1.0)


BUILTINS = {
    "digits": lambda split, cfg: read_digits(split),
    "mnist": lambda split, cfg: read_idx_dataset("mnist", split, cfg.data_dir, cfg.data_url),
    "fashion-mnist": lambda split, cfg: read_idx_dataset("fashion-mnist", split, cfg.data_dir,
                                                         cfg.data_url),
}
OWN_TEST_SPLIT = {"mnist", "fashion-mnist"}


def read_source(source: str, cfg, split: str = "train") -> Raw:
    """Read a built-in dataset's split, or a whole user file/folder."""
    if source in BUILTINS:
        return BUILTINS[source](split, cfg)
    return read_user(source, cfg.label_column, cfg.image_size)
