"""Shareable model folders: a trained run as weights, JSON and a model card, loaded without
unpickling anything and without the training data.

FOLDER/  (Hugging Face's layout: `huggingface_hub.upload_folder` takes it as is)
  config.json        what vaekit needs to rebuild the model: its spec, the preprocessing
                     (x_model = (x - shift) / scale), likelihood, data shape, label names, the run's
                     flat config, an optional detector threshold, and how it was trained
  model.safetensors  the weights (the model's state_dict, preprocessing buffers included)
  summary.json       the run's test metrics, as in a run folder (so `Run.summary` reads it)
  README.md          a model card with Hugging Face front matter (library_name: vaekit, tags)

    vaekit.save_pretrained("runs/demo", "shared/demo")
    run = vaekit.load("shared/demo")        # a Run, usable by vaekit.encode / score / ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .errors import VaekitError
from .model import VAE
from .runs import Run, atomic_write, same_model
from .runs import load as load_run_folder
from .runtime import resolve_device

FORMAT = 1  # config.json "format": bumped when the folder's layout changes
FILES = ("config.json", "model.safetensors", "summary.json", "README.md")


@dataclass(frozen=True)
class Detector:
    """An anomaly threshold saved with the model: flag x when score(x, method) > threshold."""

    method: str
    threshold: float
    rule: str  # how it was set, e.g. "validation fpr 0.05"


def is_pretrained(folder: str | Path) -> bool:
    """A folder written by save_pretrained (not a run folder)."""
    folder = Path(folder)
    return (folder / "model.safetensors").is_file() and not (folder / "config.yaml").is_file()


def load(path: str | Path, which: str = "best", device: str | None = None) -> Run:
    """`vaekit.load`: a pretrained folder (save_pretrained) or a run folder (`runs.load`)."""
    if is_pretrained(path):
        return load_pretrained(path, device)
    return load_run_folder(path, which, device)


# --- writing ---------------------------------------------------------------------------------
def safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise VaekitError("shareable model folders need safetensors: pip install safetensors") from None
    return safetensors.torch


def validation_detector(run: Run, method: str, fpr: float) -> Detector:
    """The threshold `vaekit score --fpr` sets: the (1 - fpr) quantile of the run's validation
    scores (needs the run's data, at save time only)."""
    from .anomaly import score, threshold
    from .data import load_for_model

    x_val, _ = load_for_model(run.model, run.config, None, "val")
    cut = threshold(score(run.model, x_val, method), fpr)
    return Detector(method, cut, f"validation fpr {fpr:g} (default draws, seed 0)")


def save_pretrained(run: Run | str | Path, folder: str | Path, *, detector: Detector | None = None,
                    method: str | None = None, fpr: float | None = None) -> Path:
    """Write `run` (a Run or a run folder) as a shareable folder. detector: a threshold to ship with
    it; or method and fpr: set one on the run's validation split as `vaekit score --fpr` does."""
    st = safetensors_torch()
    run = run if isinstance(run, Run) else load(run, device="cpu")
    folder = Path(folder)
    check_target(folder, run.dir)
    if fpr is not None:
        detector = validation_detector(run, method or "kl", fpr)
    config = folder_config(run, detector)
    (folder / "config.json").unlink(missing_ok=True)  # an earlier save's: a write cut short below
    weights = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    atomic_write(folder / "model.safetensors", st.save(weights, metadata={"format": "pt"}))
    atomic_write(folder / "summary.json", json.dumps(run.summary, indent=2) + "\n")
    atomic_write(folder / "README.md", model_card(config, run.summary, folder.name))
    atomic_write(folder / "config.json", json.dumps(config, indent=2) + "\n")  # last: the folder
    return folder  # loads only once every file is in place (never new weights under an old config)


def check_target(folder: Path, run_dir: Path) -> None:
    """Write into a new or empty folder, or over an earlier save_pretrained; never into a run."""
    if folder.exists() and not folder.is_dir():
        raise VaekitError(f"{folder} is a file; give a folder to save the model into")
    if folder.resolve() == run_dir.resolve():
        raise VaekitError(f"{folder} is the run folder itself; give another folder")
    others = sorted(p.name for p in folder.iterdir() if p.name not in FILES) if folder.is_dir() else []
    if others:
        raise VaekitError(f"{folder} already holds other files ({', '.join(others[:3])}); give a "
                          "new or empty folder")


def compact(values: torch.Tensor) -> float | list[float]:
    """One number when every value is the same (pixels / 255), else the list (D,)."""
    flat = values.detach().cpu().double().reshape(-1)
    return float(flat[0]) if bool((flat == flat[0]).all()) else flat.tolist()


def folder_config(run: Run, detector: Detector | None) -> dict[str, Any]:
    from . import __version__

    model, manifest = run.model, run.manifest
    info = manifest.get("data", {})
    return {
        "library": "vaekit", "format": FORMAT, "vaekit_version": __version__,
        "model": model.spec(),
        "preprocessing": {"map": "x_model = (x - shift) / scale, per value",
                          "shift": compact(model.shift), "scale": compact(model.scale)},
        "likelihood": model.config.likelihood, "posterior": model.config.posterior_name,
        "data_shape": list(model.input_shape),
        "image": model.image, "label_names": info.get("label_names"),
        "detector": None if detector is None else asdict(detector),
        "data": info, "config": run.config.to_flat(),
        "training": {k: manifest.get(k) for k in ("command", "vaekit", "torch", "python", "seed")},
    }


# --- the model card ----------------------------------------------------------------------------
def model_card(config: dict[str, Any], summary: dict[str, Any], name: str) -> str:
    """README.md: Hugging Face front matter, then what the model is, was trained on and scores."""
    m, data = config["model"]["model_config"], config["data"]
    kind = "image" if config["image"] else "tabular"
    tags = ["vaekit", "variational-autoencoder", "pytorch", kind,
            *(["anomaly-detection"] if config["detector"] else [])]
    front = "---\nlibrary_name: vaekit\ntags:\n" + "".join(f"- {t}\n" for t in tags) + "---\n"
    test = summary.get("test", {})
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in test.items() if isinstance(v, float))
    options = "\n".join(f"| {k} | {v} |" for k, v in config["config"].items())
    command = " ".join(config["training"].get("command") or ["(not recorded)"])
    detector = config["detector"]
    return f"""{front}
# {name}

A {m['model'].upper()} trained with vaekit {config['vaekit_version']}: {m['backbone']} encoder and
decoder, {m['latent_dim']} latent dimensions, {config['posterior']} posterior, {m['prior']} prior,
{config['likelihood']} likelihood p(x|z).

## Data
- source: `{data.get('source')}` ({data.get('n_train')} training, {data.get('n_val')} validation,
  {data.get('n_test')} test examples)
- examples of shape {tuple(config['data_shape'])} ({kind}); preprocessing: {data.get('preprocessing')}
  (inside the model: give data as it was trained on)
- labels: {', '.join(map(str, config['label_names'] or [])) or 'none named'}

## Test metrics (nats per example, best weights; epoch {summary.get('best_epoch')} of {summary.get('epochs')})
| metric | value |
|---|---|
{metrics or '| (no summary) | |'}

## Training
```
{command}
```
| option | value |
|---|---|
{options}
{'' if not detector else f'''
## Anomaly threshold
Flag an example when its `{detector['method']}` score exceeds {detector['threshold']:.6g}
({detector['rule']}).
'''}
## Use
```python
import vaekit
run = vaekit.load("{name}")         # no unpickling, no training data needed
codes = vaekit.encode(run, x)       # (N, {m['latent_dim']}) posterior means
scores = vaekit.score(run, x, "kl")  # (N,) nats, higher = more anomalous
```
`vaekit serve {name}` serves it over HTTP; `vaekit export {name} --format onnx --part scorer`
writes an ONNX file.
"""


