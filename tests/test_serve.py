"""`vaekit serve`: every route, every client mistake a 4xx naming it, the bearer token, batching of
concurrent requests, and /score equal to the offline `vaekit score` for the same rows."""

from __future__ import annotations

import socket
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli

import vaekit
from vaekit import serve
from vaekit.errors import VaekitError
from vaekit.pretrained import Detector

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # starlette 0.5x asks for httpx2 instead of httpx (same API)
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A 2-epoch gaussian run on a 5-column table, and the table."""
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 2)) @ rng.normal(size=(2, 5)) * 3 + 10).astype(np.float32)
    np.save(root / "table.npy", x)
    torch.manual_seed(0)
    run = vaekit.train(quick_config(data=str(root / "table.npy"), epochs=2), out=root / "run", quiet=True)
    return run, x


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return vaekit.train(quick_config(data="digits", epochs=1, latent_dim=3),
                        out=tmp_path_factory.mktemp("serve") / "digits", quiet=True)


@pytest.fixture
def client(table):
    with TestClient(serve.create_app(table[0], token=TOKEN, max_batch=64, max_body_bytes=20_000)) as c:
        yield c


def offline_scores(capsys, run, rows: np.ndarray, path, method: str) -> np.ndarray:
    """`vaekit score RUN --data rows.npy --method M` (seed 0, the default draws): its CSV column."""
    np.save(path, rows)
    code, out, err = run_cli(capsys, "score", run.dir, "--data", path, "--method", method)
    assert code == 0, err
    return np.array([float(line.split(",")[2]) for line in out.splitlines()[1:]])


def test_routes_give_vaekits_numbers(client, table):
    run, x = table
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info", headers=AUTH).json()
    assert info["data_shape"] == [5] and info["likelihood"] == "gaussian"
    assert info["version"] == vaekit.__version__ and info["latent_dim"] == 4
    got = client.post("/encode", json={"x": x[:6].tolist()}, headers=AUTH).json()
    mean, logvar = vaekit.encode(run, x[:6], logvar=True)
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["logvar"], logvar, rtol=1e-6, atol=1e-7)
    out = client.post("/sample", json={"n": 4, "seed": 3}, headers=AUTH).json()
    np.testing.assert_allclose(out["x"], vaekit.sample(run, 4, seed=3), rtol=1e-6)


@pytest.mark.parametrize("method", ["elbo", "kl", "iw-nll"])
def test_score_equals_the_offline_command(client, table, capsys, tmp_path, method):
    run, x = table
    rows = x[20:33]
    want = offline_scores(capsys, run, rows, tmp_path / "rows.npy", method)
    body = {"x": rows.tolist()} | ({} if method == "elbo" else {"method": method})
    got = client.post("/score", json=body, headers=AUTH).json()
    assert got["method"] == method and "flagged" not in got  # a run folder has no threshold
    np.testing.assert_allclose(got["scores"], want, rtol=2e-6, atol=1e-6)  # the CSV's 7 digits


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(table, monkeypatch):
    run, x = table
    calls = []
    compute = serve.compute
    monkeypatch.setattr(serve, "compute",
                        lambda m, key, rows: calls.append(len(rows)) or compute(m, key, rows))
    results: dict[int, list[float]] = {}
    with TestClient(serve.create_app(run, max_wait_ms=300)) as c:
        def ask(i):
            body = {"x": x[3 * i:3 * i + 3].tolist(), "method": "elbo"}
            results[i] = c.post("/score", json=body).json()["scores"]
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(calls) == 24 and len(calls) < 8  # several requests shared a model call
    want = vaekit.score(run, x[:24], "elbo", samples=16, seed=0)
    np.testing.assert_allclose(np.concatenate([results[i] for i in range(8)]), want, rtol=1e-6)


def test_threshold_and_flagged_come_with_a_detector(table, tmp_path):
    run, x = table
    kl = vaekit.score(run, x[:30], "kl")
    cut = float(np.median(kl))
    folder = vaekit.save_pretrained(run, tmp_path / "shared", detector=Detector("kl", cut, "by hand"))
    with TestClient(serve.create_app(folder)) as c:
        got = c.post("/score", json={"x": x[:30].tolist()}).json()  # default: the detector's method
    assert got["method"] == "kl" and got["threshold"] == cut
    assert got["flagged"] == (kl > cut).tolist() and sum(got["flagged"]) == 15
    np.testing.assert_allclose(got["scores"], kl, rtol=1e-6)


@pytest.mark.parametrize("method", ["neighbours", "elbo"])
def test_a_saved_anomaly_detector_serves_its_own_score_and_threshold(table, tmp_path, method):
    """The folder of `vaekit detect --save` (VAEAnomalyDetector.save): /score's default method
    `detector` gives the detector's own scores, flagged as its predict() flags them; the VAE's
    routes and scores work on its model; a row of another width is a 422."""
    from vaekit import VAEAnomalyDetector

    _, x = table
    det = VAEAnomalyDetector(method=method, steps=40, contamination=0.2).fit(x[:200])
    folder = det.save(tmp_path / "detector")
    rows = x[200:260]
    with TestClient(serve.create_app(folder, token=TOKEN)) as c:
        info = c.get("/info", headers=AUTH).json()
        got = c.post("/score", json={"x": rows.tolist()}, headers=AUTH).json()
        elbo = c.post("/score", json={"x": rows.tolist(), "method": "elbo"}, headers=AUTH)
        encoded = c.post("/encode", json={"x": rows.tolist()}, headers=AUTH)
        narrow = c.post("/score", json={"x": rows[:, :3].tolist()}, headers=AUTH)
    assert info["default_method"] == "detector" and info["methods"][0] == "detector"
    assert info["detector"]["threshold"] == -det.offset_
    assert got["method"] == "detector" and got["threshold"] == -det.offset_
    np.testing.assert_array_equal(got["scores"], -det.score_samples(rows))
    assert got["flagged"] == (det.predict(rows) == -1).tolist()
    assert (got["samples"] is None) == (method == "neighbours")
    assert elbo.status_code == 200 and len(elbo.json()["scores"]) == 60
    assert encoded.status_code == 200
    np.testing.assert_allclose(encoded.json()["mean"], vaekit.encode(det.model_.float(), rows),
                               rtol=1e-5, atol=1e-6)
    assert narrow.status_code == 422 and "shape" in narrow.json()["error"]


def test_every_route_but_health_wants_the_token(client):
    for path, method in (("/info", "get"), ("/encode", "post"), ("/score", "post"),
                         ("/sample", "post"), ("/docs", "get"), ("/openapi.json", "get")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = getattr(client, method)(path, headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert client.get("/health").status_code == 200
    assert client.get("/docs", headers=AUTH).status_code == 200


ROW = [1.0, 2.0, 3.0, 4.0, 5.0]
MISTAKES = [  # (body bytes or JSON, status, words the error must contain)
    (b"{\"x\": [[1, 2", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ([ROW], 400, "must be a JSON object"),
    ({"rows": [ROW]}, 422, "has no \"x\""),
    ({"x": [ROW, ROW[:3]]}, 422, "of equal length"),
    ({"x": [["a"] * 5]}, 422, "list of numbers"),
    ({"x": [ROW[:4]]}, 422, "(or 5 values each)"),
    ({"x": ROW}, 422, "got shape [5]"),
    ({"x": []}, 422, "non-empty"),
    (b"{\"x\": [[NaN, 1, 2, 3, 4]]}", 422, "NaN/Inf"),
    (b"{\"x\": [[1e39, 1, 2, 3, 4]]}", 422, "beyond float32"),
    ({"x": [ROW] * 65}, 422, "at most 64"),
    ({"x": [ROW] * 2000}, 413, "over the server's limit of 20000 bytes"),
    ({"x": [ROW], "method": "magic"}, 422, "unknown method 'magic'"),
    ({"x": [ROW], "samples": 0}, 422, "\"samples\" must be an integer"),
    ({"x": [ROW], "seed": -1}, 422, "\"seed\" must be an integer"),
    ({"x": [ROW], "seed": "7"}, 422, "\"seed\" must be an integer"),
]


@pytest.mark.parametrize("body, status, words", MISTAKES)
def test_client_mistakes_are_4xx_naming_the_problem(client, body, status, words):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    for route in ("/score", "/encode") if status != 422 or "method" not in str(body) else ("/score",):
        if route == "/encode" and any(k in str(body) for k in ("samples", "seed")):
            continue  # /encode takes no such options
        r = client.post(route, headers=AUTH, **kwargs)
        assert r.status_code == status and words in r.json()["error"], (route, r.json())


@pytest.mark.parametrize("body, words", [
    ({"n": 0}, "\"n\" must be an integer in [1, 64]"),
    ({"n": 65}, "\"n\" must be an integer in [1, 64]"),
    ({"n": 2, "temperature": -1}, "\"temperature\" must be a finite number"),
    ({"n": 2, "draw": "yes"}, "\"draw\" must be true or false"),
])
def test_sample_mistakes(client, body, words):
    r = client.post("/sample", json=body, headers=AUTH)
    assert r.status_code == 422 and words in r.json()["error"]


def test_values_outside_the_likelihoods_support(digits):
    with TestClient(serve.create_app(digits)) as c:
        ok = c.post("/score", json={"x": np.full((2, 1, 8, 8), 16.0).tolist(), "method": "kl"})
        r = c.post("/score", json={"x": np.full((2, 64), 100.0).tolist()})
        pmf = c.post("/score", json={"x": np.full((2, 64), 8.0).tolist(), "method": "iw-nll"})
    assert ok.status_code == 200 and len(ok.json()["scores"]) == 2
    assert r.status_code == 422 and "bernoulli needs data in [0, 1]" in r.json()["error"]
    assert pmf.status_code == 200


def test_a_row_that_overflows_float32_gives_null_not_a_500(client):
    r = client.post("/score", json={"x": [[3e38] * 5, ROW], "method": "elbo"}, headers=AUTH)
    assert r.status_code == 200
    huge, normal = r.json()["scores"]
    assert huge is None and np.isfinite(normal)


def test_cli_binds_loopback_and_warns_without_a_token_elsewhere(table, capsys, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(app=app, host=host))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    code, out, err = run_cli(capsys, "serve", table[0].dir, "--port", free)
    assert code == 0 and seen["host"] == "127.0.0.1" and err == "" and "serving" in out
    monkeypatch.setenv("VAEKIT_TOKEN", "from-env")
    code, out, err = run_cli(capsys, "serve", table[0].dir, "--host", "0.0.0.0", "--port", free)
    assert code == 0 and seen["host"] == "0.0.0.0" and err == "" and "token required" in out
    with TestClient(seen["app"]) as c:  # the environment's token guards it
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": "Bearer from-env"}).status_code == 200
    monkeypatch.delenv("VAEKIT_TOKEN")
    code, out, err = run_cli(capsys, "serve", table[0].dir, "--host", "0.0.0.0", "--port", free)
    assert code == 0 and err.startswith("warning: serving on 0.0.0.0 without a token")


def test_cli_refuses_a_busy_port_in_one_line(table, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, out, err = run_cli(capsys, "serve", table[0].dir, "--port", s.getsockname()[1])
    assert code == 2 and err.count("\n") == 1 and "choose another --port" in err


def test_cli_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "serve", tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "nowhere not found" in err


def test_missing_fastapi_names_the_extra(table, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(VaekitError, match=r"pip install 'vaekit\[serve\]'"):
        serve.create_app(table[0])


@pytest.mark.parametrize("posterior", ["iaf", "layered"])
def test_encode_of_a_posterior_without_a_variance_gives_its_mean_and_null(table, tmp_path, posterior):
    """An iaf or layered q(z|x) has no per-dimension variance: /encode gives vaekit's posterior
    mean and logvar null (it had failed every request)."""
    _, x = table
    np.save(tmp_path / "t.npy", x)
    run = vaekit.train(quick_config(data=str(tmp_path / "t.npy"), epochs=1, posterior=posterior,
                                    flow_steps=1, flow_hidden=8), out=tmp_path / "r", quiet=True)
    with TestClient(serve.create_app(run)) as c:
        reply = c.post("/encode", json={"x": x[:5].tolist()})
    assert reply.status_code == 200, reply.text
    assert reply.json()["logvar"] is None
    np.testing.assert_allclose(reply.json()["mean"], vaekit.encode(run, x[:5]), rtol=1e-6, atol=1e-7)
