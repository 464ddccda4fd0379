"""Where and how a command computes: the torch device, CPU threads and seeds, checked in one place
so every command (train, eval, score, encode, ...) accepts and rejects the same values."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from .errors import VaekitError

MAX_SEED = 2**31 - 1  # numpy's RandomState takes < 2**32, and splits use seed + small offsets


def _malloc_trim():
    """glibc's malloc_trim, or None (another C library or system: nothing to do)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Hand freed heap pages back to the system (glibc's malloc_trim(0)); True if it could.

    With more than one CPU thread, glibc gives each of torch's worker threads its own malloc arena
    and keeps what is freed there: a long evaluation loop (K=5000 importance samples of each of
    10,000 MNIST images with --threads 2) grew by 3-25 MB a second until the kernel killed it at
    24 GB, while its live tensors stayed under 1 GB. Loops over batches call this between batches
    (`evaluate.batches`); it costs microseconds."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def parse_device(name: str) -> torch.device | None:
    """The device a name means (None for 'auto'), whether or not this machine has it; a name that
    is no device is one clear error. The first half of `resolve_device`."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise VaekitError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise VaekitError(f"unsupported --device {name!r}; use cpu, cuda, cuda:N or auto")
    return device


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', 'mps' or 'auto' (cuda when available, else cpu) -> a device that
    exists on this machine; anything else is one clear error."""
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VaekitError(f"--device {name} but this torch build or machine has no CUDA; use "
                              "--device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VaekitError(f"--device {name} but only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible; use cuda:0..")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise VaekitError(f"--device {name} but MPS is not available here; use --device cpu")
    return device


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise VaekitError(f"--threads must be >= 1, got {threads}")


def set_threads(threads: int | None) -> None:
    """torch's intra-op CPU threads (None: torch's own choice)."""
    check_threads(threads)
    if threads:
        torch.set_num_threads(threads)


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise VaekitError(f"--seed must be in 0..{MAX_SEED}, got {seed}")


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The state of the generator that draws z on `device`: a CUDA device's own (None on the CPU,
    whose draws come from torch's global generator, saved apart). Only this device's: a list of
    every visible GPU's states would not restore on a machine with fewer GPUs."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore_device_rng(saved, device: torch.device) -> None:
    """Set `device`'s generator to a state from `device_rng_state`, wherever the run was saved
    (a run trained on cuda:1 resumes on cuda:0 with the same draws). A last.pt of an earlier
    version holds every visible GPU's states: the entry of this device's index, where there is one."""
    if saved is None or device.type != "cuda":
        return
    if isinstance(saved, (list, tuple)):
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, device)


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """--amp: the autocast dtype (None: full float32). Mixed precision runs on CUDA only; on any
    other device it is refused (CPU autocast would silently train at another precision than the
    figures the run reports were checked at)."""
    if name not in AMP_DTYPES:
        raise VaekitError(f"unknown --amp {name!r}; use off, bf16 or fp16")
    if AMP_DTYPES[name] is not None and device.type != "cuda":
        raise VaekitError(f"--amp {name} is mixed precision on CUDA, but this run is on "
                          f"{device.type}; drop --amp (or pass --amp off) or use --device cuda")
    return AMP_DTYPES[name]
