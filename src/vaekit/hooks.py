"""Per-epoch hooks of the training loop: each gets the epoch's metrics (and may add to them).

A hook is `hook(metrics: dict, state: TrainState) -> None`; `default_hooks` picks the ones a run
uses from its config. Diagnostics and loggers live here so the training loop stays one loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .diagnostics import diagnostics_hook

Hook = Callable[[dict[str, Any], Any], None]


def default_hooks(cfg, run_dir) -> list[Hook]:
    """The hooks a run gets from its config."""
    hooks: list[Hook] = [diagnostics_hook(cfg)]
    if cfg.train.tensorboard:  # keep it last: it logs what the hooks before it add to the row
        from .tblog import TensorBoardHook

        hooks.append(TensorBoardHook(run_dir, cfg.train.seed))
    return hooks
