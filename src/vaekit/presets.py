"""Named presets: flat configs (the option keys) for published benchmarks, `vaekit train --preset`.

Precedence: preset < --config file < options on the command line. Adding one is one dict entry.
"""

from __future__ import annotations

from typing import Any

from .errors import VaekitError

# Burda, Grosse & Salakhutdinov (2015), "Importance weighted autoencoders", Table 1: dynamically
# binarized MNIST, one stochastic layer 784-200-200-50, minibatch 20, 3^i epochs at learning rate
# 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs); test log p(x) with K = 5000 importance samples:
# -86.76 nats (VAE, k=1) and -84.78 (IWAE, k=50). Differences here: ReLU instead of tanh, a
# constant learning rate, 10% of the training set held out for validation (best.pt).
MNIST_NLL: dict[str, Any] = {
    "data": "mnist",
    "binarize": "dynamic",
    "likelihood": "bernoulli",
    "backbone": "mlp",
    "hidden": [200, 200],
    "latent_dim": 50,
    "batch_size": 20,
    "lr": 1e-3,
    "epochs": 3280,
    "patience": 0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-nll": MNIST_NLL,
    "mnist-nll-iwae": MNIST_NLL | {"objective": "iwae", "iw_train_samples": 50},
}


def preset(name: str) -> dict[str, Any]:
    """The flat config of a preset (a copy)."""
    if name not in PRESETS:
        raise VaekitError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])
