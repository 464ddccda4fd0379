"""Data larger than RAM: file sources read batch by batch, and their statistics in one pass.

A `Reader` opens a file lazily (in each process and DataLoader worker that reads it) and returns
the rows asked for, as the user gave them, example-shaped: memory-mapped `.npy`
(`np.load(mmap_mode="r")`: only the rows of a batch are paged in), Parquet (numeric columns, read
by row groups; a --label-column is kept aside), and image folders (each image decoded when its
batch is read, in the DataLoader's worker processes). `FileRows` is one split of such a file in
model space: it slices like a tensor (evaluation reads it chunk by chunk, in order) and is its own
source of training batches (`batches.py`'s order and sharding). `Moments` is the one streaming
pass for preprocessing: Chan et al.'s pairwise update of count, mean and sum of squares in float64,
with min, max and the NaN/Inf count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .batches import local_batches
from .distributed import SINGLE, Group, derive_seed
from .errors import VaekitError
from .sources import ARRAY_ERRORS, IMAGE_SUFFIXES, as_examples

CHUNK_ROWS = 1000  # rows per read in the statistics pass, and per block of fixed noise
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Moments:
    """Per-feature count, mean, sum of squared deviations (m2), min, max in float64, and the
    number of values that are NaN/Inf or beyond float32 (the model computes in float32)."""

    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    bad: int = 0

    def add(self, x: np.ndarray) -> None:
        """Merge a chunk (b, ...) of float32-representable values (Chan, Golub & LeVeque 1979)."""
        x = x.reshape(len(x), -1)
        if len(x) == 0:
            return
        if x.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = int((~(np.abs(x) <= FLOAT32_MAX)).sum())  # NaN compares False
            if bad:  # the data is refused: only the count matters
                self.bad += bad
                return
        x = x.astype(np.float32).astype(np.float64)  # the values the model sees
        b, mean_b = len(x), x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        lo, hi = x.min(0), x.max(0)
        if self.mean is None:
            self.n, self.mean, self.m2, self.lo, self.hi = b, mean_b, m2_b, lo, hi
            return
        n = self.n + b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (b / n)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * b / n)
        self.lo, self.hi, self.n = np.minimum(self.lo, lo), np.maximum(self.hi, hi), n

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (numpy's std, ddof 0)."""
        return np.sqrt(self.m2 / self.n)


