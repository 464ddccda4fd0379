"""The CUDA paths: the model on the GPU, `vaekit train --device cuda` with its checkpoints and
resume, mixed precision (--amp bf16, fp16 with its loss scaler), and the commands reading a run
trained there. Skipped, with the reason, where torch sees no CUDA device (CI has none); run them on
a machine with a GPU: `pytest tests/test_cuda.py`.

The oracle for the GPU's numbers is the CPU's: the same weights must give the same densities there
(float32 on both, TF32 off), and a whole training run agrees in distribution."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

import vaekit
from vaekit.config import ModelConfig
from vaekit.model import VAE
from vaekit.runs import load_torch, read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (this torch sees none); run "
                                       "`pytest tests/test_cuda.py` on a machine with one")


@pytest.fixture(autouse=True)
def _full_precision():
    """float32 arithmetic on the GPU, as on the CPU (TF32 rounds matmul and conv inputs to 10 bits)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("model, shape", [
    (ModelConfig(hidden=(64, 32), latent_dim=6, likelihood="gaussian"), (20,)),
    (ModelConfig(hidden=(64,), latent_dim=5, likelihood="bernoulli", prior="vamp",
                 prior_components=7), (30,)),
    (ModelConfig(backbone="conv", channels=(8, 16), blocks=1, latent_dim=4,
                 likelihood="discretized-logistic"), (3, 8, 8)),
])
def test_the_same_weights_give_the_same_densities_on_the_gpu_as_on_the_cpu(model, shape):
    torch.manual_seed(0)
    cpu = VAE(model, shape)
    gpu = VAE(model, shape)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    n = 16
    x = torch.rand(n, *shape)
    if model.likelihood == "bernoulli":
        x = torch.bernoulli(x)
    elif model.likelihood == "discretized-logistic":
        x = torch.floor(x * 256) / 256
    x_gpu = x.cuda()
    with torch.no_grad():
        q_cpu, q_gpu = cpu.encode(x), gpu.encode(x_gpu)
        assert q_gpu.mean.device.type == "cuda"
        assert rel(q_gpu.mean, q_cpu.mean) < 1e-5 and rel(q_gpu.stddev, q_cpu.stddev) < 1e-5
        z = q_cpu.sample((3,))
        assert rel(gpu.decoder_params(z.cuda()), cpu.decoder_params(z)) < 1e-5
        assert rel(gpu.log_px_z(x_gpu, z.cuda()), cpu.log_px_z(x, z)) < 1e-5
        # the prior's density (a mixture for vamp) and the KL the ELBO subtracts
        assert rel(gpu.prior.dist().log_prob(z.cuda()), cpu.prior.dist().log_prob(z)) < 1e-5
        draws = gpu.sample(8, draw=True)
        assert draws.shape == (8, *shape) and draws.device.type == "cuda"
        assert torch.isfinite(gpu.elbo(x_gpu, mc_samples=4)).all()


def train_cli(capsys, out, data, *extra):
    code, _, err = run_cli(capsys, "train", "--data", data, "--device", "cuda", "--hidden", "32",
                           "--latent-dim", "3", "--batch-size", "100", "--patience", "0",
                           "--out", out, "--quiet", *extra)
    assert code == 0, err
    return read_metrics(out)


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_a_cuda_run_resumes_exactly(tmp_path, capsys, tiny_images, amp):
    """2 epochs straight equal 1 epoch, then --resume to 2: the draws of z come from the GPU's
    generator, whose state last.pt keeps (and fp16's loss scale, the GradScaler's state)."""
    straight = train_cli(capsys, tmp_path / "a", tiny_images, "--epochs", "2", "--amp", amp)
    train_cli(capsys, tmp_path / "b", tiny_images, "--epochs", "1", "--amp", amp)
    last = load_torch(tmp_path / "b" / "last.pt")
    assert isinstance(last["cuda_rng"], torch.Tensor)  # the model's own GPU's generator state
    if amp == "fp16":
        assert last["scaler"]["scale"] > 0
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "b", "--epochs", "2", "--quiet")
    assert code == 0, err
    resumed = read_metrics(tmp_path / "b")
    for key in ("train_loss", "val_elbo", "val_kl"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-5), key


