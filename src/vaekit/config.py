"""Typed run configuration: three sections, one flat key space (the CLI options and config files)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .distributions import POSTERIORS, PRIORS, described
from .errors import VaekitError
from .likelihoods import LIKELIHOODS
from .nets import BACKBONES
from .optim import SCHEDULES
from .runtime import check_seed, check_threads, parse_device
from .sources import LAYOUTS

FROM_DATA = "from the data, see config.default_sizes"


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field whose help text becomes the CLI option's --help."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class DataConfig:
    data: str = opt("digits", "digits, mnist, fashion-mnist, cifar10, or a path: "
                    ".npy/.npz/.csv/.parquet file or a folder of PNG/JPEG images")
    data_dir: str = opt("data", "folder holding (or receiving) the built-in datasets' files, each "
                        "in DATA_DIR/NAME (mnist / fashion-mnist IDX files, cifar10's binary batches)")
    data_url: str | None = opt(None, "base URL to download mnist / fashion-mnist / cifar10 from "
                               "(default: the dataset's public mirror)")
    test_data: str | None = opt(None, "separate test file for user data (else --test-fraction "
                                "is held out)")
    test_fraction: float = opt(0.1, "fraction of user data held out as the test set (seeded)")
    val_fraction: float = opt(0.1, "fraction of the training data held out for validation")
    label_column: str | None = opt(None, "CSV column (name or 0-based index) holding labels; "
                                   "it is not modelled")
    image_size: int | None = opt(None, "resize images from a folder to SIZE x SIZE")
    layout: str = opt("auto", "auto | channels-first | channels-last: axis order of 4-D image arrays "
                      "in .npy/.npz files, (n, c, h, w) or (n, h, w, c); auto: the axis of size 1, "
                      "3 or 4 holds the channels (say it when both or neither do)",
                      choices=LAYOUTS)
    dequantize: str = opt("auto", "auto | on | off: uniform dequantization of 8-bit data under "
                          "a continuous likelihood: the levels k become (k + u) / 256, u ~ U[0, 1) "
                          "redrawn every batch (validation/test: drawn once, seeded), so the "
                          "density's figures bound the log-probability of the levels (Theis et al. "
                          "2016); auto: on for uint8 data with a continuous likelihood",
                          choices=("auto", "on", "off"))
    binarize: str = opt("none", "none | dynamic: redraw x ~ Bernoulli(pixel) every batch "
                        "(bernoulli likelihood; test data binarized once, seeded)",
                        choices=("none", "dynamic"))
    perturb: float = opt(0.0, "probability of replacing each value of a training batch by a "
                         "uniform draw over its range, redrawn every batch (Ren et al. 2019's "
                         "background model; validation/test data untouched; 0: off)")
    stream: str = opt("auto", "auto | on | off: read the training data batch by batch instead of "
                      "whole (.npy memory-mapped, .parquet by row groups, image folders decoded per "
                      "batch), its statistics in one streaming pass; auto: on for a .npy/.parquet "
                      "file above 1 GiB", choices=("auto", "on", "off"))
    standardize: str = opt("auto", "auto | on | off: standardize features with training "
                           "statistics (auto: on for tabular data with a gaussian likelihood)",
                           choices=("auto", "on", "off"))


@dataclass
class ModelConfig:
    model: str = opt("vae", "vae, or ae: a plain deterministic autoencoder (the baseline; its "
                     "posterior is a point mass)", choices=("vae", "ae"))
    likelihood: str = opt("auto", "p(x|z): bernoulli | gaussian (learned sigma per value) | "
                          "gaussian-fixed (--sigma) | gaussian-shared (one learned sigma for all "
                          "values) | laplace-fixed (scale --sigma) | discretized-logistic (8-bit "
                          "images, a mixture of --mixtures) | categorical (256 levels) | poisson | "
                          "negative-binomial (count tables); auto: discretized-logistic for 8-bit "
                          "colour images, bernoulli for other images in [0,1], else gaussian")
    sigma: float = opt(1.0, "standard deviation of the gaussian-fixed likelihood, or the scale b "
                       "of laplace-fixed, in model units")
    mixtures: int = opt(10, "discretized-logistic: logistic components per pixel")
    posterior: str = opt("auto", described(POSTERIORS, "q(z|x): ") + "; auto: gaussian for "
                         "--model vae, point for ae")
    prior: str = opt("normal", described(PRIORS, "p(z): "))
    prior_components: int | None = opt(
        None, "mixture components of the mog / vamp / hier-vamp prior (default: "
        + ", ".join(f"{e.components} for {n}" for n, e in PRIORS.items() if e.components) + ")")
    top_latent: int | None = opt(None, "hier / hier-vamp prior, layered posterior: dimensions of "
                                 "the top layer z_2, the last of --latent-dim's (default: a third "
                                 "of them, at least 1)")
    flow_steps: int = opt(2, "iaf posterior: autoregressive (MADE) steps; 0 is the diagonal Gaussian")
    flow_hidden: int = opt(320, "iaf posterior: hidden units of each MADE's two layers")
    backbone: str = opt("auto", "encoder/decoder networks: mlp | linear | conv; auto: conv for "
                        "images of at least 16x16 pixels, else mlp (a tiny image such as 8x8 "
                        "digits, or a table)")
    hidden: tuple[int, ...] | None = opt(None, "hidden layer widths, comma list, e.g. 400 or "
                                         f"512,256 ({FROM_DATA}: 400 for images)")
    channels: tuple[int, ...] = opt((32, 64, 128), "conv backbone: channels per resolution "
                                    "level, finest first, comma list")
    blocks: int = opt(1, "conv backbone: residual blocks per resolution level")
    dropout: float = opt(0.0, "mlp backbone: dropout rate after each hidden layer of the encoder and "
                         "decoder, in training only (0: none)")
    latent_dim: int | None = opt(None, f"number of latent dimensions ({FROM_DATA}: 20 for images)")

    @property
    def posterior_name(self) -> str:
        """The posterior entry: --posterior, or the one --model implies."""
        if self.posterior != "auto":
            return self.posterior
        return "point" if self.model == "ae" else "gaussian"


@dataclass
class TrainConfig:
    epochs: int | None = opt(None, f"maximum number of epochs ({FROM_DATA}: 50 for images)")
    batch_size: int | None = opt(None, f"examples per minibatch ({FROM_DATA}: 128 for images)")
    lr: float = opt(1e-3, "Adam learning rate (the schedule's starting rate)")
    lr_schedule: str = opt("constant", described(SCHEDULES, "learning rate per epoch: "))
    lr_min: float = opt(0.0, "cosine schedule: the rate it falls to at --epochs")
    weight_decay: float = opt(0.0, "decoupled weight decay (AdamW): each step shrinks every "
                              "weight by lr * WEIGHT_DECAY of itself (0: plain Adam)")
    polyak: float = opt(0.0, "Polyak averaging: decay of an exponential moving average of the "
                        "weights, updated every step (after n steps the decay is min(POLYAK, "
                        "(1+n)/(10+n))), which validation, best.pt and the test figures use (e.g. "
                        "0.999; 0: off)")
    seed: int = opt(0, "seed for splits, initialization, shuffling and sampling")
    beta: float = opt(1.0, "weight of the KL term in the ELBO")
    mc_samples: int = opt(1, "Monte Carlo draws of z per example for E_q[log p(x|z)]")
    objective: str = opt("elbo", "training objective: elbo | iwae", choices=("elbo", "iwae"))
    iw_train_samples: int = opt(5, "importance samples per example for --objective iwae")
    kl_warmup: int = opt(0, "epochs over which beta rises linearly from 0 to --beta")
    kl_warmup_steps: int = opt(0, "gradient steps over which beta rises linearly from 0 to "
                               "--beta, step by step (instead of --kl-warmup's epochs: for a fit "
                               "counted in steps, or epochs too long to warm up over)")
    free_bits: float = opt(0.0, "per-dimension KL floor in nats (loss only, never reported)")
    trim: float = opt(0.0, "leave out of each batch's loss the fraction TRIM of its examples with "
                      "the lowest objective (a least-trimmed fit that the worst-explained rows, "
                      "e.g. anomalies in the training data, do not pull on; 0: off)")
    patience: int | None = opt(None, "stop after this many epochs without a better validation "
                               "ELBO, E log p(x|z) - beta*KL with the target beta (0: never; "
                               f"{FROM_DATA}: 10 for images)")
    eval_mc_samples: int = opt(1, "draws of z per example when reporting the ELBO")
    threads: int | None = opt(None, "torch CPU threads (default: torch's choice)")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:N, mps, or auto (cuda if available)")
    amp: str = opt("off", "off | bf16 | fp16: mixed precision (autocast) on CUDA; fp16 also scales "
                   "the loss (GradScaler); refused on other devices", choices=("off", "bf16", "fp16"))
    workers: int = opt(0, "DataLoader worker processes reading a streamed (file-backed) training "
                       "split; 0: the training process reads it")
    tensorboard: bool = opt(False, "also log to TensorBoard in RUN_DIR/tensorboard")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
SIZES = {"hidden": "model", "latent_dim": "model", "epochs": "train", "batch_size": "train",
         "patience": "train"}  # the fields left None follow the data (`default_sizes`)
IMAGE_SIZES: dict[str, Any] = {"batch_size": 128, "epochs": 50, "patience": 10, "hidden": [400],
                               "latent_dim": 20}
PATIENCE_STEPS = 500  # gradient steps early stopping waits for a better validation score


def default_sizes(n: int, d: int, image: bool = False) -> dict[str, Any]:
    """The one rule for sizes left unset (`vaekit train` and `VAEAnomalyDetector`), for n training
    rows of d features. Images: the fixed sizes above. Tables:
    batch = n/100 within [100, 128] (minibatches of at least 100, as in Kingma & Welling 2014),
    or all n rows in one batch when there are fewer than that;
    epochs = enough for about 20000 gradient steps, within [20, 500];
    patience = epochs holding about 500 steps, within [10, epochs] (on a 100-row table an epoch
    is one or two steps: 10 epochs would stop before the latent code forms, a collapsed KL);
    width = 4d rounded up to a power of two within [32, 256], two hidden layers (width, width/2);
    latent = d/2 within [2, 16]."""
    if image:
        return dict(IMAGE_SIZES)
    batch = max(1, min(n, 128, max(100, n // 100)))
    steps = math.ceil(max(n, 1) / batch)  # per epoch
    epochs = min(500, max(20, math.ceil(20_000 / steps)))
    patience = min(epochs, max(10, math.ceil(PATIENCE_STEPS / steps)))
    width = min(256, max(32, 2 ** math.ceil(math.log2(max(4 * d, 1)))))
    latent = min(16, max(2, d // 2))
    return {"batch_size": batch, "epochs": epochs, "patience": patience,
            "hidden": [width, width // 2], "latent_dim": latent}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    def with_sizes(self, n: int, d: int, image: bool) -> Config:
        """This config with the sizes left None set by `default_sizes` (given ones win)."""
        rule = default_sizes(n, d, image)
        sections = {s: {} for s in SECTIONS}
        for key, section in SIZES.items():
            if getattr(getattr(self, section), key) is None:
                sections[section][key] = coerce(SECTIONS[section], key, rule[key])
        return Config(*(dataclasses.replace(getattr(self, s), **kw) for s, kw in sections.items()))

    def to_flat(self) -> dict[str, Any]:
        """One mapping of option name -> value, as written to config.yaml."""
        flat: dict[str, Any] = {}
        for name in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                flat[key] = list(value) if isinstance(value, tuple) else value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Config:
        owner = {f.name: s for s, dc in SECTIONS.items() for f in fields(dc)}
        unknown = sorted(k for k in flat if k.replace("-", "_") not in owner)
        if unknown:
            raise VaekitError(f"unknown config key(s) {', '.join(unknown)}; "
                              "see `vaekit train --help` for the valid options")
        parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for key, value in flat.items():
            key = key.replace("-", "_")
            parts[owner[key]][key] = coerce(SECTIONS[owner[key]], key, value)
        sections = {s: SECTIONS[s](**kw) for s, kw in parts.items()}
        return cls(**sections)


def field_type(dc: type, name: str) -> str:
    return str(next(f.type for f in fields(dc) if f.name == name))


def coerce(dc: type, key: str, value: Any) -> Any:
    """Turn a YAML/CLI value into the field's type, or explain why it cannot be."""
    kind = field_type(dc, key)
    if value is None:
        return None
    try:
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else value
            items = [items] if isinstance(items, int) else items
            return tuple(int(v) for v in items if str(v).strip())
        if kind.startswith("bool"):
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise VaekitError(f"config key {key!r} has value {value!r}, which is not a valid "
                          f"{kind}; fix it in the config file or option") from None


