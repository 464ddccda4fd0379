"""Turn a data source into model-space tensors: checks, seeded splits, preprocessing, binarization.

Data as the user gave it -> `x_model = (x - shift) / scale` per feature: pixels are divided by
their maximum (255 for uint8), tabular features standardized with training statistics when asked.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import Config, DataConfig
from .errors import VaekitError
from .likelihoods import LIKELIHOODS, LikelihoodOptions, build_likelihood
from .nets import resolve_backbone
from .sources import BUILTINS, OWN_TEST_SPLIT, Raw, has_own_test_split, raw_from_array, read_source
from .streams import streaming

BINARIZE_SEED_OFFSET = 7919  # test/val binarization draws from seed + this, apart from training


@dataclass
class Dataset:
    """Model-space splits, flat (N, D) float32, plus what it takes to describe and invert them.
    A streamed split (--stream) is a `streams.FileRows`: sliced like a tensor, read on demand."""

    x_train: Tensor
    x_val: Tensor
    x_test: Tensor
    y_train: np.ndarray | None
    y_val: np.ndarray | None
    y_test: np.ndarray | None
    shape: tuple[int, ...]
    image: bool
    shift: Tensor
    scale: Tensor
    likelihood: str
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> tuple[Tensor, np.ndarray | None]:
        if name not in ("train", "val", "test"):
            raise VaekitError(f"unknown split {name!r}; choose train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(x: np.ndarray, name: str) -> None:
    """NaN/Inf, or a value past float32's range (the model computes in float32): one line."""
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = int((~(np.abs(x) <= FLOAT32_MAX)).sum())  # NaN compares False
        if bad:
            raise VaekitError(f"{name} contains {bad} NaN/Inf value(s) or value(s) beyond "
                              f"float32's range (|x| > {FLOAT32_MAX:.3g}); remove or impute them first")


# A feature is constant when its spread is at the float32 rounding of its own values (the model
# computes in float32), or below the smallest normal float32: it keeps scale 1 (no division by ~0).
CONSTANT_RTOL = float(np.finfo(np.float32).eps)
CONSTANT_ATOL = float(np.finfo(np.float32).tiny)


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (shift, scale), float64 (D,), from training rows: mean and standard deviation
    of the float32 values the model sees; scale 1 for a constant feature, decided per feature
    relative to its own magnitude (|std| <= eps32 * |mean| + tiny32), not to the other features."""
    x = x.reshape(len(x), -1).astype(np.float32).astype(np.float64)
    return scale_of(x.mean(0), x.std(0))


def scale_of(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) from float64 means and standard deviations (in memory or streamed)."""
    constant = std <= CONSTANT_RTOL * np.abs(mean) + CONSTANT_ATOL
    return mean, np.where(constant, 1.0, std)


