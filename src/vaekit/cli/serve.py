"""vaekit serve"""

from __future__ import annotations

import os
import socket
import sys

from ..errors import VaekitError
from ..runtime import resolve_device, set_threads
from .common import add_compute_options

HELP = ("Serve a trained model over HTTP: POST /encode, /score, /sample (JSON), GET /health, /info "
        "and the OpenAPI page /docs. Requests are batched; scores equal `vaekit score`'s.")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a run folder (`vaekit train`), a folder "
                   "written by vaekit.save_pretrained, or a fitted anomaly detector's "
                   "(`vaekit detect --save`: /score then defaults to its own score, method "
                   "`detector`, flagged above its threshold)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this "
                   "machine only; 0.0.0.0 for every interface: give a --token)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--token", default=os.environ.get("VAEKIT_TOKEN"), help="bearer token wanted on "
                   "every route but /health (default: the VAEKIT_TOKEN environment variable; none)")
    p.add_argument("--max-batch", type=int, default=256, metavar="N", help="rows per model call, "
                   "and per request (default: 256)")
    p.add_argument("--max-body-bytes", type=int, default=10_000_000, metavar="B", help="largest "
                   "request body accepted (default: 10000000)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long the "
                   "batcher waits for more requests before it runs the model (default: 5)")
    add_compute_options(p)


def check_port(host: str, port: int) -> None:
    """The port is free on host: one line now rather than uvicorn's log later."""
    if not 0 <= port <= 65535:
        raise VaekitError(f"--port must be in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise VaekitError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another "
                          "--port or --host") from None


def run(args) -> int:
    try:
        import uvicorn
    except ImportError:
        raise VaekitError("vaekit serve needs fastapi and uvicorn: pip install 'vaekit[serve]'") from None
    from ..serve import create_app

    set_threads(args.threads)
    device = str(resolve_device(args.device or "cpu"))
    app = create_app(args.run_dir, token=args.token or None, max_batch=args.max_batch,
                     max_body_bytes=args.max_body_bytes, max_wait_ms=args.max_wait_ms, device=device)
    check_port(args.host, args.port)
    if args.host not in LOOPBACK and not args.token:
        print(f"warning: serving on {args.host} without a token: anyone who can reach this address "
              "can use the model; pass --token or set VAEKIT_TOKEN", file=sys.stderr)
    print(f"serving {args.run_dir} on http://{args.host}:{args.port} (POST /encode /score /sample; "
          f"GET /health /info /docs){'; token required' if args.token else ''}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
