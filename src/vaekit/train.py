"""The one training loop: minibatch Adam on a registry objective, validation, early stopping,
best/last checkpoints, exact resume (model, optimizer, RNG state, epoch), per-epoch hooks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .config import Config
from .data import Dataset, load_dataset
from .errors import VaekitError
from .evaluate import evaluate
from .hooks import Hook, default_hooks
from .images import save_grid
from .model import VAE
from .nets import resolve_backbone
from .objectives import beta_at
from .runs import (
    Run,
    claim,
    holds_run,
    load,
    load_torch,
    manifest,
    save_torch,
    write_config,
    write_json,
    write_metrics,
)
from .runtime import resolve_device, set_threads


@dataclass
class TrainState:
    """What the loop carries between epochs (saved in last.pt) and what hooks may read."""

    epoch: int = 0  # epochs completed
    best: float = -math.inf  # best validation score (ELBO; reconstruction for the autoencoder)
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    log: Callable[[str], None] = print
    stop: str | None = None  # set by a hook to end training after this epoch, with the reason
    stop_kind: str | None = None  # patience | diverged | hook: only a patience stop may go on
    reference_loss: float | None = None  # the first minibatch's loss: the untrained model's
    model: Any = None  # the VAE being trained and its Dataset, for hooks that draw pictures
    data: Any = None
    # diagnostics: stderr, and kept with --quiet (which hides only the bar and the epoch lines)
    warn: Callable[[str], None] = field(default=lambda s: tqdm.write(s, file=sys.stderr))

    def saved(self) -> dict[str, Any]:
        """What last.pt keeps (the stop too: a resumed stopped run does not train on)."""
        return {"epoch": self.epoch, "best": self.best, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "stop": self.stop, "stop_kind": self.stop_kind,
                "reference_loss": self.reference_loss}


PER_EPOCH_MI_EXAMPLES = 1000  # the I(X;Z) estimate costs O(N^2): a fixed slice of validation data
DIVERGE_FACTOR = 100  # see `divergence`


class Diverged(VaekitError):
    pass


def selection_score(row: dict[str, Any], beta: float) -> float:
    """What early stopping and best.pt maximize: the validation ELBO with the run's target beta
    (the plain ELBO at beta = 1; the reconstruction for the autoencoder, whose KL is 0)."""
    return row["val_reconstruction"] - beta * row["val_kl"]


def default_run_dir(cfg: Config) -> Path:
    stem = Path(cfg.data.data).stem or "data"
    base = Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, i = base, 1
    while run_dir.exists():
        run_dir, i = base.with_name(f"{base.name}-{i}"), i + 1
    return run_dir


def resolved(cfg: Config, data: Dataset) -> Config:
    """cfg with what the data decided (the likelihood 'auto' picked, whether it is standardized)."""
    standardized = data.info["preprocessing"] == "standardized"
    dequantized = data.info.get("dequantize", False)
    return Config(replace(cfg.data, standardize="on" if standardized else "off",
                          dequantize="on" if dequantized else "off"),
                  replace(cfg.model, likelihood=data.likelihood,
                          backbone=resolve_backbone(cfg.model.backbone, data.shape)), cfg.train)


def make_optimizer(model: VAE, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one op for all parameters) where this torch has it for the device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def train_epoch(model: VAE, opt, x: torch.Tensor, cfg: Config, beta: float,
                bar) -> tuple[dict[str, float], float]:
    """One pass over shuffled minibatches (slices of one tensor: no per-example Python work).
    Returns the epoch's means (NaN/Inf when a batch diverged) and the first minibatch's loss."""
    t = cfg.train
    binarize, dequantize = cfg.data.binarize == "dynamic", cfg.data.dequantize == "on"
    model.train()
    perm = torch.randperm(len(x))
    sums = torch.zeros(3, dtype=torch.float64, device=model.device)
    first = None
    for i in range(0, len(x), t.batch_size):
        xb = x[perm[i:i + t.batch_size]].to(model.device, non_blocking=True)
        if binarize:
            xb = torch.bernoulli(xb)
        if dequantize:  # levels k / 256 -> (k + u) / 256, u ~ U[0, 1) redrawn every batch
            xb = xb + torch.rand_like(xb) / 256
        loss, terms = model(xb, beta, t)  # forward: what a DDP wrapper would call
        first = loss.detach() if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sums += torch.stack([loss * len(xb), terms.reconstruction.sum(), terms.kl.sum()])
        bar.update(1)
    loss, rec, kl = (sums / len(x)).tolist()  # NaN/Inf in any batch reaches the sums
    return ({"train_loss": loss, "train_elbo": rec - kl if model.stochastic else None,
             "train_reconstruction": rec, "train_kl": kl}, float(first))


def epoch_metrics(model: VAE, data: Dataset, cfg: Config, epoch: int, beta: float,
                  train_part: dict[str, float], seconds: float) -> dict[str, Any]:
    val = evaluate(model, data.x_val, cfg.train.eval_mc_samples, mi_examples=PER_EPOCH_MI_EXAMPLES)
    row = {"epoch": epoch, "beta": beta, **train_part}
    row.update({f"val_{k}": v for k, v in val.items() if k != "n"})
    row["seconds"] = round(seconds, 3)
    return row


def write_images(model: VAE, data: Dataset, run_dir: Path, seed: int) -> None:
    """samples.png (prior draws through the decoder mean) and reconstructions.png (inputs above)."""
    g = torch.Generator().manual_seed(seed)
    save_grid(run_dir / "samples.png", model.sample(64, generator=g).cpu(), scale=2)
    ncol = min(8, len(data.x_test))
    x = data.x_test[:ncol * min(4, len(data.x_test) // ncol)].to(model.device)
    recon = model.reconstruct(x)
    rows = len(x) // ncol  # each row of inputs is followed by the row of their reconstructions
    pairs = torch.stack([x.reshape(rows, ncol, *recon.shape[1:]),
                         recon.reshape(rows, ncol, *recon.shape[1:])], dim=1)
    save_grid(run_dir / "reconstructions.png", pairs.reshape(-1, *recon.shape[1:]).cpu(), ncol=ncol,
              scale=2)


def train(cfg: Config | None = None, out: str | Path | None = None, resume: bool = False,
          quiet: bool = False, hooks: list[Hook] | None = None,
          dataset: Dataset | None = None, command: list[str] | None = None) -> Run:
    """Train a model from cfg into the run folder `out` (or continue it with resume=True).

    The folder is claimed for the run's life (`runs.claim`: one writer). A folder without a
    checkpoint (a run killed in its first epoch) starts over, with or without resume; a finished
    or stopped run, resumed, trains no further (unless a larger --epochs / --patience allows it)
    and rewrites the same summary. Sizes left None follow the data (`config.default_sizes`).
    Divergence (`divergence`) stops training with the best weights kept and a warning on stderr;
    in the first epoch, with nothing to keep, it is a VaekitError.
    dataset: already prepared data (`data.dataset_from_arrays`) instead of cfg.data's source;
    command: the command line to record in manifest.json (default: sys.argv)."""
    cfg = cfg or Config()
    run_dir = Path(out) if out else default_run_dir(cfg)
    precheck(run_dir, resume)  # the one-line refusals before data is read (again under the lock)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    data, cfg = (dataset, resolved(cfg, dataset)) if dataset is not None else load_dataset(cfg)
    cfg = cfg.with_sizes(len(data.x_train), math.prod(data.shape), data.image)
    hooks = default_hooks(cfg, run_dir) if hooks is None else hooks  # before any file is written
    model = VAE(cfg.model, data.shape)
    model.set_preprocessing(data.shift, data.scale)
    model.init_output_bias(data.x_train)
    model.to(device)
    opt = make_optimizer(model, cfg.train.lr)
    state = TrainState(run_dir=run_dir, model=model, data=data)
    state.log = (lambda s: None) if quiet else (lambda s: tqdm.write(s, file=sys.stdout))
    with claim(run_dir, resume) as has_checkpoint:
        if has_checkpoint:
            restore(run_dir, cfg, model, opt, state)
        else:
            if resume:
                state.warn(f"note: {run_dir} has no checkpoint yet; training starts from epoch 1")
            write_json(run_dir / "manifest.json", manifest(cfg, data.info, command))
        write_config(run_dir, cfg)
        loop(cfg, data, model, opt, state, hooks, quiet)
        return finish(run_dir, cfg, data, state)


def precheck(run_dir: Path, resume: bool) -> None:
    if resume and not (run_dir / "config.yaml").is_file():
        raise VaekitError(f"{run_dir} is not a run folder (no config.yaml) to resume; give a run "
                          "folder that `vaekit train` wrote")
    if not resume and holds_run(run_dir):
        raise VaekitError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or choose another --out")


def restore(run_dir: Path, cfg: Config, model: VAE, opt, state: TrainState) -> None:
    """Continue from last.pt exactly: weights, optimizer, RNG, loop state and history."""
    last = load_torch(run_dir / "last.pt", keys=("spec", "model", "optimizer", "rng", "state",
                                                 "history"))
    if last["spec"] != model.spec():
        raise VaekitError(f"the model options differ from those {run_dir} was trained with; "
                          "resume with the run's own options (only --epochs/--patience)")
    model.load_state_dict(last["model"])
    opt.load_state_dict(last["optimizer"])
    torch.set_rng_state(last["rng"])
    if "cuda_rng" in last:
        torch.cuda.set_rng_state_all(last["cuda_rng"])
    for k, v in last["state"].items():
        setattr(state, k, v)
    state.history = list(last["history"])
    t = cfg.train
    if state.stop_kind == "patience" and not (t.patience and state.bad_epochs >= t.patience):
        state.stop = state.stop_kind = None  # a larger --patience lets the run go on
    elif state.stop_kind == "diverged":
        state.warn(f"note: {run_dir} {state.stop}; its summary is rewritten, it does not train on")
    write_metrics(run_dir, state.history)


def divergence(part: dict[str, float], state: TrainState) -> str | None:
    """Why this epoch's training diverged, or None. The rule: the epoch's mean training loss is
    NaN/Inf, or above the loss of the run's first minibatch (the untrained model) by more than
    DIVERGE_FACTOR times that loss's size (at least 1 nat). A healthy run's epoch loss stays
    below where it started (under KL warm-up, a few times it at most); an optimizer that blew up
    is many orders of magnitude above (lr 0.15 on digits: 1e28 nats against 44). Only the
    training loss is read: a falling validation score is overfitting, which early stopping and
    best.pt handle, not divergence."""
    loss, ref = part["train_loss"], state.reference_loss
    if not math.isfinite(loss):
        return f"the training loss became {loss}"
    if ref is not None and loss > ref + DIVERGE_FACTOR * max(abs(ref), 1.0):
        return (f"the mean training loss {loss:.3g} nats is more than {DIVERGE_FACTOR}x the "
                f"untrained model's {ref:.3g}")
    return None


def loop(cfg: Config, data: Dataset, model: VAE, opt, state: TrainState, hooks: list[Hook],
         quiet: bool) -> None:
    """Epochs until --epochs, early stopping, a hook's stop, or divergence; checkpoints each epoch
    (best.pt when the validation score improves, then last.pt with the stop, then metrics)."""
    t, run_dir = cfg.train, state.run_dir
    n_batches = math.ceil(len(data.x_train) / t.batch_size)
    show = not quiet and sys.stdout.isatty()
    bar = tqdm(total=max(0, t.epochs - state.epoch) * n_batches, disable=not show, unit="batch",
               desc=f"training {run_dir.name}", leave=False, mininterval=0.5)
    try:
        while state.epoch < t.epochs and state.stop is None:
            tick = time.perf_counter()
            beta = beta_at(state.epoch, t.beta, t.kl_warmup)
            part, first_loss = train_epoch(model, opt, data.x_train, cfg, beta, bar)
            if state.reference_loss is None:
                state.reference_loss = first_loss
            reason = divergence(part, state)
            if reason is None:
                row = epoch_metrics(model, data, cfg, state.epoch + 1, beta, part,
                                    time.perf_counter() - tick)
                score = selection_score(row, t.beta)
                if not math.isfinite(score):
                    reason = f"the validation score became {score}"
            if reason is not None:
                diverged(state, reason, t.lr)
                break
            state.epoch += 1
            for hook in hooks:
                hook(row, state)
            if score > state.best:
                state.best, state.best_epoch, state.bad_epochs = score, state.epoch, 0
                save_torch(run_dir / "best.pt", {"spec": model.spec(),
                                                 "model": model.state_dict(),
                                                 "epoch": state.epoch})
            else:
                state.bad_epochs += 1
            if state.stop is not None and state.stop_kind is None:
                state.stop_kind = "hook"
            if t.patience and state.bad_epochs >= t.patience and state.stop is None:
                state.stop = f"early stop: no better validation score for {t.patience} epochs"
                state.stop_kind = "patience"
            state.history.append(row)
            last = {"spec": model.spec(), "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                    "state": state.saved(), "history": state.history}
            if model.device.type == "cuda":  # draws of z come from the device's generator there
                last["cuda_rng"] = torch.cuda.get_rng_state_all()
            save_torch(run_dir / "last.pt", last)
            write_metrics(run_dir, state.history)
            state.log(format_row(row))
    finally:
        bar.close()
    if state.stop and state.stop_kind != "diverged":
        state.log(state.stop)


def diverged(state: TrainState, reason: str, lr: float) -> None:
    """Stop: keep best.pt and last.pt (the weights before this epoch), record the stop in last.pt
    so a resume does not train into the divergence again, and warn; with no checkpoint yet
    (epoch 1) there is nothing to keep: one error, the folder stays reusable."""
    epoch = state.epoch + 1
    if state.epoch == 0:
        raise Diverged(f"training diverged in epoch 1: {reason}; no checkpoint was written: lower "
                       f"--lr (now {lr:g}) and train again (the same --out may be reused)")
    state.stop = (f"diverged in epoch {epoch}: {reason}; training stopped, the best weights "
                  f"(epoch {state.best_epoch}) are kept")
    state.stop_kind = "diverged"
    last = load_torch(state.run_dir / "last.pt")
    last["state"] = state.saved()
    save_torch(state.run_dir / "last.pt", last)
    state.warn(f"warning: {state.stop}. Lower --lr (now {lr:g}) for a better run")


def finish(run_dir: Path, cfg: Config, data: Dataset, state: TrainState) -> Run:
    """Reload the best weights, evaluate them on the test split, write summary and pictures.
    The test draws of z are seeded with the run's seed, so a resumed run (or one continued after
    a stop) writes the same summary.json."""
    run = load(run_dir, "best", cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    test = evaluate(run.model, data.x_test, cfg.train.eval_mc_samples)
    seconds = sum(r.get("seconds", 0.0) for r in state.history)  # training epochs only
    write_json(run_dir / "summary.json", {"test": test, "best_epoch": state.best_epoch,
                                          "epochs": state.epoch, "stop": state.stop,
                                          "train_seconds": round(seconds, 2)})
    if data.image:
        write_images(run.model, data, run_dir, cfg.train.seed)
    return run


def format_row(row: dict[str, Any]) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"
    return (f"epoch {row['epoch']:3d}  train elbo {f(row['train_elbo'])}  "
            f"val elbo {f(row['val_elbo'])}  val rec {f(row['val_reconstruction'])}  "
            f"val kl {f(row['val_kl'])}  active {row['val_active_units']}  {row['seconds']:.1f}s")
