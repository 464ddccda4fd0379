"""An HTTP JSON service for a trained model (FastAPI; `vaekit serve` runs it with uvicorn): a run
folder, a model folder (save_pretrained) or a fitted anomaly detector's folder
(`VAEAnomalyDetector.save`, `vaekit detect --save`), whose /score also offers, and defaults to,
the method `detector`: the detector's own score (its -ELBO or neighbours' distance, as it chose
when fit), flagged above its threshold.

    POST /encode  {"x": rows}                               -> {"mean", "logvar"}
    POST /score   {"x": rows, "method", "samples", "seed"}  -> {"method", "scores"[, "threshold",
                                                                 "flagged"]}
    POST /sample  {"n", "seed", "temperature", "draw"}      -> {"x"}
    GET  /health, GET /info (model, data shape, likelihood, version), and FastAPI's /docs.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations at runtime.)
Rows are the data as the run was trained on it, (N, *example shape) or (N, D), as JSON lists; the
numbers equal `vaekit.encode` / `vaekit score` for the same rows (the scores' draws are seeded per
example, so batching does not change them). A client's mistake (malformed JSON, a body over the
limit, a wrong shape or feature count, NaN, values outside the likelihood's support, an unknown
method) is a 4xx JSON {"error": ...} naming it. A result that overflowed float32 (a row far outside
the training data) is null. With a token, every route but /health wants
`Authorization: Bearer TOKEN`.

Batching: /encode and /score requests go to an asyncio queue; one worker takes what arrives within
`max_wait_ms` (up to `max_batch` rows), runs each kind on the concatenated rows in a single model
thread (off the event loop) and hands every request its rows back.
"""

import asyncio
import contextlib
import hmac
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import anomaly, api, latent
from .data import check_finite
from .errors import VaekitError
from .pretrained import Detector, detector_of, load
from .runs import Run
from .runtime import MAX_SEED

MAX_SAMPLES = 10_000  # draws per example a request may ask for
FITTED = "detector"  # /score's method of a served VAEAnomalyDetector: its own score


class ClientError(Exception):
    """A request the client must fix: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    key: tuple  # ("encode",) or ("score", method, samples, seed): jobs of one key share a call
    x: torch.Tensor  # (N, D) model space
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers concurrent jobs into model calls: per key, the rows of every waiting job at once."""

    def __init__(self, model, max_batch: int, max_wait_s: float):
        self.model, self.max_batch, self.max_wait_s = model, max_batch, max_wait_s
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaekit-model")

    async def submit(self, key: tuple, x: torch.Tensor) -> torch.Tensor:
        if self.worker is None or self.worker.done():  # started on first use, in the server's loop
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self.run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Job(key, x, future))
        return await future

    async def close(self) -> None:
        """Stop the worker at the server's shutdown (a later request starts a new one)."""
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker

    async def gather(self) -> list[Job]:
        """The first waiting job and those queued behind it, up to max_batch rows; when that is
        fewer, once more after max_wait_s (no wait_for on the queue: a timed-out get may drop a job)."""
        jobs = [await self.queue.get()]
        rows = len(jobs[0].x)
        for wait in (0.0, self.max_wait_s):
            if rows >= self.max_batch:
                break
            if wait:
                await asyncio.sleep(wait)
            while rows < self.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                rows += len(jobs[-1].x)
        return jobs

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self.gather()
            for key in dict.fromkeys(j.key for j in jobs):
                group = [j for j in jobs if j.key == key]
                try:
                    out = await loop.run_in_executor(self.executor, compute, self.model, key,
                                                     torch.cat([j.x for j in group]))
                except Exception as e:  # VaekitError (e.g. iw-nll of an autoencoder) or a bug
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)
                    continue
                for j, part in zip(group, out.split([len(j.x) for j in group]), strict=True):
                    if not j.future.done():  # a client that left has its future cancelled
                        j.future.set_result(part)