def seeded_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): a seeded permutation, held-out part of size round(n*fraction)."""
    perm = np.random.RandomState(seed).permutation(n)
    held = max(1, int(round(n * fraction)))
    if held >= n:
        raise VaekitError(f"only {n} examples: too few to hold out {fraction:g} of them; "
                          "give more data or a smaller fraction")
    return np.sort(perm[held:]), np.sort(perm[:held])


def take(raw: Raw, idx: np.ndarray) -> Raw:
    return Raw(raw.x[idx], None if raw.y is None else raw.y[idx], raw.image, raw.pixel_max,
               raw.label_names)


def binarize_fixed(x: Tensor, seed: int) -> Tensor:
    """Binarize once with a fixed seed (the test-set protocol for dynamically binarized MNIST)."""
    g = torch.Generator().manual_seed(seed + BINARIZE_SEED_OFFSET)
    return torch.bernoulli(x, generator=g)


def dequantize_fixed(x: Tensor, seed: int) -> Tensor:
    """Dequantize model-space levels k / 256 once with a fixed seed: (k + u) / 256, u ~ U[0, 1)."""
    g = torch.Generator().manual_seed(seed + BINARIZE_SEED_OFFSET)
    return x + torch.rand(x.shape, generator=g) / 256


def resolve_dequantize(option: str, likelihood, standardize: bool, raw: Raw) -> bool:
    """Whether 8-bit data is dequantized: 'on', or 'auto' for uint8 data under a continuous
    likelihood (a density of the levels themselves would be unbounded); refused where it cannot
    apply (other data, a probability mass function, standardized features)."""
    eight_bit, continuous = raw.x.dtype == np.uint8, likelihood.continuous
    if option == "auto":
        return eight_bit and continuous and not standardize
    if option == "on" and not (eight_bit and continuous and not standardize):
        raise VaekitError(f"--dequantize on needs 8-bit (uint8) data under a continuous "
                          f"likelihood, not standardized; this data is {raw.x.dtype} with "
                          f"{type(likelihood).__name__}: drop --dequantize or pass --standardize off")
    return option == "on"


def resolve_likelihood(name: str, raw: Raw) -> str:
    """'auto' -> discretized-logistic for 8-bit colour images (uint8, more than one channel: a pmf
    of the 256 levels); bernoulli for other images whose (pixel-scaled) values lie in [0, 1] (grey
    8-bit images such as MNIST keep the published protocol's Bernoulli); else gaussian (tabular
    data: gaussian, standardized, even when its values happen to lie in [0, 1])."""
    if name != "auto":
        return name
    if raw.image and raw.x.dtype == np.uint8 and raw.x.shape[1] > 1:
        return "discretized-logistic"
    in_unit = float(raw.x.min()) >= 0 and float(raw.x.max()) <= raw.pixel_max
    return "bernoulli" if raw.image and in_unit else "gaussian"


def to_model_space(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> Tensor:
    flat = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32))
    return (flat - torch.from_numpy(shift)) / torch.from_numpy(scale)


def read_splits(cfg: Config) -> tuple[Raw, Raw]:
    """The run's data as given: (train, test) before the validation split."""
    d = cfg.data
    own = has_own_test_split(d.data)  # a built-in's, or an .npz's x_test
    if own and d.test_data is not None:
        raise VaekitError(f"--data {d.data} has its own test split; drop --test-data")
    train = read_source(d.data, d, "train")
    test = d.data if own else d.test_data
    return with_test(train, None if test is None else read_source(test, d, "test"), cfg)


def with_test(train: Raw, test: Raw | None, cfg: Config) -> tuple[Raw, Raw]:
    """(train, test): the given test data (of the same shape), or a seeded hold-out of train."""
    if test is None:
        keep, held = seeded_split(len(train.x), cfg.data.test_fraction, cfg.train.seed)
        return take(train, keep), take(train, held)
    if test.x.shape[1:] != train.x.shape[1:]:
        raise VaekitError(f"the test examples have shape {test.x.shape[1:]} but the training "
                          f"examples {train.x.shape[1:]}; they must match")
    return train, test


def load_dataset(cfg: Config) -> tuple[Dataset, Config]:
    """Read, split and preprocess the run's data; returns it with `likelihood` resolved
    (read batch by batch, `streamed_dataset`, when --stream says so)."""
    if streaming(cfg.data.data, cfg.data.stream):
        from .stream_data import streamed_dataset

        return streamed_dataset(cfg)
    return make_dataset(*read_splits(cfg), cfg)


IN_MEMORY = "in-memory-arrays"  # the data source of a run trained on arrays (no file to read again)


def dataset_from_arrays(x: np.ndarray, cfg: Config, y: np.ndarray | None = None,
                        x_test: np.ndarray | None = None) -> tuple[Dataset, Config]:
    """In-memory data ((n, d) tabular or (n, [c,] h, w) images) -> Dataset, as for a file. The
    config that comes back names IN_MEMORY as its data (config.yaml, manifest.json), so a command
    after training asks for --data instead of reading the config's default dataset."""
    cfg = copy.deepcopy(cfg)
    cfg.data.data, cfg.data.test_data = IN_MEMORY, None
    layout = cfg.data.layout
    test = None if x_test is None else raw_from_array(x_test, None, "the test array", layout)
    return make_dataset(*with_test(raw_from_array(x, y, "the array", layout), test, cfg), cfg)


