"""Where training batches come from: one epoch order, sharded by rank (and DataLoader worker).

Every source follows the same rule, so a run reads the same examples in the same global batches
whatever the number of processes and workers:
- the epoch's order is a permutation of the split's rows drawn from rank 0's RNG, the same on
  every rank (`epoch_order`), and exact on resume;
- global batch j is rows [j*B, (j+1)*B) of that order (B = --batch-size, the global batch);
- rank r of W takes its contiguous part of each global batch (`distributed.shard`: sizes differ
  by at most one), so each example is seen exactly once per epoch across ranks;
- with DataLoader workers, worker w of K reads the global batches j = w (mod K); the DataLoader's
  round-robin then yields them in order j = 0, 1, 2, ...

`InMemory` slices a tensor (the fast path for data that fits in RAM; on a GPU, the split is copied
there once when it takes at most a quarter of the free memory); the file sources
(`streams.py`: memory-mapped .npy, Parquet, image folders) read only the rows of each batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .distributed import SINGLE, Group, broadcast, derive_seed, shard


def epoch_order(n: int, seed: int, epoch: int, group: Group = SINGLE) -> Tensor:
    """The epoch's permutation of n rows (int64 (n,)), drawn from the global torch RNG where a
    single-process run always drew it (its runs, and their exact resume, are unchanged). Under DDP
    every rank first takes rank 0's RNG state, so all draw the same permutation; then the ranks
    other than 0 reseed their own draws (z, binarization, dequantization) from (seed, epoch,
    rank): independent of rank 0's, and exact on resume with any number of processes."""
    if group.distributed:
        torch.set_rng_state(broadcast(torch.get_rng_state(), group))
    order = torch.randperm(n)
    if group.rank > 0:
        torch.manual_seed(derive_seed(seed, epoch, group.rank))
    return order


def local_batches(order: Tensor, batch_size: int, group: Group = SINGLE, worker: int = 0,
                  workers: int = 1) -> Iterator[tuple[int, Tensor, int]]:
    """(j, this rank's row indices of global batch j, the global batch's size) for the global
    batches j = rows [j*B, (j+1)*B) of the order that this worker reads (j = worker mod workers)."""
    for j, i in enumerate(range(0, len(order), batch_size)):
        if j % workers == worker:
            idx = order[i:i + batch_size]
            yield j, idx[shard(len(idx), group)], len(idx)


# the share of a GPU's free memory a training split may take to be copied there whole
DEVICE_DATA_SHARE = 0.25


def fits_on_device(nbytes: int, free_bytes: int, share: float = DEVICE_DATA_SHARE) -> bool:
    """Whether a split of nbytes may live on a device with free_bytes free (the rest is left to
    the model, its activations and the optimizer)."""
    return nbytes <= share * free_bytes


class InMemory:
    """Batches sliced from one model-space tensor (N, D): no per-example Python work."""

    def __init__(self, x: Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def to_device(self, device: torch.device) -> InMemory:
        """This split copied to a CUDA device once, where it takes at most DEVICE_DATA_SHARE of
        the free memory: each batch is then gathered there, with no host gather, pinning or
        host-to-device copy in the step. Otherwise (or on the CPU) self, batches copied per step."""
        if device.type != "cuda" or self.x.device == device:
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if not fits_on_device(self.x.numel() * self.x.element_size(), free):
            return self
        return InMemory(self.x.to(device))

    def epoch(self, order: Tensor, batch_size: int, group: Group = SINGLE,
              pin: bool = False) -> Iterator[tuple[Tensor, int]]:
        """(local batch (b, D), global batch size) in order; from host memory, pinned for an
        async copy to CUDA when pin is set."""
        order = order.to(self.x.device)  # the same permutation, gathered where the rows are
        pin = pin and self.x.device.type == "cpu"
        for _, idx, total in local_batches(order, batch_size, group):
            xb = self.x[idx]
            yield (xb.pin_memory() if pin else xb), total


def batch_source(x, device: torch.device | None = None):
    """The source of a training split for a model on `device`: a tensor is sliced in memory (on a
    GPU, there when it fits: `InMemory.to_device`); a file-backed split (`streams.FileRows`) is its
    own source."""
    if not isinstance(x, Tensor):
        return x
    source = InMemory(x)
    return source if device is None else source.to_device(device)
