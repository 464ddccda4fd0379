"""vaekit export"""

from __future__ import annotations

from ..export import FORMATS, PARTS, SAMPLED, export
from ..pretrained import load
from ..runtime import set_threads
from .common import add_compute_options

HELP = ("Write a part of a trained model (encoder, decoder, or scorer: the deterministic anomaly "
        "scores) as an ONNX or TorchScript file that takes data as given (the run's preprocessing "
        "is inside the graph), any batch size.")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a run folder (`vaekit train`) or a folder "
                   "written by vaekit.save_pretrained")
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="onnx (needs the onnx "
                   "package: pip install 'vaekit[export]') or torchscript (default: onnx)")
    p.add_argument("--part", choices=list(PARTS), required=True, help="encoder: x -> mean, logvar "
                   "of q(z|x); decoder: z -> mean of p(x|z) in the data's units; scorer: x -> kl, "
                   "reconstruction (-log p(x|z) at the posterior mean), nats per example")
    p.add_argument("--method", choices=["kl", *SAMPLED], help="a score the scorer must hold: kl "
                   "(it always does); the sampled scores are refused")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (.onnx, .pt)")
    add_compute_options(p, device=False)


def run(args) -> int:
    set_threads(args.threads)
    r = load(args.run_dir, device="cpu")  # exported on the CPU: the file runs anywhere
    out = export(r.model, args.part, args.format, args.out, args.method)
    print(f"wrote the {args.part} of {args.run_dir} as {args.format} to {out}")
    return 0
