"""The one training loop: minibatch Adam on a registry objective, validation, early stopping,
best/last checkpoints, exact resume (model, optimizer, RNG state, epoch), per-epoch hooks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .background import Perturbation
from .batches import batch_source, epoch_order
from .config import Config
from .data import Dataset, load_dataset
from .distributed import (
    Compute,
    GlobalMean,
    Group,
    PeerFailed,
    agree,
    all_sum,
    make_compute,
    on_master,
    setup,
    teardown,
)
from .errors import VaekitError
from .evaluate import evaluate
from .hooks import Hook, default_hooks
from .images import pictured_rows, save_grid
from .model import VAE
from .nets import resolve_backbone
from .objectives import epoch_betas
from .optim import lr_at, make_average, make_optimizer, set_lr
from .runs import (
    Run,
    claim,
    load,
    load_torch,
    metrics_text,
    precheck,
    save_torch,
    start_folder,
    write_json,
    write_metrics,
)
from .runtime import (
    device_rng_state,
    resolve_amp,
    resolve_device,
    restore_device_rng,
    set_threads,
)
from .sources import BUILTINS


@dataclass
class TrainState:
    """What the loop carries between epochs (saved in last.pt) and what hooks may read."""

    epoch: int = 0  # epochs completed
    best: float = -math.inf  # best validation score (ELBO; reconstruction for the autoencoder)
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    history_text: str = ""  # the same rows as metrics.jsonl's lines (runs.metrics_text)
    run_dir: Path | None = None
    log: Callable[[str], None] = print
    stop: str | None = None  # set by a hook to end training after this epoch, with the reason
    stop_kind: str | None = None  # patience | diverged | hook: only a patience stop may go on
    reference_loss: float | None = None  # the first minibatch's loss: the untrained model's
    model: Any = None  # the VAE evaluated (Polyak's average, if on) and its Dataset, for hooks
    data: Any = None
    average: Any = None  # --polyak: the AveragedModel of the weights (optim.make_average)
    perturbation: Any = None  # --perturb: background.Perturbation of the training batches
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


def absolute_paths(cfg: Config) -> Config:
    """cfg with its data paths made absolute (a file or folder given as --data or --test-data, and
    --data-dir), so that the run folder's config finds the same data whatever directory `vaekit
    eval RUN`, `--resume` or `vaekit.load` runs from (relative, they were read against that
    directory: a run trained with `--data-dir ../shared/data/mnist` could not be evaluated from
    another one)."""
    def absolute(path: str | None) -> str | None:  # a file or folder read (not a built-in name,
        # nor the marker of arrays passed in memory)
        if path is None or path in BUILTINS or not Path(path).expanduser().exists():
            return path
        return str(Path(path).expanduser().absolute())

    return replace(cfg, data=replace(cfg.data, data=absolute(cfg.data.data),
                                     test_data=absolute(cfg.data.test_data),
                                     data_dir=str(Path(cfg.data.data_dir).expanduser().absolute())))


def resolved(cfg: Config, data: Dataset) -> Config:
    """cfg with what the data decided (the likelihood 'auto' picked, whether it is standardized)."""
    standardized = data.info["preprocessing"] == "standardized"
    dequantized = data.info.get("dequantize", False)
    return Config(replace(cfg.data, standardize="on" if standardized else "off",
                          dequantize="on" if dequantized else "off"),
                  replace(cfg.model, likelihood=data.likelihood,
                          backbone=resolve_backbone(cfg.model.backbone, data.shape)), cfg.train)


def train_epoch(model: VAE, opt, source, cfg: Config, betas: list[float], bar, epoch: int = 0,
                compute: Compute | None = None, average=None,
                perturbation: Perturbation | None = None) -> tuple[dict[str, float], float]:
    """One pass over the epoch's shuffled global batches (`batches.py`), this rank's share of
    each. Returns the epoch's means over every rank (NaN/Inf when a batch diverged) and the loss
    of the first global batch. A rank's loss is weighted by its share of the global batch times
    the world size, so the wrapper's gradient average is the gradient of the global batch's mean
    loss: N processes take the steps one process would. betas: the KL weight of each global
    batch, in order (`objectives.epoch_betas`)."""
    t = cfg.train
    compute = compute or Compute(model)
    world = compute.group.world_size
    binarize, dequantize = cfg.data.binarize == "dynamic", cfg.data.dequantize == "on"
    model.train()
    sums = torch.zeros(4, dtype=torch.float64, device=model.device)  # loss*n, rec, kl, first
    spare = first = None
    order = epoch_order(len(source), t.seed, epoch, compute.group)
    batches = source.epoch(order, t.batch_size, compute.group, compute.pin)
    for i, (xb, total) in enumerate(batches):
        share = len(xb) / total
        if len(xb) == 0:  # a last global batch smaller than the world: take part with weight 0
            xb = spare
        spare = xb[:1]
        first = spare if first is None else first
        xb = xb.to(model.device, non_blocking=True)
        if perturbation is not None:
            xb = perturbation(xb, epoch, i, compute.group.rank)
        if binarize:
            xb = torch.bernoulli(xb)
        if dequantize:  # levels k / 256 -> (k + u) / 256, u ~ U[0, 1) redrawn every batch
            xb = xb + torch.rand_like(xb) / 256
        # free bits under DDP: the floor is decided on the global batch (`objectives.kl_penalty`)
        extra = ({"batch_mean": GlobalMean(compute.group, total, share > 0)}
                 if world > 1 and t.free_bits > 0 else {})
        with compute.autocast():
            loss, terms = compute.forward(xb, betas[i], t, **extra)
        compute.step(loss * share * world if world > 1 else loss, opt)
        if average is not None:
            average.update_parameters(model)
        with torch.no_grad():
            if share > 0:
                sums[:3] += torch.stack([loss * len(xb), terms.reconstruction.sum(),
                                         terms.kl.sum()]).double()
            if spare is first:  # the first global batch: sum over ranks of loss * share
                sums[3] = loss.double() * share
        bar.update(1)
    sums = all_sum(sums, compute.group)
    loss, rec, kl = (sums[:3] / len(source)).tolist()  # NaN/Inf in any batch reaches the sums
    return ({"train_loss": loss, "train_elbo": rec - kl if model.stochastic else None,
             "train_reconstruction": rec, "train_kl": kl}, float(sums[3]))


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
    chosen, ncol = pictured_rows(len(data.x_test), 32, seed)  # at most 4 rows of 8
    x = data.x_test[chosen].to(model.device)
    recon = model.reconstruct(x)
    rows = len(x) // ncol  # each row of inputs is followed by the row of their reconstructions
    pairs = torch.stack([x.reshape(rows, ncol, *recon.shape[1:]),
                         recon.reshape(rows, ncol, *recon.shape[1:])], dim=1)
    save_grid(run_dir / "reconstructions.png", pairs.reshape(-1, *recon.shape[1:]).cpu(), ncol=ncol,
              scale=2)


def train(cfg: Config | None = None, out: str | Path | None = None, resume: bool = False,
          quiet: bool = False, hooks: list[Hook] | None = None,
          dataset: Dataset | None = None, command: list[str] | None = None) -> Run | None:
    """Train a model from cfg into the run folder `out` (or continue it with resume=True).

    The folder is claimed for the run's life (`runs.claim`: one writer). A folder without a
    checkpoint (a run killed in its first epoch) starts over, with or without resume; a finished
    or stopped run, resumed, trains no further (unless a larger --epochs / --patience allows it)
    and rewrites the same summary. Sizes left None follow the data (`config.default_sizes`).
    Divergence (`divergence`) stops training with the best weights kept and a warning on stderr;
    in the first epoch, with nothing to keep, it is a VaekitError.
    Under torchrun (WORLD_SIZE > 1) this is one rank of a data-parallel run (`distributed.py`):
    every rank trains on its share of each global batch; rank 0 alone claims the folder, writes
    its files, runs the hooks and decides (best, early stop, divergence) for all; it returns the
    Run, the other ranks None.
    dataset: already prepared data (`data.dataset_from_arrays`) instead of cfg.data's source;
    command: the command line to record in manifest.json (default: sys.argv)."""
    cfg = cfg or Config()
    run_dir = Path(out) if out else default_run_dir(cfg)
    group, device = setup(resolve_device(cfg.train.device))
    try:
        return train_rank(cfg, run_dir, resume, quiet, hooks, dataset, command, group, device)
    except VaekitError as e:  # every rank meets it (`distributed.agree`): rank 0 tells it
        if group.master or isinstance(e, PeerFailed):
            raise
        raise PeerFailed(str(e)) from None
    finally:
        teardown(group)


def train_rank(cfg: Config, run_dir: Path, resume: bool, quiet: bool, hooks: list[Hook] | None,
               dataset: Dataset | None, command: list[str] | None, group: Group,
               device: torch.device) -> Run | None:
    amp = resolve_amp(cfg.train.amp, device)
    on_master(lambda: precheck(run_dir, resume), group)  # one-line refusals before data is read
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    data, cfg = agree(lambda: (dataset, resolved(cfg, dataset)) if dataset is not None
                      else load_dataset(cfg), group)
    cfg = absolute_paths(cfg)
    cfg = cfg.with_sizes(len(data.x_train), math.prod(data.shape), data.image)
    if cfg.train.batch_size < group.world_size:
        raise VaekitError(f"--batch-size {cfg.train.batch_size} is the global batch, split over "
                          f"{group.world_size} processes: give at least {group.world_size}")
    if cfg.train.trim > 0 and group.world_size > 1:  # before any file is written
        raise VaekitError("--trim ranks the examples of a whole batch, which data-parallel "
                          "training splits across processes: train in one process or drop --trim")
    if not group.master:
        hooks = []
    hooks = default_hooks(cfg, run_dir) if hooks is None else hooks  # before any file is written
    model = VAE(cfg.model, data.shape)
    model.set_preprocessing(data.shift, data.scale)
    model.init_output_bias(data.x_train if isinstance(data.x_train, torch.Tensor)
                           else data.x_train.mean_row())
    model.to(device)
    opt = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    average = make_average(model, cfg.train.polyak)
    state = TrainState(run_dir=run_dir, model=average.module if average else model, data=data,
                       average=average, perturbation=Perturbation.of(
                           cfg.data.perturb, cfg.train.seed, data.x_train, data.shift, data.scale))
    state.log = (lambda s: None) if quiet or not group.master else (
        lambda s: tqdm.write(s, file=sys.stdout))
    if not group.master:
        state.warn = lambda s: None
    with ExitStack() as folder:
        has_checkpoint = on_master(lambda: folder.enter_context(claim(run_dir, resume)), group)
        last = on_master(lambda: start_folder(run_dir, cfg, data.info, model.spec(), has_checkpoint,
                                              resume, command, group.world_size, state.warn), group)
        if last is not None:
            restore(last, cfg, model, opt, state)
        compute = make_compute(model, group, amp)
        if last is not None and compute.scaler is not None and "scaler" in last:
            compute.scaler.load_state_dict(last["scaler"])
        loop(cfg, data, model, opt, state, hooks, quiet or not group.master, compute)
        return on_master(lambda: finish(run_dir, cfg, data, state), group, share=False)


def restore(last: dict[str, Any], cfg: Config, model: VAE, opt, state: TrainState) -> None:
    """Continue from last.pt exactly (on every rank): weights, optimizer, RNG, loop state and
    history. Every rank takes rank 0's generator states (CPU and, on CUDA, its GPU's), as the
    draws of rank 0 go on from them; the other ranks reseed theirs at the start of each epoch
    (`batches.epoch_order`)."""
    model.load_state_dict(last["model"])
    opt.load_state_dict(last["optimizer"])
    torch.set_rng_state(last["rng"])
    if state.average is not None and "average" in last:
        state.average.load_state_dict(last["average"])
    restore_device_rng(last.get("cuda_rng"), model.device)
    for k, v in last["state"].items():
        setattr(state, k, v)
    state.history, state.history_text = last["history"], last["history_jsonl"]
    t = cfg.train
    if state.stop_kind == "patience" and not (t.patience and state.bad_epochs >= t.patience):
        state.stop = state.stop_kind = None  # a larger --patience lets the run go on
    elif state.stop_kind == "diverged":
        state.warn(f"note: {state.run_dir} {state.stop}; its summary is rewritten, it does not "
                   "train on")


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
         quiet: bool, compute: Compute | None = None) -> None:
    """Epochs until --epochs, early stopping, a hook's stop, or divergence; checkpoints each epoch
    (best.pt when the validation score improves, then last.pt with the stop, then metrics).
    Every rank trains; rank 0 validates, decides and writes (`after_epoch`), the others take its
    decision, so they stop together."""
    t, run_dir = cfg.train, state.run_dir
    compute = compute or Compute(model)
    source = batch_source(data.x_train, model.device)
    n_batches = math.ceil(len(source) / t.batch_size)
    show = not quiet and sys.stdout.isatty()
    bar = tqdm(total=max(0, t.epochs - state.epoch) * n_batches, disable=not show, unit="batch",
               desc=f"training {run_dir.name}", leave=False, mininterval=0.5)
    try:
        while state.epoch < t.epochs and state.stop is None:
            tick = time.perf_counter()
            betas = epoch_betas(t, state.epoch, n_batches)  # the KL weight of each step
            beta = betas[-1]  # what the epoch's metrics row reports: its last step's
            set_lr(opt, lr_at(state.epoch, t))  # a function of the epoch: the same after a resume
            part, first_loss = train_epoch(model, opt, source, cfg, betas, bar, state.epoch,
                                           compute, state.average, state.perturbation)
            part["lr"] = opt.param_groups[0]["lr"]
            saved = on_master(partial(after_epoch, cfg, data, model, opt, state, hooks, beta, part,
                                      first_loss, tick, compute), compute.group)
            for k, v in saved.items():
                setattr(state, k, v)
            if saved["stop_kind"] == "diverged":
                break
    finally:
        bar.close()
    if state.stop and state.stop_kind != "diverged":
        state.log(state.stop)


def after_epoch(cfg: Config, data: Dataset, model: VAE, opt, state: TrainState, hooks: list[Hook],
                beta: float, part: dict[str, float], first_loss: float, tick: float,
                compute: Compute) -> dict[str, Any]:
    """Rank 0, after a training epoch: validation, divergence, hooks, best.pt, early stopping,
    last.pt and metrics; returns the loop state every rank continues with. With --polyak the
    averaged weights are validated and kept in best.pt; last.pt holds both."""
    t, run_dir = cfg.train, state.run_dir
    evaluated = state.average.module if state.average is not None else model
    if state.reference_loss is None:
        state.reference_loss = first_loss
    reason = divergence(part, state)
    if reason is None:
        row = epoch_metrics(evaluated, data, cfg, state.epoch + 1, beta, part,
                            time.perf_counter() - tick)
        score = selection_score(row, t.beta)
        if not math.isfinite(score):
            reason = f"the validation score became {score}"
    if reason is not None:
        diverged(state, reason, t.lr)
        return state.saved()
    state.epoch += 1
    for hook in hooks:
        hook(row, state)
    if score > state.best:
        state.best, state.best_epoch, state.bad_epochs = score, state.epoch, 0
        save_torch(run_dir / "best.pt", {"spec": model.spec(), "model": evaluated.state_dict(),
                                         "epoch": state.epoch})
    else:
        state.bad_epochs += 1
    if state.stop is not None and state.stop_kind is None:
        state.stop_kind = "hook"
    if t.patience and state.bad_epochs >= t.patience and state.stop is None:
        state.stop = f"early stop: no better validation score for {t.patience} epochs"
        state.stop_kind = "patience"
    state.history.append(row)
    state.history_text += metrics_text([row])
    last = {"spec": model.spec(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(), "state": state.saved(), "history_jsonl": state.history_text}
    if compute.group.distributed:
        last["world_size"] = compute.group.world_size
    if state.average is not None:
        last["average"] = state.average.state_dict()
    if compute.scaler is not None:
        last["scaler"] = compute.scaler.state_dict()
    if model.device.type == "cuda":  # draws of z come from the device's generator there
        last["cuda_rng"] = device_rng_state(model.device)
    save_torch(run_dir / "last.pt", last)
    write_metrics(run_dir, state.history_text)
    state.log(format_row(row))
    return state.saved()


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
