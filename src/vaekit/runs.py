"""The run folder: atomic writes, checkpoints (no unpickling), config, manifest, metrics, loading.

RUN_DIR/
  config.yaml     resolved options (flat; usable again as --config)
  manifest.json   versions, seed, command line, data description, timings
  metrics.jsonl   one JSON object per epoch
  best.pt         weights with the best validation score; last.pt: full state for --resume
  summary.json    test metrics of the best weights

States of a folder (`claim` decides under the lock): no last.pt -> nothing to keep, training
(re)starts from epoch 0; last.pt -> a run, continued only with resume=True (a finished or stopped
run then only rewrites its summary). One writer at a time: `claim` holds an exclusive flock on the
folder for the run's life, so a second `vaekit train` into it stops with one line.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
import yaml

from .config import Config, ModelConfig, load_config_file
from .errors import VaekitError
from .model import VAE
from .runtime import resolve_device
from .tempfiles import new_temp, remove_temp

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one writer per folder is then up to the user)
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write to a temp file beside path, then rename: readers never see half a file.

    data is the content, or a function that writes it to a binary file object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_temp(path)  # an interrupt from here on: remove_pending() finds the file
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None  # a full disk names the file
    finally:
        remove_temp(tmp)


def save_torch(path: Path, payload: dict[str, Any]) -> None:
    """Serialize in memory first, then write atomically: a full disk is a plain OSError (one
    line in the CLI) and never leaves half a checkpoint under the real name."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())