def choices(dc: type, name: str) -> tuple[str, ...] | None:
    """The values a field may take: its `choices`, or the names of the registry it looks up."""
    registries = {"likelihood": ("auto", *LIKELIHOODS), "backbone": ("auto", *BACKBONES),
                  "posterior": ("auto", *POSTERIORS), "prior": tuple(PRIORS),
                  "lr_schedule": tuple(SCHEDULES)}
    if name in registries:
        return registries[name]
    return next(f.metadata.get("choices") for f in fields(dc) if f.name == name)


def choice_problems(cfg: Config) -> list[str]:
    """Every field with a closed set of values, checked the same way (config files included)."""
    problems = []
    for section, dc in SECTIONS.items():
        for f in fields(dc):
            allowed, value = choices(dc, f.name), getattr(getattr(cfg, section), f.name)
            if allowed is not None and value not in allowed:
                problems.append(f"unknown --{f.name.replace('_', '-')} {value!r}; choose "
                                f"{', '.join(allowed)}")
    return problems


def runtime_problems(t: TrainConfig) -> list[str]:
    """--seed, --threads and the --device name, by runtime.py's checks (whether the device exists
    here is `runtime.resolve_device`'s, when a command uses it: a run trained on cuda still reads)."""
    problems = []
    for check, value in ((check_seed, t.seed), (check_threads, t.threads),
                         (parse_device, t.device)):
        try:
            check(value)
        except VaekitError as e:
            problems.append(str(e))
    return problems