def make_dataset(train: Raw, test: Raw, cfg: Config) -> tuple[Dataset, Config]:
    """Validation split, checks, preprocessing (fit on training data), binarization."""
    d, seed = cfg.data, cfg.train.seed
    keep, held = seeded_split(len(train.x), d.val_fraction, seed + 1)
    train, val = take(train, keep), take(train, held)
    for raw, name in ((train, "the training split"),
                      (val, "the validation split (rows held out of the training data)"),
                      (test, "the test split")):
        check_finite(raw.x, name)

    likelihood, lik, standardize, dequantize, shift, scale = preprocessing(
        train, cfg, lambda: standardization(train.x))
    xs = {n: to_model_space(r.x, shift, scale) for n, r in (("train", train), ("val", val),
                                                           ("test", test))}
    for n, x in xs.items():
        lik.check(x, f"the {n} data")
    if d.binarize == "dynamic":
        xs["val"], xs["test"] = binarize_fixed(xs["val"], seed), binarize_fixed(xs["test"], seed + 1)
    if dequantize:
        xs["val"], xs["test"] = (dequantize_fixed(xs["val"], seed),
                                 dequantize_fixed(xs["test"], seed + 1))

    info = resolve_config(cfg, likelihood, standardize, dequantize, train, scale) | {
        "n_train": len(train.x), "n_val": len(val.x), "n_test": len(test.x)}
    ds = Dataset(xs["train"], xs["val"], xs["test"], train.y, val.y, test.y,
                 tuple(train.x.shape[1:]), train.image, torch.from_numpy(shift),
                 torch.from_numpy(scale), likelihood, info)
    return ds, cfg


def preprocessing(train: Raw, cfg: Config, fit_standardization) -> tuple[str, Any, bool, bool,
                                                                         np.ndarray, np.ndarray]:
    """(likelihood name, likelihood, standardized?, dequantized?, shift, scale (float32 (D,)))
    for training data `train` (its values, or for streamed data two rows holding each feature's
    min and max: what the 'auto' rules read); fit_standardization() -> (shift, scale) float64."""
    d = cfg.data
    dim = int(np.prod(train.x.shape[1:]))
    likelihood = resolve_likelihood(cfg.model.likelihood, train)
    standardize = d.standardize == "on" or (
        d.standardize == "auto" and not train.image and LIKELIHOODS[likelihood].standardize)
    lik = build_likelihood(likelihood, tuple(train.x.shape[1:]), LikelihoodOptions.from_config(cfg.model))
    dequantize = resolve_dequantize(d.dequantize, lik, standardize, train)
    if standardize:
        shift, scale = fit_standardization()
    else:  # dequantized levels k + u lie in [0, 256): model space [0, 1)
        unit = train.pixel_max if LIKELIHOODS[likelihood].scaled else 1.0  # counts: as given
        shift, scale = np.zeros(dim), np.full(dim, 256.0 if dequantize else unit)
    if d.binarize == "dynamic" and likelihood != "bernoulli":
        raise VaekitError(f"--binarize dynamic needs a bernoulli likelihood, but this data got "
                          f"{likelihood}; pass --likelihood bernoulli (data in [0, 1])")
    return likelihood, lik, standardize, dequantize, shift.astype(np.float32), scale.astype(np.float32)


def resolve_config(cfg: Config, likelihood: str, standardize: bool, dequantize: bool, train: Raw,
                   scale: np.ndarray) -> dict[str, Any]:
    """Record what the data decided in cfg; returns the data description (manifest.json)."""
    d = cfg.data
    cfg.model.likelihood = likelihood
    cfg.model.backbone = resolve_backbone(cfg.model.backbone, tuple(train.x.shape[1:]))
    cfg.data.standardize = "on" if standardize else "off"
    cfg.data.dequantize = "on" if dequantize else "off"
    return {"source": d.data, "shape": list(train.x.shape[1:]), "image": train.image,
            "labels": train.y is not None, "preprocessing": "standardized" if standardize
            else "dequantized: (levels + U[0, 1)) / 256" if dequantize
            else f"divided by {float(scale[0]):g}", "binarize": d.binarize, "dequantize": dequantize,
            "label_names": train.label_names}


@functools.lru_cache(maxsize=1)
def run_dataset(flat_config: str) -> Dataset:
    """A run's own data, read and split once per process (several splits are often asked for)."""
    return load_dataset(Config.from_flat(json.loads(flat_config)))[0]