def compute(model, key: tuple, x: torch.Tensor) -> torch.Tensor:
    """One model call for a key's concatenated rows (N, D): (N, 2L) means|log-variances, (N, L)
    codes, or (N,) scores (float64)."""
    if key[0] == "encode":
        q = latent.encode(model, x)
        return torch.cat([q.mean, latent.log_variance(q)], 1) if latent.has_variance(model) else q.mean
    _, method, samples, seed = key
    return anomaly.score(model, x, method, samples, seed).double()


# --- request checks -----------------------------------------------------------------------------
async def read_json(request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past max_bytes (read no further), 400 if not JSON."""
    too_big = ClientError(413, f"the request body is over the server's limit of {max_bytes} bytes; "
                               "send fewer rows per request")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    try:
        obj = json.loads(bytes(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ClientError(400, f"the body is not valid JSON ({e}); send a JSON object") from None
    if not isinstance(obj, dict):
        raise ClientError(400, f"the body must be a JSON object, got {type(obj).__name__}")
    return obj


def rows_of(body: dict[str, Any], model, max_batch: int) -> torch.Tensor:
    """body["x"] -> model space (N, D), every check of `vaekit score`'s data path: 422 otherwise."""
    if "x" not in body:
        raise ClientError(422, "the body has no \"x\": send {\"x\": [[...], ...]}, one example a row")
    try:
        arr = np.asarray(body["x"], dtype=np.float64)
    except (ValueError, TypeError):
        raise ClientError(422, "\"x\" must be a list of examples, each a list of numbers (or nested "
                               f"lists of shape {list(model.input_shape)}) of equal length") from None
    if arr.ndim < 2 or len(arr) == 0:
        raise ClientError(422, f"\"x\" must be a non-empty list of examples, each of shape "
                               f"{list(model.input_shape)} or {model.dim} values; got shape "
                               f"{list(arr.shape)}")
    if len(arr) > max_batch:
        raise ClientError(422, f"{len(arr)} rows in one request; the server takes at most {max_batch} "
                               "(--max-batch): split the request")
    try:
        check_finite(arr, "\"x\"")
        return api.to_model_space(model, arr, check=True).cpu()
    except VaekitError as e:
        raise ClientError(422, str(e)) from None


def as_json(values: torch.Tensor | np.ndarray) -> list:
    """Nested lists of floats, null where a value is not finite (JSON has no inf or NaN: a row
    far outside the training data can overflow float32)."""
    arr = np.asarray(values, dtype=np.float64)
    if np.isfinite(arr).all():
        return arr.tolist()
    return np.where(np.isfinite(arr), arr, None).tolist()


def integer(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ClientError(422, f"\"{name}\" must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def fitted_detector(folder: Path, device: str | None) -> tuple[Run, Any, Detector]:
    """A saved VAEAnomalyDetector: a run of its (first) model for the VAE's routes, the detector,
    and its threshold as the method FITTED's. The VAE's routes get a float32 copy of the model on
    `device`; the detector keeps its float64 models on the CPU for its own scores."""
    import copy

    from .detector import VAEAnomalyDetector
    from .runtime import resolve_device

    fitted = VAEAnomalyDetector.load(folder)
    model = copy.deepcopy(fitted.model_).float().to(resolve_device(device or "cpu"))
    rule = f"{fitted.method_}, contamination {fitted.contamination:g} of the rows it was fit on"
    return Run(folder, fitted.config_, model), fitted, Detector(FITTED, -fitted.offset_, rule)


# --- the app ---------------------------------------------------------------------------------------
def create_app(run_or_folder: Run | str | Path, token: str | None = None, max_batch: int = 256,
               max_body_bytes: int = 10_000_000, max_wait_ms: float = 5.0, device: str | None = None):
    """The FastAPI app of a run or model folder (`vaekit.load`). token: wanted on every route
    but /health (None: no token)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
    except ImportError:
        raise VaekitError("vaekit serve needs fastapi and uvicorn: pip install 'vaekit[serve]'") from None
    from . import __version__

    if max_batch < 1 or max_body_bytes < 1 or not max_wait_ms >= 0:
        raise VaekitError("--max-batch and --max-body-bytes must be positive, --max-wait-ms >= 0")
    fitted = None  # a saved VAEAnomalyDetector, whose own score is the method FITTED
    if not isinstance(run_or_folder, Run) and (Path(run_or_folder) / "detector.json").is_file():
        run, fitted, detector = fitted_detector(Path(run_or_folder), device)
    else:
        run = run_or_folder if isinstance(run_or_folder, Run) else load(run_or_folder, device=device)
        detector = detector_of(run)
    model = run.model.eval()
    methods = [*([FITTED] if fitted is not None else []), *anomaly.SCORES]
    batcher = Batcher(model, max_batch, max_wait_ms / 1000)
    default_method = detector.method if detector is not None else anomaly.DEFAULT_METHOD

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.close()

    app = FastAPI(title="vaekit", version=__version__, lifespan=lifespan,
                  description=f"encode, score and sample with the vaekit model {run.dir.name}")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError):
        return error(e.status, str(e))

    @app.exception_handler(VaekitError)
    async def vaekit_error(request: Request, e: VaekitError):
        return error(422, str(e))

    @app.middleware("http")
    async def bearer(request: Request, call_next):
        if token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token; send the header "
                                     "Authorization: Bearer TOKEN"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return {"model": run.dir.name, "version": __version__, "data_shape": list(model.input_shape),
                "likelihood": model.config.likelihood, "posterior": model.config.posterior_name,
                "latent_dim": model.latent_dim, "image": model.image, "config": model.spec(),
                "methods": methods, "default_method": default_method,
                "detector": None if detector is None else vars(detector),
                "max_batch": max_batch, "max_body_bytes": max_body_bytes}

    @app.post("/encode")
    async def encode(request: Request):
        x = rows_of(await read_json(request, max_body_bytes), model, max_batch)
        out = (await batcher.submit(("encode",), x)).double()
        if not latent.has_variance(model):  # the autoencoder's code, or an iaf/layered q's mean
            return {"mean": as_json(out), "logvar": None}
        mean, logvar = out.chunk(2, 1)
        return {"mean": as_json(mean), "logvar": as_json(logvar)}

    @app.post("/score")
    async def score(request: Request):
        body = await read_json(request, max_body_bytes)
        method = body.get("method", default_method)
        if method not in methods:
            raise ClientError(422, f"unknown method {method!r}; choose one of {', '.join(methods)}")
        x = rows_of(body, model, max_batch)  # every check, for the detector's rows too
        if method == FITTED:  # the detector's own draws and seeds: fixed when it was fit
            own = fitted.method_ in anomaly.DEFAULT_SAMPLES  # a VAE score (else: the distance)
            samples = (fitted.samples or anomaly.DEFAULT_SAMPLES[fitted.method_]) if own else None
            seed = fitted.random_state
            rows = np.asarray(body["x"], dtype=np.float64).reshape(len(x), -1)
            scores = await asyncio.get_running_loop().run_in_executor(
                batcher.executor, lambda: -fitted.score_samples(rows))
        else:
            samples = integer(body, "samples", None, 1, MAX_SAMPLES) or anomaly.DEFAULT_SAMPLES[method]
            seed = integer(body, "seed", 0, 0, MAX_SEED)
            scores = (await batcher.submit(("score", method, samples, seed), x)).numpy()
        out: dict[str, Any] = {"method": method, "samples": samples, "seed": seed,
                               "scores": as_json(scores)}
        if detector is not None and detector.method == method:  # +inf is flagged, NaN is not
            out |= {"threshold": detector.threshold, "flagged": (scores > detector.threshold).tolist()}
        return out

    @app.post("/sample")
    async def sample(request: Request):
        body = await read_json(request, max_body_bytes)
        n = integer(body, "n", 1, 1, max_batch)
        seed = integer(body, "seed", None, 0, MAX_SEED)
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ClientError(422, f"\"temperature\" must be a finite number >= 0, got {temperature!r}")
        draw = body.get("draw", False)
        if not isinstance(draw, bool):
            raise ClientError(422, f"\"draw\" must be true or false, got {draw!r}")
        x = await asyncio.get_running_loop().run_in_executor(
            batcher.executor, lambda: api.sample(model, n, float(temperature), seed, draw))
        return {"x": as_json(x)}

    return app
