"""The run folder: atomic writes, checkpoints (no unpickling), config, manifest, metrics, loading.

RUN_DIR/
  config.yaml     resolved options (flat; usable again as --config)
  manifest.json   versions, seed, command line, data description, timings
  metrics.jsonl   one JSON object per epoch
  best.pt         weights with the best validation score; last.pt: full state for --resume
  summary.json    test metrics of the best weights
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
import yaml

from .config import Config, load_config_file
from .errors import VaekitError
from .model import VAE

UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write(path: Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write to a temp file beside path, then rename: readers never see half a file.

    data is the content, or a function that writes it to a binary file object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(payload, f))


def load_torch(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers, never arbitrary objects."""
    if not path.is_file():
        raise VaekitError(f"checkpoint {path} not found; is {path.parent} a vaekit run folder?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise VaekitError(f"checkpoint {path} is corrupt or not a vaekit checkpoint "
                          f"({type(e).__name__}); retrain or restore the file") from None


def write_config(run_dir: Path, cfg: Config) -> None:
    atomic_write(run_dir / "config.yaml", yaml.safe_dump(cfg.to_flat(), sort_keys=False))


def read_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise VaekitError(f"{run_dir} is not a vaekit run folder (no config.yaml); give the "
                          "folder that `vaekit train` printed")
    return Config.from_flat(load_config_file(path))


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def manifest(cfg: Config, info: dict[str, Any], command: list[str] | None = None) -> dict[str, Any]:
    from . import __version__

    return {"vaekit": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "seed": cfg.train.seed, "command": command or sys.argv, "data": info}


@dataclass
class Run:
    """A trained run: its folder, config and model (best weights unless asked otherwise)."""

    dir: Path
    config: Config
    model: VAE

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.dir)

    @property
    def summary(self) -> dict[str, Any]:
        """Test metrics of the best weights and how training ended (summary.json)."""
        path = self.dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def manifest(self) -> dict[str, Any]:
        path = self.dir / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def load(run_dir: str | Path, which: str = "best", device: str | None = None) -> Run:
    """Load a run folder: `vaekit.load("runs/x").model.sample(16)`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaekitError(f"run folder {run_dir} not found; give the folder that "
                          "`vaekit train` printed")
    cfg = read_config(run_dir)
    ckpt = load_torch(run_dir / f"{which}.pt")
    try:
        model = VAE.from_spec(ckpt["spec"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise VaekitError(f"checkpoint {run_dir / f'{which}.pt'} does not match a vaekit model "
                          f"({type(e).__name__}); retrain or restore the file") from None
    model.to(device or cfg.train.device).eval()
    return Run(run_dir, cfg, model)
