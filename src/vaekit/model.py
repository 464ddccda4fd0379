"""The VAE, assembled from named parts, and its verbs.

Parts (each a registry entry, chosen in ModelConfig): encoder and decoder nets (`nets.BACKBONES`),
the posterior q(z|x) (`distributions.POSTERIORS`; the autoencoder is a point mass), the prior p(z)
(`distributions.PRIORS`) and the likelihood p(x|z) (`likelihoods.LIKELIHOODS`).

Verbs take and return data in *model space*: example-shaped or flat float tensors after the run's
preprocessing (pixels scaled to [0, 1], or features standardized); `prepare` maps the data as the
user gave it into model space and `restore` maps back. Log-likelihoods are of the data as the user
gave it: they include the log-Jacobian of the preprocessing for continuous likelihoods.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .config import ModelConfig
from .distributions import KL, build_prior, closed_form_kl, kl_terms, posterior_entry
from .errors import VaekitError
from .likelihoods import LikelihoodOptions, build_likelihood
from .nets import NetOptions, backbone, resolve_backbone
from .objectives import OBJECTIVES, Terms


class VAE(nn.Module):
    def __init__(self, config: ModelConfig, input_shape: tuple[int, ...]):
        super().__init__()
        if config.latent_dim is None or (config.hidden is None and config.backbone != "conv"):
            raise VaekitError("ModelConfig.latent_dim (or an mlp's hidden) is None: these follow "
                              "the data; give them, or resolve them with Config.with_sizes")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.config = config = replace(config, backbone=resolve_backbone(config.backbone,
                                                                          self.input_shape))
        self.posterior_kind = posterior_entry(config.posterior_name)
        self.stochastic = self.posterior_kind.has_density
        nets = backbone(config.backbone, self.input_shape)
        if config.dropout > 0 and config.backbone != "mlp":
            raise VaekitError(f"--dropout is an option of the mlp backbone, not of --backbone "
                              f"{config.backbone}: drop --dropout or pass --backbone mlp")
        opts = NetOptions(tuple(config.hidden or ()), tuple(config.channels), config.blocks,
                          config.dropout)
        likelihood = build_likelihood(config.likelihood, self.input_shape,
                                      LikelihoodOptions.from_config(config))
        self.encoder = nets.encoder(self.input_shape, self.posterior_kind.params(config.latent_dim),
                                    opts)
        self.decoder = nets.decoder(config.latent_dim, likelihood.param_shape(), opts)
        self.likelihood = likelihood  # registered after the nets: the parameter order of 0.1
        self.prior = build_prior(config, self.input_shape)
        self.register_buffer("shift", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))
        head = self.posterior_kind.head  # the posterior's own module (the IAF's flow), or None
        self.posterior_head = head(config) if head is not None else None
        self.prior.bind(self)

    @property
    def dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def image(self) -> bool:
        """Examples are images (C, H, W): figures are also given in bits per dimension."""
        return len(self.input_shape) == 3

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        return self.shift.device

    def spec(self) -> dict[str, Any]:
        """What it takes to rebuild this model: saved next to its weights."""
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()}
        return {"model_config": cfg, "input_shape": list(self.input_shape)}

    @staticmethod
    def spec_config(spec: dict[str, Any]) -> ModelConfig:
        """The ModelConfig of a `spec()`; keys a vaekit 0.1 spec lacks take their defaults."""
        return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in spec["model_config"].items()})

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VAE:
        """Rebuild from `spec()`."""
        return cls(cls.spec_config(spec), tuple(spec["input_shape"]))

    @classmethod
    def same_spec(cls, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Whether two specs build the same model: a key an older spec lacks counts as its
        default, so a run saved before an option existed still matches (and resumes)."""
        try:
            return (cls.spec_config(a) == cls.spec_config(b)
                    and list(a["input_shape"]) == list(b["input_shape"]))
        except (TypeError, KeyError, ValueError, AttributeError, VaekitError):  # a damaged spec
            return False

    # --- data space <-> model space -------------------------------------------------------
    def set_preprocessing(self, shift: Tensor, scale: Tensor) -> None:
        """x_model = (x_data - shift) / scale, per value."""
        self.shift.copy_(torch.as_tensor(shift, dtype=torch.float32).reshape(-1))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32).reshape(-1))

    @torch.no_grad()
    def init_output_bias(self, x: Tensor) -> None:
        """Start the decoder at the data's mean: its output bias <- the parameters whose mean is
        mean(x) (as Burda et al. 2015 initialize theirs), so early steps go to structure. A
        convolutional decoder's bias is per channel: it gets the spatial mean of those parameters.
        A learned prior is also started from the training data x (model space): the VampPrior's
        pseudo-inputs become random training examples."""
        self.prior.init_from_data(x.reshape(len(x), -1))
        target = self.likelihood.params_for_mean(x.reshape(len(x), *self.input_shape).mean(0))
        last = [m for m in self.decoder.modules() if getattr(m, "bias", None) is not None][-1]
        if last.bias.numel() == target.numel():
            last.bias.copy_(target.reshape(-1))
        elif target.dim() == 3 and last.bias.numel() == target.shape[0]:
            last.bias.copy_(target.mean((1, 2)))

    def log_jacobian(self) -> Tensor:
        """log |d x_model / d x_data| per example; zero for a discrete likelihood (a pmf)."""
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
        x = x.reshape(x.shape[0], -1) * self.scale + self.shift  # shape[0]: stays dynamic in a trace
        return x.reshape(x.shape[0], *self.input_shape)

    def shaped(self, x: Tensor) -> Tensor:
        """(B, D) or (B, *input_shape) -> (B, *input_shape): a view, no copy."""
        return x.reshape(x.shape[0], *self.input_shape)

    # --- the verbs ---------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Distribution:
        """q(z|x) for a batch of B examples (model space): a distribution object with `mean`
        (B, L), `rsample`, `log_prob`, `from_noise` (see distributions.py)."""
        return self.posterior(self.encoder(self.shaped(x)))

    def posterior(self, params: Tensor) -> Distribution:
        """q(z|x) from the encoder's outputs (B, P): concatenate the outputs of several batches
        (or cast them to float64) and rebuild the posterior of them all."""
        return self.posterior_kind.build(params, self.latent_dim, self.posterior_head)

    def decoder_params(self, z: Tensor) -> Tensor:
        """Parameters of p(x|z): z (..., B, L) -> (..., B, *likelihood.param_shape())."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return params.reshape(*lead, *params.shape[1:])

    def decode(self, z: Tensor, draw: bool = False, generator=None) -> Tensor:
        """Mean of p(x|z) (or a draw from it), example-shaped (B, *input_shape), model space."""
        params = self.decoder_params(z)
        if not draw:
            return self.likelihood.mean(params)
        if generator is not None and generator.device != params.device:
            return self.likelihood.sample(params.cpu(), generator).to(params.device)
        return self.likelihood.sample(params, generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the posterior mean: x -> (B, *input_shape), model space."""
        return self.decode(self.encode(x.to(self.device)).mean)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, draw: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """n new examples: z ~ p(z) (its noise scaled by `temperature`; a mixture's component is
        drawn first, by `generator`) through the decoder."""
        prior = self.prior.dist()
        eps = torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.shift.dtype)
        eps = eps * temperature  # in the model's dtype: a float64 model (the detector's) samples too
        return self.decode(prior.from_noise(eps, generator), draw=draw, generator=generator)

    def log_px_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats of the data as given (log-Jacobian included): (..., B) for x (B, ...)
        and z (..., B, L)."""
        return self.likelihood.log_prob(self.shaped(x), self.decoder_params(z)) + self.log_jacobian()

    def elbo_terms(self, x: Tensor, mc_samples: int = 1) -> Terms:
        """Per-example E_q log p(x|z) (mean over mc_samples draws) and the KL term."""
        q = self.encode(x)
        z = q.rsample(() if mc_samples == 1 else (mc_samples,))  # (B, L) or (S, B, L)
        rec = self.log_px_z(x, z)
        kl = kl_terms(q, self.prior.dist(), z)  # a Monte Carlo KL uses these same draws z
        return Terms(rec.mean(0) if rec.dim() == 2 else rec, kl.total, kl.per_dim, q, kl.analytic)

    def elbo(self, x: Tensor, mc_samples: int = 1, beta: float = 1.0) -> Tensor:
        """Per-example ELBO in nats (B,): E_q log p(x|z) - beta * KL(q(z|x) || p(z))."""
        return self.elbo_terms(x, mc_samples).elbo(beta)

    def log_weights(self, x: Tensor, k: int, with_terms: bool = False):
        """Importance log-weights log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x): (K, B).

        logsumexp over K minus log K is the IWAE bound, and log p(x) as K grows. with_terms also
        gives the per-example terms of the same draws: the KL in closed form where (q, p) has one,
        else the mean over the K draws of the log q - log p the weights already hold (computing it
        again by `kl_terms` cost 8% of an IWAE step under a VampPrior, 13% under `hier-vamp`).
        """
        q = self.encode(x)
        if not self.stochastic:
            raise ValueError("a deterministic autoencoder has no q(z|x) to importance-sample")
        z = q.rsample((k,))  # (K, B, L)
        prior = self.prior.dist()
        log_px_z = self.log_px_z(x, z)
        log_ratio = q.log_prob(z) - prior.log_prob(z)  # (K, B)
        log_w = log_px_z - log_ratio
        if not with_terms:
            return log_w
        kl = closed_form_kl(q, prior) or KL(log_ratio.mean(0), None, False)
        return log_w, Terms(log_px_z.mean(0), kl.total, kl.per_dim, q, kl.analytic)

    def forward(self, x: Tensor, beta: float, cfg, batch_mean=None) -> tuple[Tensor, Terms]:
        """The training loss of a batch (a scalar) and its per-example terms, by the registry
        objective cfg.objective: what a wrapper such as DistributedDataParallel calls. Under data
        parallelism `batch_mean` (`objectives.BatchMean`) gives means over the global batch."""
        if batch_mean is None:
            return OBJECTIVES[cfg.objective](self, x, beta, cfg)
        return OBJECTIVES[cfg.objective](self, x, beta, cfg, batch_mean=batch_mean)
