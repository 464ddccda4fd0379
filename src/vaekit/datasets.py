"""Built-in datasets (digits, MNIST, Fashion-MNIST, CIFAR-10): where their files live, verified
download, readers; and `Raw`, what every reader (these and the user files of sources.py) returns.

A dataset's own files live in DATA_DIR/NAME, where downloads go (find_idx, find_cifar10)."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import VaekitError
from .tempfiles import new_temp, new_temp_dir, remove_temp


@dataclass
class Raw:
    x: np.ndarray  # (N, *shape): (N, D) tabular, (N, C, H, W) images
    y: np.ndarray | None  # (N,) labels, if any
    image: bool
    pixel_max: float = 1.0  # intrinsic scale of the values (255 for uint8, 16 for digits)
    label_names: list[str] | None = None  # names of the integer labels 0..K-1, where known


# Class names of built-in datasets whose labels are numbers that stand for something else
# (digits and MNIST labels are the digits themselves; an image folder's labels are its subfolder
# names already; an .npz may carry its own under `class_names`).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}


def label_names(name: str) -> list[str] | None:
    return list(CLASS_NAMES[name]) if name in CLASS_NAMES else None


def read_digits(split: str) -> Raw:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16); no own test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return Raw(d.images.astype(np.float32)[:, None], d.target.astype(np.int64), True, 16.0)


# --- verified download --------------------------------------------------------------------------
def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_folders(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist yet, innermost first."""
    return [p for p in (folder, *folder.parents) if not p.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders we made (innermost first) as long as they are empty."""
    for folder in folders:
        if folder.is_dir() and any(folder.iterdir()):
            break
        if folder.is_dir():
            folder.rmdir()


def download(url: str, dest: Path, md5: str, put_in: Path | None = None) -> None:
    """Fetch url to dest, verifying its md5; dest appears only when complete and correct (and the
    folders made for it are removed again when it does not). put_in: where the error message tells
    the user to put the files instead (default: dest's folder)."""
    made = missing_folders(dest.parent)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp(dest)
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
                          f"or put the files in {put_in or dest.parent} (or name the folder that "
                          "holds them with --data-dir)") from None
    finally:
        remove_temp(tmp)
        remove_empty(made if not dest.exists() else [])


# --- MNIST and Fashion-MNIST (IDX files) --------------------------------------------------------
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
    return Raw(x[:, None], y.astype(np.int64), True, 255.0, label_names(name))


# --- CIFAR-10 (the official binary version) -----------------------------------------------------
CIFAR10 = {"url": "https://www.cs.toronto.edu/~kriz/", "archive": "cifar-10-binary.tar.gz",
           "md5": "c32a1d4ab5d03f1284b67883e8d87530", "folder": "cifar-10-batches-bin"}
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CIFAR10_SHAPE = (3, 32, 32)  # each record: 1 label byte, then the R, G, B planes (row-major 32x32)
CIFAR10_RECORD = 1 + math.prod(CIFAR10_SHAPE)


def cifar10_folders(data_dir: Path) -> list[Path]:
    """Where the binary files may be: DATA_DIR itself when it is named cifar10 or
    cifar-10-batches-bin, DATA_DIR/cifar10, the archive's folder in it (where downloads go),
    DATA_DIR/cifar-10-batches-bin (the official archive unpacked in DATA_DIR)."""
    names = ("cifar10", CIFAR10["folder"])
    return ([data_dir] if data_dir.name in names else []) + [
        data_dir / "cifar10", data_dir / "cifar10" / CIFAR10["folder"], data_dir / CIFAR10["folder"]]


def find_cifar10(data_dir: Path, url: str | None) -> Path:
    """The folder holding all six CIFAR-10 batches; downloaded to DATA_DIR/cifar10 when none does."""
    needed = [f for files in CIFAR10_FILES.values() for f in files]
    for folder in cifar10_folders(data_dir):
        missing = [f for f in needed if not (folder / f).is_file()]
        if not missing:
            return folder
        if len(missing) < len(needed):
            raise VaekitError(f"{folder} holds only some of CIFAR-10's binary files (missing "
                              f"{', '.join(missing)}); add them from the official "
                              f"{CIFAR10['archive']} or remove the folder to download them again")
    dest = data_dir / "cifar10" / CIFAR10["folder"]
    download_archive((url or CIFAR10["url"]).rstrip("/") + "/" + CIFAR10["archive"], dest)
    return dest


def download_archive(url: str, dest: Path) -> None:
    """Fetch CIFAR-10's archive (md5-verified) and unpack its binary files into dest: dest appears
    complete or not at all, and the archive is removed again."""
    made = missing_folders(dest.parent)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(new_temp_dir(dest))
    try:
        archive = work / CIFAR10["archive"]
        download(url, archive, CIFAR10["md5"], put_in=dest.parent)
        (work / "out").mkdir()
        extract_flat(archive, CIFAR10["folder"], work / "out", url)
        missing = [f for files in CIFAR10_FILES.values() for f in files
                   if not (work / "out" / f).is_file()]
        if missing:
            raise VaekitError(f"{url} lacks {', '.join(missing)} under {CIFAR10['folder']}/; it "
                              "is not CIFAR-10's binary archive: pass another --data-url")
        try:
            os.rename(work / "out", dest)
        except OSError:
            if not dest.is_dir():  # else another process unpacked it first
                raise
    finally:
        remove_temp(str(work))
        remove_empty(made if not dest.exists() else [])


def extract_flat(archive: Path, folder: str, out: Path, url: str) -> None:
    """Write the regular files directly under `folder` in a .tar.gz into out, flat. Every member's
    name is checked first: an absolute path, a '..' or a link refuses the whole archive."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                if (m.name.startswith(("/", "\\")) or ".." in PurePosixPath(m.name).parts
                        or not (m.isfile() or m.isdir())):
                    raise VaekitError(f"{url} holds an unsafe member {m.name!r} (an absolute path, "
                                      "'..' or a link); nothing was extracted: pass another "
                                      "--data-url or unpack the official archive yourself")
            for m in members:
                name = PurePosixPath(m.name)
                if m.isfile() and name.parent == PurePosixPath(folder):
                    with tar.extractfile(m) as src, open(out / name.name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise VaekitError(f"cannot unpack {url} ({type(e).__name__}: {e}); pass another "
                          "--data-url or unpack the official archive yourself") from None


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: images (n, 3, 32, 32) uint8 (channels-first, R, G, B) and labels (n,)."""
    body = path.read_bytes()
    if not body or len(body) % CIFAR10_RECORD:
        raise VaekitError(f"{path} is not a CIFAR-10 binary batch ({len(body)} bytes, not a "
                          f"multiple of {CIFAR10_RECORD}-byte records); replace it or delete its "
                          "folder so that it is downloaded again")
    records = np.frombuffer(body, np.uint8).reshape(-1, CIFAR10_RECORD)
    y = records[:, 0].astype(np.int64)
    if int(y.max()) >= len(CLASS_NAMES["cifar10"]):
        raise VaekitError(f"{path} has a label {int(y.max())} outside 0..9: it is not a CIFAR-10 "
                          "batch; replace it or delete its folder so that it is downloaded again")
    return records[:, 1:].reshape(-1, *CIFAR10_SHAPE), y


def read_cifar10(split: str, data_dir: str, url: str | None) -> Raw:
    folder = find_cifar10(Path(data_dir), url)
    parts = [read_cifar10_batch(folder / f) for f in CIFAR10_FILES["test" if split == "test" else "train"]]
    x = np.concatenate([p[0] for p in parts])  # a writable copy (the batches are read-only views)
    return Raw(x, np.concatenate([p[1] for p in parts]), True, 255.0, label_names("cifar10"))


BUILTINS = {
    "digits": lambda split, cfg: read_digits(split),
    "mnist": lambda split, cfg: read_idx_dataset("mnist", split, cfg.data_dir, cfg.data_url),
    "fashion-mnist": lambda split, cfg: read_idx_dataset("fashion-mnist", split, cfg.data_dir,
                                                         cfg.data_url),
    "cifar10": lambda split, cfg: read_cifar10(split, cfg.data_dir, cfg.data_url),
}
OWN_TEST_SPLIT = {"mnist", "fashion-mnist", "cifar10"}
