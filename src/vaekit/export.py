"""Export a trained model's parts as ONNX or TorchScript files that take data as the user gives it.

Each part is a small module around the model with the run's preprocessing x_model = (x - shift) / scale
inside the graph, so the file's input is the raw values (feature values, pixel levels) the run was
trained on, (B, *example shape) or (B, D), any batch size B:
  encoder  x -> mean (B, L), logvar (B, L) of q(z|x)  (an iaf or layered posterior: mean only;
           a point-mass posterior, --model ae: code (B, L))
  decoder  z (B, L) -> the mean of p(x|z) in the data's units, (B, *example shape)
  scorer   x -> kl (B,), reconstruction (B,): the deterministic anomaly scores in nats,
           KL(q(z|x) || p(z)) in closed form (anomaly.py's `kl`) and -log p(x | z = E_q[z])
           (the reconstruction at the posterior mean; log-Jacobian of the preprocessing included)
The sampled scores (reconstruction, recon-prob, elbo, iw-nll of anomaly.SCORES) draw noise and are
not exported. Out-of-support inputs (e.g. values outside [0, 1] for a Bernoulli) are not checked by
the exported graph: `vaekit score` and `vaekit serve` check them.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import latent
from .distributions import closed_form_kl
from .errors import VaekitError
from .model import VAE
from .runs import atomic_write


class Part(nn.Module):
    """A model part that takes raw data: the preprocessing is the first op of the graph. Shapes
    are written with -1 for the batch (the model's own `shaped`/`restore` use len(x), which the
    tracer would freeze to the example's batch size)."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def prepare(self, x: Tensor) -> Tensor:
        """Raw (B, *shape) or (B, D) -> model space, example-shaped (B, *shape)."""
        m = self.model
        x = (x.reshape(-1, m.dim) - m.shift) / m.scale
        return x.reshape(-1, *m.input_shape)


def encoder_outputs(model: VAE) -> list[str]:
    return ["mean", "logvar"] if latent.has_variance(model) else ["mean"] if model.stochastic else ["code"]


class Encoder(Part):
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        q = self.model.posterior(self.model.encoder(self.prepare(x)))
        return (q.mean, q.logvar) if latent.has_variance(self.model) else (q.mean,)


class Decoder(Part):
    def forward(self, z: Tensor) -> Tensor:
        m = self.model
        mean = m.likelihood.mean(m.decoder_params(z))  # (B, *shape), model space
        return (mean.reshape(-1, m.dim) * m.scale + m.shift).reshape(-1, *m.input_shape)


class Scorer(Part):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return deterministic_scores(self.model, self.prepare(x))


def deterministic_scores(model: VAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """(kl, reconstruction), each (B,), of model-space x (B, *shape): KL(q(z|x) || p(z)) in closed
    form and -log p(x | z = E_q[z]) in nats (log-Jacobian of the preprocessing included)."""
    q = model.posterior(model.encoder(x))
    kl = closed_form_kl(q, model.prior.dist())
    if kl is None:
        raise VaekitError(f"the scorer holds KL(q(z|x) || p(z)) in closed form, which the "
                          f"{model.config.posterior_name} posterior and {model.config.prior} prior do not "
                          "have (it is estimated from draws of z); export the encoder or decoder, or "
                          "score with vaekit score / vaekit serve")
    log_px = model.likelihood.log_prob(x, model.decoder_params(q.mean)) + model.log_jacobian()
    return kl.total, -log_px


@dataclass(frozen=True)
class PartEntry:
    build: Callable[[VAE], Part]
    inputs: Callable[[VAE], list[str]]
    outputs: Callable[[VAE], list[str]]
    example: Callable[[VAE, int], Tensor]  # a batch of B inputs to trace with


def data_example(model: VAE, b: int) -> Tensor:
    """B examples in data space within the support (a constant grey/mean value): (B, *shape)."""
    return model.restore(torch.full((b, model.dim), 0.5, device=model.device))


PARTS: dict[str, PartEntry] = {
    "encoder": PartEntry(Encoder, lambda m: ["x"], encoder_outputs, data_example),
    "decoder": PartEntry(Decoder, lambda m: ["z"], lambda m: ["x_mean"],
                         lambda m, b: torch.zeros(b, m.latent_dim, device=m.device)),
    "scorer": PartEntry(Scorer, lambda m: ["x"], lambda m: ["kl", "reconstruction"], data_example),
}
SAMPLED = ("reconstruction", "recon-prob", "elbo", "iw-nll")  # anomaly.SCORES that draw noise


def expm1_symbolic(g, x):
    """ONNX has no expm1 (the discretized logistic's bin mass uses it): exp(x) - 1 written as
    tanh(x/2) (exp(x) + 1), an identity that keeps expm1's relative accuracy near 0 in float32."""
    half = g.op("Constant", value_t=torch.tensor(0.5))
    one = g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Mul", g.op("Tanh", g.op("Mul", x, half)), g.op("Add", g.op("Exp", x), one))


def onnx_bytes(part: Part, example: Tensor, inputs: list[str], outputs: list[str]) -> bytes:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise VaekitError("ONNX export needs onnx: pip install 'vaekit[export]' (onnx, "
                          "onnxruntime)") from None
    torch.onnx.register_custom_op_symbolic("aten::expm1", expm1_symbolic, 17)
    buf = io.BytesIO()
    batch = {0: "batch"}
    with warnings.catch_warnings():  # the TorchScript-based exporter: the torch.export one needs
        warnings.simplefilter("ignore", DeprecationWarning)  # onnxscript; the batch dimension is
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # checked by check_dynamic_batch
        torch.onnx.export(part, (example,), buf, dynamo=False, input_names=inputs,
                          output_names=outputs, opset_version=17,
                          dynamic_axes={n: batch for n in inputs + outputs})
    return buf.getvalue()


def torchscript_bytes(part: Part, example: Tensor, inputs: list[str], outputs: list[str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13 but still the one
        warnings.simplefilter("ignore", DeprecationWarning)  # format C++/Java can load alone
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(part, (example,), check_trace=False)
        torch.jit.save(traced, buf)
    return buf.getvalue()


def check_dynamic_batch(wrapped: Part, entry: PartEntry, model: VAE, part: str) -> None:
    """Trace at batch 2, run the trace at batch 3 beside the module itself: a graph that froze
    its batch size (a len(x) in the model's code) is refused rather than written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: what this check is for
        traced = torch.jit.trace(wrapped, (entry.example(model, 2),), check_trace=False)
        x = entry.example(model, 3)
        try:
            ok = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
                     for a, b in zip(as_tuple(traced(x)), as_tuple(wrapped(x)), strict=True))
        except RuntimeError:
            ok = False
    if not ok:
        raise VaekitError(f"the {part} of this model ({model.config.likelihood} likelihood) cannot be "
                          "exported with a dynamic batch size yet; export another part")


def check_onnx_graph(data: bytes, wrapped: Part, entry: PartEntry, model: VAE, part: str) -> None:
    """Run the written ONNX graph in onnxruntime at batches 1 and 3 beside the module: the ONNX
    exporter can fold a batch size the TorchScript trace kept dynamic. Skipped without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for b in (1, 3):
        x = entry.example(model, b)
        try:
            got = session.run(None, {name: x.numpy()})
            ok = all(np.allclose(g, w.numpy(), rtol=1e-4, atol=1e-4, equal_nan=True)
                     for g, w in zip(got, as_tuple(wrapped(x)), strict=True))
        except Exception:  # onnxruntime's own error types: a graph that cannot take this batch
            ok = False
        if not ok:
            raise VaekitError(f"the {part} of this model ({model.config.likelihood} likelihood) "
                              "cannot be exported to ONNX with a dynamic batch size yet; use "
                              "--format torchscript or export another part")


def as_tuple(out: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


FORMATS: dict[str, Callable[[Part, Tensor, list[str], list[str]], bytes]] = {
    "onnx": onnx_bytes,
    "torchscript": torchscript_bytes,
}


def export(model: VAE, part: str, fmt: str, out: str | Path, method: str | None = None) -> Path:
    """Write `part` of the model as `fmt` to out (a temp file, then renamed). method: a score the
    caller asked for; the exported scorer holds the deterministic ones only (kl, reconstruction
    at the posterior mean)."""
    if part not in PARTS:
        raise VaekitError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
    if fmt not in FORMATS:
        raise VaekitError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if method in SAMPLED:
        raise VaekitError(f"the {method!r} score draws z at random and is not exported; the scorer "
                          "holds the deterministic scores: kl and the reconstruction at the posterior "
                          "mean (drop --method)")
    if method not in (None, "kl"):
        raise VaekitError(f"unknown score {method!r}; the scorer exports kl and the reconstruction at "
                          "the posterior mean")
    entry = PARTS[part]
    model = copy.deepcopy(model).cpu().float().eval().requires_grad_(False)  # the caller's model
    wrapped = entry.build(model).eval()
    example = entry.example(model, 2)  # B = 2: a batch dimension the tracer cannot fold into 1
    with torch.no_grad():
        check_dynamic_batch(wrapped, entry, model, part)
        data = FORMATS[fmt](wrapped, example, entry.inputs(model), entry.outputs(model))
        if fmt == "onnx":
            check_onnx_graph(data, wrapped, entry, model, part)
    out = Path(out)
    atomic_write(out, data)
    return out
