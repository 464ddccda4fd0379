"""TensorBoard logging (`vaekit train --tensorboard`): a per-epoch hook writing RUN_DIR/tensorboard.

Scalars: every number of the epoch's metrics row, as `train/elbo`, `val/kl`, `val/kl_per_dim/3`,
`beta`, `seconds`; diagnostics warnings as text; for image data, prior samples and validation
reconstructions (a row of inputs above their reconstructions) as images, small images enlarged
(nearest neighbour) to at least plots.MIN_TILE_PX pixels a tile.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import torch

from .errors import VaekitError
from .images import grid
from .plots import enlarge, enlargement

INSTALL = "pip install 'vaekit[tensorboard]'"
PICTURES = 16  # prior samples / reconstructed validation examples per epoch


def writer_class():
    """torch's SummaryWriter, or a one-line error saying how to install tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VaekitError(f"--tensorboard needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


def tag(key: str) -> str:
    """metrics.jsonl key -> TensorBoard tag: train_elbo -> train/elbo, val_kl -> val/kl."""
    split, _, rest = key.partition("_")
    return f"{split}/{rest}" if split in ("train", "val") and rest else key


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row (lists such as kl_per_dim become one scalar per entry)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[tag(key)] = float(value)
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            out.update({f"{tag(key)}/{i}": float(v) for i, v in enumerate(value)})
    return out


class TensorBoardHook:
    """Per-epoch hook: scalars, warnings and (image data) pictures into run_dir/tensorboard."""

    def __init__(self, run_dir: str | Path, seed: int = 0):
        self.SummaryWriter = writer_class()  # fails now, before training, if tensorboard is missing
        self.log_dir = Path(run_dir) / "tensorboard"
        self.seed = seed
        self.writer = None

    def __call__(self, row: dict[str, Any], state) -> None:
        if self.writer is None:  # opened lazily: the run folder exists only once training starts
            self.writer = self.SummaryWriter(log_dir=str(self.log_dir))
            weakref.finalize(self, self.writer.close)
        w, step = self.writer, int(row["epoch"])
        for name, value in scalars(row).items():
            w.add_scalar(name, value, step)
        for warning in row.get("warnings") or []:
            w.add_text("warnings", f"{warning.get('kind')}: {warning.get('message')}", step)
        if state.data is not None and state.data.image and state.model is not None:
            self.pictures(state.model, state.data.x_val, step)
        w.flush()

    @torch.no_grad()
    def pictures(self, model, x_val: torch.Tensor, step: int) -> None:
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(self.seed)  # the same z every epoch: watch it change
        samples = model.sample(PICTURES, generator=g).cpu()
        x = x_val[:min(PICTURES // 2, len(x_val))].to(model.device)
        recon = model.reconstruct(x).cpu()
        pairs = torch.cat([x.cpu().reshape(recon.shape), recon])
        model.train(was_training)
        k = enlargement(min(samples.shape[-2:]))  # 8x8 digits: tiles of 64 px, not 8
        for name, images, ncol in (("samples", samples, 8), ("reconstructions", pairs, len(x))):
            picture = enlarge(grid(images, ncol), k)
            self.writer.add_image(name, picture, step, dataformats="HW" if picture.ndim == 2
                                  else "HWC")