def positive(value: int | None) -> bool:
    return value is None or value > 0


def validate(cfg: Config) -> None:
    """Collect every problem with a config into one message that says how to fix it."""
    d, m, t = cfg.data, cfg.model, cfg.train
    entry = PRIORS.get(m.prior)
    layered = (entry is not None and entry.layered) or m.posterior_name == "layered"
    layered_names = " or --prior ".join(n for n, e in PRIORS.items() if e.layered)
    checks = [
        (0 < d.test_fraction < 1, "--test-fraction must be in (0, 1)"),
        (0 < d.val_fraction < 1, "--val-fraction must be in (0, 1)"),
        (d.image_size is None or d.image_size > 0, "--image-size must be positive"),
        (m.sigma > 0, "--sigma must be positive"),
        (m.hidden is None or (len(m.hidden) > 0 and all(h > 0 for h in m.hidden)),
         "--hidden must be a comma list of positive widths, e.g. 400 or 512,256"),
        (positive(m.latent_dim), "--latent-dim must be positive"),
        (len(m.channels) > 0 and all(c > 0 for c in m.channels),
         "--channels must be a comma list of positive channel counts, e.g. 32,64,128"),
        (m.blocks >= 0, "--blocks must be >= 0"),
        (0 <= m.dropout < 1, "--dropout must be in [0, 1): the probability of zeroing a hidden unit"),
        (m.mixtures >= 1, "--mixtures must be >= 1"),
        (positive(m.prior_components), "--prior-components must be positive"),
        (m.top_latent is None or (layered and m.top_latent >= 1
                                  and (m.latent_dim is None or m.top_latent < m.latent_dim)),
         f"--top-latent is the top layer of a two-layer prior or posterior: give --prior "
         f"{layered_names} or --posterior layered, and 1 <= --top-latent < --latent-dim"),
        (not layered or m.latent_dim is None or m.latent_dim >= 2,
         f"--prior {m.prior} / --posterior {m.posterior_name} has two layers: give --latent-dim 2 "
         "or more"),
        (m.flow_steps >= 0, "--flow-steps must be >= 0"),
        (m.flow_hidden >= 1, "--flow-hidden must be >= 1"),
        (t.free_bits == 0 or (m.prior == "normal" and getattr(
            POSTERIORS.get(m.posterior_name), "factorized", True)),
         "--free-bits needs the KL of each latent dimension, which a mog/vamp/hier prior or an "
         "iaf/layered posterior does not have (their KL is not a sum over dimensions): drop "
         "--free-bits"),
        (entry is None or not entry.posteriors or m.posterior_name in entry.posteriors,
         f"--prior {m.prior} is made of the diagonal-Gaussian posteriors of its pseudo-inputs: use "
         f"--posterior {' or '.join(entry.posteriors) if entry else ''}"),
        (m.model == "vae" or m.posterior in ("auto", "point"),
         "--model ae is the point-mass posterior: drop --posterior"),
        (positive(t.epochs), "--epochs must be positive"),
        (positive(t.batch_size), "--batch-size must be positive"),
        (t.lr > 0, "--lr must be positive"),
        (0 <= t.lr_min <= t.lr, "--lr-min must be in [0, --lr]"),
        (0 <= t.weight_decay, "--weight-decay must be >= 0 (0: none)"),
        (0 <= t.polyak < 1, "--polyak must be in [0, 1): the averaging decay, e.g. 0.999 (0: off)"),
        (0 <= d.perturb <= 1, "--perturb must be in [0, 1]: the probability of replacing a value"),
        (t.beta >= 0, "--beta must be >= 0"),
        (t.mc_samples >= 1, "--mc-samples must be >= 1"),
        (t.eval_mc_samples >= 1, "--eval-mc-samples must be >= 1"),
        (t.iw_train_samples >= 1, "--iw-train-samples must be >= 1"),
        (t.kl_warmup >= 0, "--kl-warmup must be >= 0"),
        (t.kl_warmup_steps >= 0, "--kl-warmup-steps must be >= 0"),
        (t.kl_warmup == 0 or t.kl_warmup_steps == 0, "--kl-warmup (epochs) and --kl-warmup-steps "
         "are two ways to give one warm-up: drop one"),
        (t.free_bits >= 0, "--free-bits must be >= 0"),
        (0 <= t.trim < 1, "--trim must be in [0, 1): the fraction of each batch left out of the loss"),
        (t.trim == 0 or t.free_bits == 0, "--trim and --free-bits do not combine: the floor applies "
         "to a batch mean of the KL, the trim to single examples; drop one"),
        (t.patience is None or t.patience >= 0, "--patience must be >= 0"),
        (t.workers >= 0, "--workers must be >= 0"),
        (m.posterior_name != "point" or (t.objective == "elbo" and t.free_bits == 0
                                          and t.kl_warmup == 0 and t.kl_warmup_steps == 0),
         "--model ae has no KL term: drop --objective iwae, --free-bits and --kl-warmup(-steps)"),
        (t.objective == "elbo" or (t.free_bits == 0 and t.kl_warmup == 0
                                   and t.kl_warmup_steps == 0 and t.beta == 1),
         "--objective iwae is a bound on log p(x) with no KL weight: drop --beta, --free-bits "
         "and --kl-warmup(-steps)"),
        (d.binarize == "none" or m.likelihood in ("bernoulli", "auto"),
         "--binarize dynamic needs --likelihood bernoulli"),
    ]
    problems = [msg for ok, msg in checks if not ok] + choice_problems(cfg) + runtime_problems(t)
    if problems:
        raise VaekitError("invalid config: " + "; ".join(problems))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML/JSON config file (the same keys as the options)."""
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"config file {path} not found; check the path given to --config")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise VaekitError(f"config file {path} is not valid YAML/JSON ({type(e).__name__}); "
                          "fix its syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise VaekitError(f"config file {path} must hold a mapping of option: value")
    return raw
