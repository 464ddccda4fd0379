"""vaekit: variational autoencoders — train, evaluate, sample, encode and score, in nats."""

__version__ = "0.1.0"

from .api import decode, elbo, encode, log_likelihood, reconstruct, sample, score  # noqa: E402
from .config import Config, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .model import VAE  # noqa: E402
from .runs import Run, load  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "VAE", "Run", "VaekitError",
           "evaluate", "load", "train", "__version__",
           "encode", "decode", "reconstruct", "sample", "elbo", "log_likelihood", "score"]

# Shareable model folders (issue 13): `load` also reads a save_pretrained folder, else a run folder.
from .pretrained import load, save_pretrained  # noqa: E402, F811

__all__ += ["save_pretrained", "VAEAnomalyDetector"]


def __getattr__(name: str):
    """VAEAnomalyDetector on first use: it brings scikit-learn (and SciPy), about a second of
    imports that every `vaekit` command and `import vaekit` would otherwise pay."""
    if name == "VAEAnomalyDetector":
        from .detector import VAEAnomalyDetector

        return VAEAnomalyDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "VAEAnomalyDetector"])
