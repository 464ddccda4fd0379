"""Process-group helpers for data-parallel training (torch.distributed, launched by torchrun).

A process is one rank of a group when torchrun (or `vaekit train --nproc N`) set WORLD_SIZE > 1 in
its environment; then `setup` joins the group (gloo on CPU, nccl on CUDA, each rank on
cuda:LOCAL_RANK) with a timeout, so a rank that stops answering ends the others instead of hanging
them. Rank 0 ("the master", as in nanoGPT) writes every file and takes every decision that depends
on files or hooks; `on_master` runs such a step there and hands its result (or its error) to every
rank, so all ranks go on, or stop, together.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .errors import VaekitError

T = TypeVar("T")
TIMEOUT_ENV = "VAEKIT_DIST_TIMEOUT"  # seconds a collective may wait for a peer (default below)
DEFAULT_TIMEOUT_S = 900  # long enough for rank 0's validation and checkpoint of a large model
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


class PeerFailed(VaekitError):
    """A step failed on another rank (rank 0 reports it; the others end quietly, exit 2)."""


@dataclass(frozen=True)
class Group:
    """Where this process stands: rank r of world_size (1: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


SINGLE = Group()


def env_group() -> Group:
    """The group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise VaekitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets "
                          "them); unset them for a single-process run") from None
    if world < 1 or not 0 <= rank < world:
        raise VaekitError(f"RANK {rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {world}); launch "
                          "with torchrun, or unset them for a single-process run")
    return Group(rank, world, local)


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise VaekitError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def setup(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group torchrun described (no-op for one process); returns the group and
    this rank's device (cuda:LOCAL_RANK for a CUDA run; the device given otherwise)."""
    group = env_group()
    if not group.distributed:
        return group, device
    if device.type not in BACKENDS:
        raise VaekitError(f"distributed training runs on cpu (gloo) or cuda (nccl), not "
                          f"{device.type}; pass --device cpu or cuda")
    if device.type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise VaekitError(f"LOCAL_RANK {group.local_rank} but only {torch.cuda.device_count()} "
                              "CUDA device(s) here; use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(BACKENDS[device.type], timeout=timeout(),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return group, device


def launch(argv: list[str], nproc: int) -> int:
    """Run `python -m vaekit ARGV` as nproc ranks on this machine, with torchrun's launcher
    (torch.distributed.elastic; rendezvous on localhost, no restarts) and each rank on
    cpu_count / nproc threads unless OMP_NUM_THREADS says otherwise. A failing rank has printed
    its own error; the others are stopped by the launcher. Returns the exit code."""
    import logging
    import sys

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the rank says why
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"vaekit-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "vaekit", *argv)
    except ChildFailedError as e:
        return max((f.exitcode for f in e.failures.values() if f.exitcode > 0), default=1)
    return 0


def teardown(group: Group) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Elementwise sum over ranks (in place; float64 sums are exact enough to be "the" sum)."""
    if group.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@dataclass
class GlobalMean:
    """`objectives.BatchMean` under data parallelism: the mean of per-example values (n, L) over
    the global batch of `total` examples, from every rank's part, as a constant. A rank whose part
    of this batch is empty (it steps on a stand-in example with weight 0) adds nothing."""

    group: Group
    total: int
    counts: bool = True  # False: this rank's rows are a stand-in

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        part = values.detach().double().sum(0)
        total = all_sum(part if self.counts else torch.zeros_like(part), self.group)
        return (total / self.total).to(values.dtype)


def broadcast(obj: T, group: Group) -> T:
    """Rank 0's obj on every rank (picklable objects: state dicts, metric rows, decisions)."""
    if not group.distributed:
        return obj
    box = [obj if group.master else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_master(step: Callable[[], T], group: Group, share: bool = True) -> T | None:
    """Run step on rank 0 only and hand its result (share=False: None) to every rank; a
    VaekitError there is raised on every rank (as PeerFailed on the others), so no rank waits
    for a peer that gave up."""
    if not group.distributed:
        return step()
    result: Any = None
    error: VaekitError | None = None
    if group.master:
        try:
            result = step()
        except VaekitError as e:
            error = e
    shared, message = broadcast((result if share else None, None if error is None else str(error)),
                                group)
    if error is not None:
        raise error
    if message is not None:
        raise PeerFailed(message)
    return result if group.master else shared


def agree(step: Callable[[], T], group: Group) -> T:
    """Run step on every rank; if it fails (VaekitError) on any, every rank raises the first
    failing rank's message (as PeerFailed where it did not fail), so one line is printed, by
    rank 0 (see `quiet_on_peer_failure`)."""
    if not group.distributed:
        return step()
    error: str | None = None
    result: Any = None
    try:
        result = step()
    except VaekitError as e:
        error = f"rank {group.rank}: {e}" if group.rank else str(e)
    errors: list[str | None] = [None] * group.world_size
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise (VaekitError if group.master else PeerFailed)(first)
    return result


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, rank, purpose), independent streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def shard(n: int, group: Group) -> slice:
    """This rank's contiguous part of n items: sizes differ by at most one, every item once."""
    base, extra = divmod(n, group.world_size)
    start = group.rank * base + min(group.rank, extra)
    return slice(start, start + base + (group.rank < extra))


# --- the strategy the training loop takes: one process, or DistributedDataParallel -----------
@dataclass
class Compute:
    """How a step runs: the module whose forward makes the loss (the model, or its
    DistributedDataParallel wrapper, which averages the gradients over ranks), the process group,
    autocast on CUDA (--amp) with a loss scaler for fp16, and pinned host batches for CUDA."""

    forward: Any
    group: Group = SINGLE
    amp: torch.dtype | None = None
    scaler: Any = None
    pin: bool = False

    def autocast(self):
        return nullcontext() if self.amp is None else torch.autocast("cuda", dtype=self.amp)

    def step(self, loss: torch.Tensor, opt) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()


def make_compute(model: torch.nn.Module, group: Group, amp: torch.dtype | None) -> Compute:
    forward = model
    if group.distributed:  # buffers (shift, scale) are the same everywhere: no re-broadcast
        ddp = torch.nn.parallel.DistributedDataParallel
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(ddp).parameters else "broadcast_buffers")  # torch < 2.13
        # DDP on a process group of its own: torch keeps the group a DDP was built on alive
        # after destroy_process_group (its gloo worker threads with it), so the default group,
        # whose object broadcasts are a run's last collectives, can be destroyed, and its
        # workers joined, before the interpreter exits (`teardown`).
        forward = ddp(model, device_ids=[model.device.index] if model.device.type == "cuda"
                      else None, process_group=dist.new_group(), **{no_sync: False})
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return Compute(forward, group, amp, scaler, pin=model.device.type == "cuda")