# --- reading -----------------------------------------------------------------------------------
def read_folder_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise VaekitError(f"{folder} is not a vaekit model folder (no config.json); give a folder "
                          "written by vaekit.save_pretrained")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict) or config.get("library") != "vaekit" or "model" not in config:
        raise VaekitError(f"{path} is corrupt or not a vaekit config; save the model again")
    if not isinstance(config.get("format"), int):
        raise VaekitError(f"{path} is corrupt or not a vaekit config; save the model again")
    if config["format"] > FORMAT:
        raise VaekitError(f"{folder} was written by a newer vaekit ({config.get('vaekit_version')}); "
                          "upgrade vaekit")
    return config


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no pickle); a truncated or foreign file: one line."""
    st = safetensors_torch()
    try:
        return st.load(path.read_bytes())
    except FileNotFoundError:
        raise VaekitError(f"{path} not found; save the model again") from None
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        raise VaekitError(f"{path} is corrupt or not a safetensors file ({type(e).__name__}); "
                          "save the model again or restore the file") from None


def load_pretrained(folder: str | Path, device: str | None = None) -> Run:
    """A folder written by save_pretrained -> Run (best weights, eval mode, on `device`)."""
    folder = Path(folder)
    config = read_folder_config(folder)
    path = folder / "model.safetensors"
    weights = read_weights(path)
    try:
        cfg = Config.from_flat(config["config"])
        model = VAE.from_spec(config["model"])
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, VaekitError) as e:
        raise VaekitError(f"{path} does not match {folder / 'config.json'} ({type(e).__name__}); "
                          "save the model again") from None
    if not same_model(model.config, cfg.model) or not same_preprocessing(model, config):
        raise VaekitError(f"{path} holds another model than {folder / 'config.json'} describes; "
                          "save the model again")
    model.to(resolve_device(device or "cpu")).eval()
    return Run(folder, cfg, model)


def same_preprocessing(model: VAE, config: dict[str, Any]) -> bool:
    p = config.get("preprocessing")
    if not isinstance(p, dict) or any(not isinstance(p.get(k), float | list) for k in ("shift", "scale")):
        return False
    return all(np.allclose(np.broadcast_to(np.asarray(p.get(k), dtype=np.float64), (model.dim,)),
                           getattr(model, k).double().cpu().numpy(), rtol=1e-6, atol=0)
               for k in ("shift", "scale"))


def detector_of(run: Run) -> Detector | None:
    """The anomaly threshold shipped with a pretrained folder (None for a run folder)."""
    if not is_pretrained(run.dir):
        return None
    saved = read_folder_config(run.dir).get("detector")
    if not saved:
        return None
    return Detector(str(saved["method"]), float(saved["threshold"]), str(saved.get("rule", "")))
