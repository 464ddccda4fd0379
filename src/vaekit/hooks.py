"""Per-epoch hooks of the training loop: each gets the epoch's metrics (and may add to them).

A hook is `hook(metrics: dict, state: TrainState) -> None`; `default_hooks` picks the ones a run
uses from its config. Diagnostics and loggers live here so the training loop stays one loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Hook = Callable[[dict[str, Any], Any], None]


def default_hooks(cfg, run_dir) -> list[Hook]:
    """The hooks a run gets from its config."""
    return []