def load_torch(path: Path, keys: tuple[str, ...] = ("spec", "model")) -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers, never arbitrary objects;
    anything but a dict holding `keys` is one clear error."""
    if not path.is_file():
        raise VaekitError(f"checkpoint {path} not found; is {path.parent} a vaekit run folder?")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, zipfile.BadZipFile, pickle.UnpicklingError) as e:  # what garbage
        # bytes make torch's weights-only unpickler raise
        raise VaekitError(f"checkpoint {path} is corrupt or not a vaekit checkpoint "
                          f"({type(e).__name__}); retrain or restore the file") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        raise VaekitError(f"checkpoint {path} is not a vaekit checkpoint (a {type(ckpt).__name__} "
                          f"without {', '.join(keys)}); retrain or restore the file")
    return ckpt


# --- claiming a run folder -------------------------------------------------------------------
RUN_FILES = ("config.yaml", "manifest.json", "metrics.jsonl", "best.pt", "last.pt",
             "summary.json", "samples.png", "reconstructions.png")
# atomic_write's temp names: "." + the file's name + "." + 8 random hex characters
TEMP_NAME = re.compile(r"^\.(" + "|".join(map(re.escape, RUN_FILES)) + r")\.[A-Za-z0-9_]{8}$")


def holds_run(run_dir: Path) -> bool:
    """A folder holds a run once it has a checkpoint to continue from (last.pt)."""
    return (run_dir / "last.pt").is_file()


def clean_orphans(run_dir: Path) -> list[str]:
    """Remove temp files left by writes killed midway (only vaekit's own names, only here)."""
    removed = []
    for p in run_dir.iterdir():
        if TEMP_NAME.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


@contextmanager
def claim(run_dir: Path, resume: bool) -> Iterator[bool]:
    """Own run_dir for a training run: create it, take an exclusive lock on it (held until the
    block ends; a second writer stops with one line), clean orphan temp files, check its state.

    Yields whether there is a checkpoint to continue from (resume=True and last.pt present); a
    folder without last.pt is (re)started from scratch, its stale files removed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise VaekitError(f"--out {run_dir} is a file, not a folder; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as e:
        raise VaekitError(f"cannot create the run folder {run_dir}: {e.strerror or e}; choose "
                          "another --out") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VaekitError(f"{run_dir} is in use by another `vaekit train`; wait for it "
                                  "to finish or choose another --out") from None
        if not os.access(run_dir, os.W_OK):
            raise VaekitError(f"the run folder {run_dir} is not writable; choose another --out")
        clean_orphans(run_dir)
        if holds_run(run_dir) and not resume:
            raise VaekitError(f"{run_dir} already holds a run; continue it with --resume "
                              f"{run_dir} or choose another --out")
        if not holds_run(run_dir):  # nothing to continue: stale files of a run that never
            for name in RUN_FILES:  # reached its first checkpoint go, config.yaml is rewritten
                (run_dir / name).unlink(missing_ok=True)
        yield holds_run(run_dir)
    finally:
        os.close(fd)  # releases the lock


def precheck(run_dir: Path, resume: bool) -> None:
    """The one-line refusals of `vaekit train` before any data is read (again under the lock)."""
    if resume and not (run_dir / "config.yaml").is_file():
        raise VaekitError(f"{run_dir} is not a run folder (no config.yaml) to resume; give a run "
                          "folder that `vaekit train` wrote")
    if not resume and holds_run(run_dir):
        raise VaekitError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or choose another --out")


def start_folder(run_dir: Path, cfg: Config, info: dict[str, Any], spec: dict[str, Any],
                 has_checkpoint: bool, resume: bool, command: list[str] | None, processes: int,
                 warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The claimed folder of a starting run (rank 0 of a distributed one): last.pt's contents to
    continue from (checked against the model's spec), or None after writing a new run's
    manifest; then the resolved config."""
    last = None
    if has_checkpoint:
        last = load_torch(run_dir / "last.pt", keys=("spec", "model", "optimizer", "rng", "state"))
        last["history"], last["history_jsonl"] = checkpoint_history(last, run_dir / "last.pt")
        if not VAE.same_spec(last["spec"], spec):
            raise VaekitError(f"the model options differ from those {run_dir} was trained with; "
                              "resume with the run's own options (only --epochs/--patience)")
        before = last.get("world_size", 1)
        if before != processes:
            warn(f"note: {run_dir} was trained with {before} process(es), it continues with "
                 f"{processes}: the same global batches, other draws of z")
        write_metrics(run_dir, last["history_jsonl"])
    else:
        if resume:
            warn(f"note: {run_dir} has no checkpoint yet; training starts from epoch 1")
        info = info | ({"processes": processes} if processes > 1 else {})
        write_json(run_dir / "manifest.json", manifest(cfg, info, command))
    write_config(run_dir, cfg)
    return last


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


def metrics_text(history: list[dict[str, Any]]) -> str:
    """The epoch rows as metrics.jsonl holds them: one JSON object per line."""
    return "".join(json.dumps(m) + "\n" for m in history)


def write_metrics(run_dir: Path, text: str) -> None:
    """metrics.jsonl <- text (`metrics_text`; the loop appends each row's line to it, so an epoch
    encodes one row, not the whole history again)."""
    atomic_write(run_dir / "metrics.jsonl", text)


def checkpoint_history(last: dict[str, Any], path: Path) -> tuple[list[dict[str, Any]], str]:
    """(rows, metrics text) of a last.pt: kept as metrics.jsonl's text (a list of rows in
    checkpoints of vaekit before 0.2: pickling the rows again every epoch cost O(epochs^2))."""
    if isinstance(last.get("history_jsonl"), str):
        text = last["history_jsonl"]
        try:
            return [json.loads(line) for line in text.splitlines()], text
        except json.JSONDecodeError:
            pass
    elif isinstance(last.get("history"), list):
        return list(last["history"]), metrics_text(last["history"])
    raise VaekitError(f"checkpoint {path} is not a vaekit checkpoint (no readable epoch history); "
                      "retrain or restore the file")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch rows of metrics.jsonl. Tolerant of a cut-off last line (a copy or write cut
    short: the complete rows before it are returned); any other unreadable line is one error."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            if i == len(lines) - 1 and row is None:
                break  # the last line cut off
            raise VaekitError(f"{path} line {i + 1} is not a JSON object; restore the file or "
                              f"rewrite it with `vaekit train --resume {path.parent}`")
        rows.append(row)
    return rows


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise VaekitError(f"{path} is not text; restore the file or rewrite it with "
                          f"`vaekit train --resume {path.parent}`") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the run ({} when absent); a corrupt one is one clear error."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(read_text(path))
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise VaekitError(f"{path} is corrupt (not a JSON object); rewrite it with "
                          f"`vaekit train --resume {path.parent}` or restore it")
    return obj


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
        """Test metrics of the best weights and how training ended (summary.json; {} when
        absent; a corrupt file is a VaekitError that says how to rewrite it)."""
        return read_json(self.dir / "summary.json")

    @property
    def manifest(self) -> dict[str, Any]:
        return read_json(self.dir / "manifest.json")


def load(run_dir: str | Path, which: str = "best", device: str | None = None) -> Run:
    """Load a run folder: `vaekit.load("runs/x").model.sample(16)`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaekitError(f"run folder {run_dir} not found; give the folder that "
                          "`vaekit train` printed")
    cfg = read_config(run_dir)
    path = run_dir / f"{which}.pt"
    model = model_of(load_torch(path), path)
    if not same_model(model.config, cfg.model):
        raise VaekitError(f"checkpoint {path} holds another model than {run_dir / 'config.yaml'} "
                          "describes (another run's file?); restore the run's own checkpoint")
    model.to(resolve_device(device or cfg.train.device)).eval()
    return Run(run_dir, cfg, model)


def model_of(ckpt: dict[str, Any], path: Path, fix: str = "retrain or restore the file") -> VAE:
    """The model a checkpoint (`load_torch`) holds: built from its spec, its weights loaded; one
    clear error (naming path and `fix`) if they do not make a vaekit model."""
    try:
        model = VAE.from_spec(ckpt["spec"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise VaekitError(f"checkpoint {path} does not match a vaekit model "
                          f"({type(e).__name__}); {fix}") from None
    return model


def same_model(saved: ModelConfig, config: ModelConfig) -> bool:
    """The checkpoint's architecture is the one the run's config.yaml records."""
    return dataclasses.asdict(saved) == dataclasses.asdict(config)