def load_for_model(model, cfg: Config, source: str | None = None, split: str = "test",
                   lazy: bool = False, **reading: Any) -> tuple[Tensor, np.ndarray | None]:
    """Data for a trained model in its model space (N, D), and its labels (or None):
    source None, or the name of the run's own built-in dataset: the run's own split (the very rows
    it trained, validated or tested on); another built-in dataset: the split a run with this config
    would make of it (`raw_split`); a file or folder: every example in file order (`split` does not
    apply).
    reading: DataConfig fields that say where and how to read, overriding the run's own: where
    built-in files are (data_dir, data_url), and how to read a file (label_column, image_size;
    the run's own data is always read as it was for training; stream: --stream for a file).
    lazy: the caller reads x in contiguous slices only (evaluation, encoding): a streamed split,
    or a file that --stream (auto: over 1 GiB) says to stream, comes back as `streams.FileRows`,
    read chunk by chunk in file order; otherwise x is a tensor."""
    if split not in SPLITS:
        raise VaekitError(f"unknown split {split!r}; choose train, val or test")
    if source is None and cfg.data.data == IN_MEMORY:
        raise VaekitError("this run was trained on arrays held in memory, which the run folder does "
                          "not keep; give the data to use with --data FILE")
    if source is None or (source == cfg.data.data and source in BUILTINS):
        cfg = with_reading(cfg, **{k: v for k, v in reading.items() if k in WHERE_FIELDS})
        x, y = run_dataset(json.dumps(cfg.to_flat(), sort_keys=True)).split(split)
        x = x if lazy or isinstance(x, Tensor) else x[:]  # a streamed run's split, read whole
        check_model_shape(model, (model.dim,) if not isinstance(x, Tensor) else x.shape[1:],
                          cfg.data.data)
        return x, y
    stream = reading.pop("stream", "auto")  # a file's own size decides, not the run's option
    cfg = with_reading(cfg, **reading)
    if lazy and source not in BUILTINS and streaming(source, stream):
        from .stream_data import file_for_model

        return file_for_model(model, cfg, source)
    if source in BUILTINS:
        cfg.data.data, cfg.data.test_data = source, None  # the run's --test-data is not NAME's
        raw, seed = raw_split(cfg, split), BINARIZE_SPLIT_SEED.get(split)
    else:
        raw, seed = read_source(source, cfg.data), BINARIZE_SPLIT_SEED["test"]
    check_model_shape(model, raw.x.shape[1:], source)
    check_finite(raw.x, source)
    x = model.prepare(raw.x).cpu()
    model.likelihood.check(x, source)
    if cfg.data.binarize == "dynamic" and seed is not None:  # as the run's own val/test splits
        x = binarize_fixed(x, cfg.train.seed + seed)
    if cfg.data.dequantize == "on":  # as the run's own test split: noise drawn once, seeded
        x = dequantize_fixed(x, cfg.train.seed + (BINARIZE_SPLIT_SEED["test"] if seed is None
                                                  else seed))
    return x, raw.y


# --- data for a trained run (load_for_model's helpers) ------------------------------------------
SPLITS = ("train", "val", "test")
WHERE_FIELDS = ("data_dir", "data_url")  # where a built-in's files are: may move after training
BINARIZE_SPLIT_SEED = {"val": 0, "test": 1}  # offsets from the seed: as make_dataset binarizes


def with_reading(cfg: Config, **reading: Any) -> Config:
    """A copy of cfg whose data section reads from elsewhere (data_dir, label_column, ...)."""
    unknown = sorted(set(reading) - {f.name for f in dataclasses.fields(DataConfig)})
    if unknown:
        raise VaekitError(f"unknown data option(s) {', '.join(unknown)}")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **reading))


def raw_split(cfg: Config, split: str) -> Raw:
    """One split of cfg's data as given, the rows make_dataset puts there: test from read_splits
    (a built-in's own test split, --test-data, or a seeded --test-fraction), val a seeded
    --val-fraction of the rest (seed + 1), train the remainder."""
    if split == "test" and cfg.data.data in OWN_TEST_SPLIT:  # no need to read the train files
        return read_source(cfg.data.data, cfg.data, "test")
    train, test = read_splits(cfg)
    if split == "test":
        return test
    keep, held = seeded_split(len(train.x), cfg.data.val_fraction, cfg.train.seed + 1)
    return take(train, keep if split == "train" else held)


def check_model_shape(model, shape: tuple[int, ...], source: str) -> None:
    if tuple(shape) != tuple(model.input_shape) and int(np.prod(shape)) != model.dim:
        raise VaekitError(f"{source} has examples of shape {tuple(shape)} but the model was "
                          f"trained on shape {tuple(model.input_shape)}; give matching data")
