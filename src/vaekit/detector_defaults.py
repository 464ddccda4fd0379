"""VAEAnomalyDetector's defaults (chosen by the protocol of docs/anomaly.md), in a module free of
scikit-learn, so that the command line's parser (`vaekit detect --help`) shows them without
loading it."""

from __future__ import annotations

import math

from .anomaly import PER_EXAMPLE

STEPS = 200  # gradient steps of a fit by default: chosen by the protocol of docs/anomaly.md
TRIM = 0.2  # fraction of each training batch left out of the loss (lowest ELBO): the same protocol
KL_WARMUP_STEPS = 50  # the KL's weight rises from 0 to 1 over a fit's first 50 steps: the same protocol
LIKELIHOOD = "laplace-fixed"  # the same protocol, at the scale of unit variance (UNIT_VARIANCE)
# sigma=None: the fixed likelihood's scale of unit variance in standardized units
UNIT_VARIANCE = {"gaussian-fixed": 1.0, "laplace-fixed": math.sqrt(0.5)}  # Laplace: 2 b^2 = 1
NEIGHBOURS = 3  # k of the `neighbours` score: chosen by the protocol of docs/anomaly.md (3, 5, 10, 20, 1)
MAX_REFERENCE = 50_000  # training rows kept as the neighbours' reference (a random subset beyond)
ISOLATED = 3.0  # robust z-score beyond which `auto` counts a training row as set apart
METHODS = {"auto", "neighbours", *PER_EXAMPLE}  # the detector's; PER_EXAMPLE: the VAE's, in nats
