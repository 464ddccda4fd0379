"""The VAE (and its deterministic autoencoder baseline) and its verbs.

All verbs take and return data in *model space*: flat or example-shaped float tensors after the
run's preprocessing (pixels scaled to [0, 1], or features standardized). `prepare` maps the data as
the user gave it into model space and `restore` maps back. Log-likelihoods (`elbo`, `log_weights`)
are of the data as the user gave it: they include the log-Jacobian of the preprocessing for
continuous likelihoods.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import ModelConfig
from .likelihoods import build_likelihood
from .nets import build_backbone
from .objectives import Terms, gaussian_kl, log_normal, log_standard_normal

# Model variants: what differs between them is data, not code paths spread over the file.
MODELS: dict[str, dict[str, Any]] = {
    "vae": {"stochastic": True, "about": "variational autoencoder"},
    "ae": {"stochastic": False, "about": "deterministic autoencoder, reconstruction loss only"},
}


class VAE(nn.Module):
    def __init__(self, config: ModelConfig, input_shape: tuple[int, ...]):
        super().__init__()
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.stochastic = MODELS[config.model]["stochastic"]
        dim, latent = math.prod(self.input_shape), config.latent_dim
        heads = 2 if self.stochastic else 1  # mean and log-variance share one output layer
        self.encoder = build_backbone(config.backbone, dim, config.hidden, heads * latent)
        self.decoder = build_backbone(config.backbone, latent, config.hidden[::-1], dim)
        self.likelihood = build_likelihood(config.likelihood, dim, config.sigma)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        return self.shift.device

    def spec(self) -> dict[str, Any]:
        """What it takes to rebuild this model: saved next to its weights."""
        cfg = asdict(self.config)
        cfg["hidden"] = list(cfg["hidden"])
        return {"model_config": cfg, "input_shape": list(self.input_shape)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VAE:
        cfg = dict(spec["model_config"])
        cfg["hidden"] = tuple(cfg["hidden"])
        return cls(ModelConfig(**cfg), tuple(spec["input_shape"]))

    # --- data space <-> model space -------------------------------------------------------
    def set_preprocessing(self, shift: Tensor, scale: Tensor) -> None:
        """x_model = (x_data - shift) / scale, per feature."""
        self.shift.copy_(torch.as_tensor(shift, dtype=torch.float32).reshape(-1))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32).reshape(-1))

    @torch.no_grad()
    def init_output_bias(self, x: Tensor) -> None:
        """Start the decoder at the data's mean: its output bias <- the parameters whose mean is
        mean(x) (as Burda et al. 2015 initialize theirs), so early steps go to structure."""
        last = [m for m in self.decoder.modules() if isinstance(m, nn.Linear)][-1]
        last.bias.copy_(self.likelihood.params_for_mean(x.reshape(len(x), -1).mean(0)))

    def log_jacobian(self) -> Tensor:
        """log |d x_model / d x_data| per example; zero for a discrete (Bernoulli) likelihood."""
        if not self.likelihood.continuous:
            return torch.zeros((), device=self.device)
        return -torch.log(self.scale).sum()

    def prepare(self, x: Any) -> Tensor:
        """Data as the user gave it (array or tensor, (N, *shape) or (N, D)) -> model space (N, D)."""
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        x = x.to(self.device, torch.float32).reshape(len(x), -1)
        return (x - self.shift) / self.scale

    def restore(self, x: Tensor) -> Tensor:
        """Model space -> data space, example-shaped (N, *input_shape)."""
        x = x.reshape(len(x), -1) * self.scale + self.shift
        return x.reshape(len(x), *self.input_shape)

    # --- the verbs ---------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Posterior mean and log-variance (B, L) each; the autoencoder returns (code, None)."""
        h = self.encoder(x.reshape(len(x), -1))
        if not self.stochastic:
            return h, None
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar

    def reparameterize(self, mu: Tensor, logvar: Tensor | None, n: int | None = None) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): (B, L), or (n, B, L) for n draws."""
        if logvar is None:
            return mu if n is None else mu.expand(n, *mu.shape)
        shape = mu.shape if n is None else (n, *mu.shape)
        return mu + torch.exp(0.5 * logvar) * torch.randn(shape, device=mu.device)

    def decoder_params(self, z: Tensor) -> Tensor:
        """Parameters of p(x|z), flat: (..., D) logits (bernoulli) or means (gaussian)."""
        return self.decoder(z)

    def decode(self, z: Tensor, draw: bool = False, generator=None) -> Tensor:
        """Mean of p(x|z) (or a draw from it), example-shaped (B, *input_shape), model space."""
        params = self.decoder_params(z)
        if not draw:
            x = self.likelihood.mean(params)
        elif generator is not None and generator.device != params.device:
            x = self.likelihood.sample(params.cpu(), generator).to(params.device)
        else:
            x = self.likelihood.sample(params, generator)
        return x.reshape(len(z), *self.input_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the posterior mean: x -> (B, *input_shape), model space."""
        return self.decode(self.encode(x.to(self.device))[0])

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, draw: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """n new examples: z ~ N(0, temperature^2 I) through the decoder."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device) * temperature
        return self.decode(z, draw=draw, generator=generator)

    def elbo_terms(self, x: Tensor, mc_samples: int = 1) -> Terms:
        """Per-example E_q log p(x|z) (mc_samples draws) and closed-form KL per dimension."""
        x = x.reshape(len(x), -1)
        mu, logvar = self.encode(x)
        kl = torch.zeros_like(mu) if logvar is None else gaussian_kl(mu, logvar)
        z = self.reparameterize(mu, logvar, None if mc_samples == 1 else mc_samples)
        rec = self.log_px_z(x, z)  # (B,) or (S, B)
        return Terms(rec.mean(0) if rec.dim() == 2 else rec, kl, mu, logvar)

    def log_px_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats of the data as given (log-Jacobian included): (..., B) for x (B, D)
        and z (..., B, L)."""
        return self.likelihood.log_prob(x, self.decoder_params(z)) + self.log_jacobian()

    def elbo(self, x: Tensor, mc_samples: int = 1, beta: float = 1.0) -> Tensor:
        """Per-example ELBO in nats (B,): E_q log p(x|z) - beta * KL(q(z|x) || p(z))."""
        return self.elbo_terms(x, mc_samples).elbo(beta)

    def log_weights(self, x: Tensor, k: int, with_terms: bool = False):
        """Importance log-weights log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x): (K, B).

        logsumexp over K minus log K is the IWAE bound, and log p(x) as K grows.
        """
        x = x.reshape(len(x), -1)
        mu, logvar = self.encode(x)
        if logvar is None:
            raise ValueError("a deterministic autoencoder has no q(z|x) to importance-sample")
        z = self.reparameterize(mu, logvar, k)  # (K, B, L)
        log_px_z = self.log_px_z(x, z)
        log_w = log_px_z + log_standard_normal(z) - log_normal(z, mu, logvar)
        if not with_terms:
            return log_w
        return log_w, Terms(log_px_z.mean(0), gaussian_kl(mu, logvar), mu, logvar)