def test_a_run_trained_on_cuda_is_read_on_the_cpu_too(tmp_path, capsys, tiny_table):
    rows = train_cli(capsys, tmp_path / "r", tiny_table, "--epochs", "3")
    assert all(np.isfinite(r["val_elbo"]) for r in rows)
    run = vaekit.load(tmp_path / "r")  # the run's own device
    assert run.model.device.type == "cuda"
    weights = load_torch(tmp_path / "r" / "best.pt")["model"]
    assert all(t.device.type == "cpu" for t in weights.values())
    results = {}
    for device in ("cuda", "cpu"):
        code, out, err = run_cli(capsys, "eval", tmp_path / "r", "--device", device, "--json",
                                 "--mc-samples", "200")
        assert code == 0, err
        results[device] = json.loads(out)
    # the KL is in closed form (deterministic); the reconstruction is a 200-draw mean
    assert results["cuda"]["kl"] == pytest.approx(results["cpu"]["kl"], rel=1e-4)
    assert results["cuda"]["elbo"] == pytest.approx(results["cpu"]["elbo"], rel=0.02)
    z_gpu = vaekit.encode(run, np.load(tiny_table)[:50])
    z_cpu = vaekit.encode(vaekit.load(tmp_path / "r", device="cpu"), np.load(tiny_table)[:50])
    assert np.allclose(z_gpu, z_cpu, rtol=1e-4, atol=1e-5)
    code, _, err = run_cli(capsys, "score", tmp_path / "r", "--out", tmp_path / "s.csv")
    assert code == 0 and (tmp_path / "s.csv").stat().st_size > 0, err


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_about_as_well_as_float32(tmp_path, capsys, shared_data, amp):
    """Autocast lowers the forward pass only: the weights (and what best.pt keeps) stay float32,
    and the validation ELBO (computed in float32) lands near the float32 run's: 2 epochs of the
    784-400-20 MLP on MNIST."""
    args = ["--data", "mnist", "--data-dir", shared_data / "mnist", "--device", "cuda",
            "--backbone", "mlp", "--epochs", "2", "--patience", "0", "--quiet"]
    runs = {}
    for name in ("off", amp):
        code, _, err = run_cli(capsys, "train", *args, "--amp", name, "--out", tmp_path / name)
        assert code == 0, err
        runs[name] = read_metrics(tmp_path / name)
    weights = load_torch(tmp_path / amp / "best.pt")["model"]
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    mixed, full = runs[amp], runs["off"]
    assert mixed[-1]["val_elbo"] > mixed[0]["val_elbo"] + 1  # it learns
    assert mixed[-1]["val_elbo"] == pytest.approx(full[-1]["val_elbo"], rel=0.02)


def test_the_training_split_lives_on_the_gpu_and_gives_the_hosts_batches():
    from vaekit.batches import InMemory

    x = torch.rand(1000, 12)
    host, gpu = InMemory(x), InMemory(x).to_device(torch.device("cuda"))
    assert gpu.x.device.type == "cuda" and host.to_device(torch.device("cpu")) is host
    order = torch.randperm(1000)
    pairs = list(zip(host.epoch(order, 128, pin=True), gpu.epoch(order, 128, pin=True), strict=True))
    assert len(pairs) == 8
    for (a, total_a), (b, total_b) in pairs:
        assert a.is_pinned() and b.device.type == "cuda" and total_a == total_b
        assert torch.equal(a, b.cpu())


def test_importance_sampling_on_the_gpu_agrees_with_the_cpu():
    from vaekit.evaluate import log_likelihood

    torch.manual_seed(0)
    cpu = VAE(ModelConfig(hidden=(64,), latent_dim=4, likelihood="bernoulli"), (100,))
    gpu = VAE(ModelConfig(hidden=(64,), latent_dim=4, likelihood="bernoulli"), (100,))
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = torch.bernoulli(torch.full((300, 100), 0.3))
    a, b = log_likelihood(cpu, x, 2000), log_likelihood(gpu, x, 2000)
    # each a K=2000 estimate per example: they differ by Monte Carlo error only
    assert b.device.type == "cpu" and (a - b).abs().mean() < 0.05 * a.abs().mean()
    assert abs(float((a - b).mean())) < 4 * float((a - b).std() / len(a) ** 0.5) + 1e-3


def test_the_server_answers_from_a_model_on_the_gpu(tmp_path, capsys, tiny_table):
    """`vaekit serve --device cuda`: the app's model lives on the GPU and gives the CPU's numbers."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import warnings

    from vaekit import serve
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    train_cli(capsys, tmp_path / "r", tiny_table, "--epochs", "2")
    x = np.load(tiny_table)[:7]
    cpu = vaekit.load(tmp_path / "r", device="cpu")
    with TestClient(serve.create_app(tmp_path / "r", token="t", device="cuda")) as client:
        auth = {"Authorization": "Bearer t"}
        got = client.post("/encode", json={"x": x.tolist()}, headers=auth).json()
        np.testing.assert_allclose(got["mean"], vaekit.encode(cpu, x), rtol=1e-4, atol=1e-5)
        scores = client.post("/score", json={"x": x.tolist(), "method": "kl"}, headers=auth).json()
        np.testing.assert_allclose(scores["scores"], vaekit.score(cpu, x, method="kl"), rtol=1e-4)