# --- readers ------------------------------------------------------------------------------
@dataclass
class NpyReader:
    """A .npy file, memory-mapped for each read and unmapped after it (pages a long-lived map
    touched would count in the process's resident memory until the kernel took them back);
    rows come out example-shaped as `sources.as_examples` says."""

    path: str
    layout: str = "auto"
    header: tuple | None = None  # (offset, dtype, shape, order) of the array in the file

    def mapped(self) -> np.ndarray:
        if self.header is None:
            try:
                a = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except ARRAY_ERRORS as e:
                raise VaekitError(f"cannot memory-map {self.path}: corrupt, truncated or not a "
                                  f".npy file ({type(e).__name__}); re-save it with numpy.save"
                                  ) from None
            if a.dtype.kind not in "fiub" or a.ndim < 2 or a.size == 0:
                raise VaekitError(f"{self.path} holds {a.dtype} data of shape {a.shape}; give a "
                                  "non-empty numeric array of (n, d) rows or (n, ...) images")
            order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
            self.header = (a.offset, a.dtype, a.shape, order)
            return a
        offset, dtype, shape, order = self.header
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)

    def __len__(self) -> int:
        if self.header is None:
            self.mapped()
        return self.header[2][0]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows (sorted file indices) as (b, *shape); the map is dropped on return."""
        x = np.array(self.mapped()[rows])
        return as_examples(x, self.path, self.layout)[0]


@dataclass
class ParquetReader:
    """A Parquet file's numeric columns, read one row group at a time (the last one cached);
    the --label-column, if named, is read whole (one value per row) and not modelled."""

    path: str
    label_column: str | None = None
    columns: list[str] = field(default_factory=list)
    starts: np.ndarray | None = None  # first row of each row group, and the total at the end
    _cache: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        pq = parquet()
        try:
            meta = pq.ParquetFile(self.path)
        except (OSError, ValueError) as e:
            raise VaekitError(f"cannot read {self.path} as Parquet ({type(e).__name__}); "
                              "re-save it with pyarrow or pandas") from None
        schema = meta.schema_arrow
        if self.label_column is not None and self.label_column not in schema.names:
            raise VaekitError(f"--label-column {self.label_column!r} is not a column of "
                              f"{self.path} (columns: {', '.join(schema.names)})")
        import pyarrow.types as pt

        bad = [f.name for f in schema if f.name != self.label_column
               and not (pt.is_integer(f.type) or pt.is_floating(f.type) or pt.is_boolean(f.type))]
        if bad:
            raise VaekitError(f"{self.path} column {bad[0]!r} is not numeric; only numeric "
                              "columns can be modelled (name a label with --label-column, or "
                              "drop the column)")
        self.columns = [n for n in schema.names if n != self.label_column]
        if not self.columns or meta.metadata.num_rows == 0:
            raise VaekitError(f"{self.path} has no numeric rows to model")
        sizes = [meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def labels(self) -> np.ndarray | None:
        if self.label_column is None:
            return None
        return parquet().read_table(self.path, columns=[self.label_column]).column(0).to_numpy()

    def group(self, g: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != g:
            table = parquet().ParquetFile(self.path).read_row_group(g, columns=self.columns)
            values = np.stack([c.to_numpy(zero_copy_only=False).astype(np.float32)
                               for c in table.columns], 1)
            self._cache = (g, values)
        return self._cache[1]

    def read(self, rows: np.ndarray) -> np.ndarray:
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), len(self.columns)), np.float32)
        for g in np.unique(groups):
            pick = groups == g
            out[pick] = self.group(int(g))[rows[pick] - self.starts[g]]
        return out

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}


def parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VaekitError("reading Parquet needs pyarrow: pip install pyarrow") from None
    return pq


@dataclass
class ImageFolderReader:
    """PNG/JPEG files under a folder (subfolder names are labels), decoded per batch as
    `sources.read_image_folder` decodes them all: grey when every image is, else RGB."""

    path: str
    image_size: int | None = None
    files: list[str] = field(default_factory=list)
    gray: bool = True

    def __post_init__(self) -> None:
        from PIL import Image

        folder = Path(self.path)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VaekitError(f"no PNG/JPEG images in {folder}; point --data at a folder of images")
        sizes, self.files = set(), [str(p) for p in files]
        self.nested = any(p.parent != folder for p in files)
        for p in files:  # headers only: mode and size
            try:
                with Image.open(p) as im:
                    sizes.add(im.size)
                    self.gray = self.gray and im.mode in ("1", "L", "LA", "I", "I;16")
            except OSError as e:
                raise VaekitError(f"cannot read image {p} ({type(e).__name__}); remove or "
                                  "re-save it") from None
        if self.image_size is None and len(sizes) > 1:
            raise VaekitError(f"images in {folder} have different sizes {sorted(sizes)[:3]}; "
                              "pass --image-size to resize them")

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray | None:
        return np.array([Path(f).parent.name for f in self.files]) if self.nested else None

    def read(self, rows: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = []
        for i in rows:
            with Image.open(self.files[i]) as im:
                im = im.convert("L" if self.gray else "RGB")
                if self.image_size is not None:
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
            out.append(a[None] if self.gray else a.transpose(2, 0, 1))
        return np.stack(out)


STREAM_AUTO_BYTES = 1 << 30  # --stream auto: a .npy/.parquet file above 1 GiB is streamed
STREAMABLE = (".npy", ".parquet")


def streaming(source: str | None, option: str) -> bool:
    """Whether --data is read batch by batch (--stream on), or whole (off); auto: a .npy or
    .parquet file larger than STREAM_AUTO_BYTES."""
    if option == "on":
        return True
    path = Path(source) if source else None
    return (option == "auto" and path is not None and path.suffix in STREAMABLE
            and path.is_file() and path.stat().st_size > STREAM_AUTO_BYTES)


def open_reader(source: str, cfg) -> NpyReader | ParquetReader | ImageFolderReader:
    """The streaming reader of a path (cfg: a DataConfig)."""
    path = Path(source)
    if not path.exists():
        raise VaekitError(f"data {source!r} not found; give a .npy or .parquet file or an image "
                          "folder to stream")
    if path.is_dir():
        return ImageFolderReader(source, cfg.image_size)
    if path.suffix == ".npy":
        reader = NpyReader(source, cfg.layout)
        reader.read(np.arange(min(2, len(reader))))  # the layout rule, now: one clear error
        return reader
    if path.suffix == ".parquet":
        return ParquetReader(source, cfg.label_column)
    raise VaekitError(f"--stream reads .npy, .parquet files and image folders, not {path.name}; "
                      "pass --stream off")


def reader_labels(reader) -> np.ndarray | None:
    return reader.labels() if hasattr(reader, "labels") else None


def chunks(reader, rows: np.ndarray, size: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    for i in range(0, len(rows), size):
        yield reader.read(rows[i:i + size])


def moments(reader, rows: np.ndarray) -> Moments:
    m = Moments()
    for x in chunks(reader, rows):
        m.add(x)
    return m


# --- a split of a file, in model space -----------------------------------------------------
@dataclass
class FileRows:
    """Rows `rows` (sorted file indices) of a reader, mapped to model space (x - shift) / scale,
    (N, D) float32; `noise` ("binarize" | "dequantize" | None) drawn once per block of
    CHUNK_ROWS rows from (seed, block), so any slice sees the same values."""

    reader: object
    rows: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    noise: str | None = None
    seed: int = 0
    workers: int = 0
    data_mean: np.ndarray | None = None  # of the rows as given, where the stats pass had it

    def __len__(self) -> int:
        return len(self.rows)

    def model_space(self, x: np.ndarray) -> Tensor:
        flat = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), len(self.shift)),
                                                     dtype=np.float32))
        return (flat - torch.from_numpy(self.shift)) / torch.from_numpy(self.scale)

    def read(self, rows: np.ndarray) -> Tensor:
        """File rows in the order given (read in file order)."""
        order = np.argsort(rows, kind="stable")
        x = self.reader.read(rows[order])
        return self.model_space(x[np.argsort(order, kind="stable")])

    def __getitem__(self, key: slice) -> Tensor:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileRows is read in contiguous slices")
        start, stop, _ = key.indices(len(self))
        x = self.read(self.rows[start:stop])
        return x if self.noise is None or len(x) == 0 else self.fixed_noise(x, start)

    def fixed_noise(self, x: Tensor, start: int) -> Tensor:
        first, last = start // CHUNK_ROWS, (start + len(x) - 1) // CHUNK_ROWS
        blocks = []
        for b in range(first, last + 1):
            g = torch.Generator().manual_seed(derive_seed(self.seed, b))
            blocks.append(torch.rand((CHUNK_ROWS, x.shape[1]), generator=g))
        u = torch.cat(blocks)[start - first * CHUNK_ROWS:][:len(x)]
        return (u < x).float() if self.noise == "binarize" else x + u / 256

    def mean_row(self) -> Tensor:
        """(1, D) the model-space mean of the rows (for the decoder's initial bias)."""
        mean = self.data_mean if self.data_mean is not None else moments(self.reader, self.rows).mean
        return self.model_space(mean[None].astype(np.float32))

    def epoch(self, order: Tensor, batch_size: int, group: Group = SINGLE,
              pin: bool = False) -> Iterator[tuple[Tensor, int]]:
        """(local batch, global batch size): `batches.local_batches`, read by `workers`
        DataLoader processes (each the global batches j = w mod workers) or by this one."""
        part = EpochPart(self, order, batch_size, group)
        if self.workers == 0:
            return ((x.pin_memory() if pin else x, total) for x, total in part)
        return iter(DataLoader(part, batch_size=None, num_workers=self.workers, pin_memory=pin))


class EpochPart(IterableDataset):
    """One rank's batches of one epoch; each DataLoader worker reads its share of them."""

    def __init__(self, rows: FileRows, order: Tensor, batch_size: int, group: Group):
        self.rows, self.order, self.batch_size, self.group = rows, order, batch_size, group

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for _, idx, total in local_batches(self.order, self.batch_size, self.group, worker,
                                           workers):
            yield self.rows.read(self.rows.rows[idx.numpy()]), total
