"""End to end, small and real: train -> files -> eval -> sample; exact resume; seeds; configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import quick_config, run_cli

import vaekit
from vaekit.cli import main
from vaekit.data import load_dataset


def test_cli_train_eval_sample_end_to_end(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", tiny_images, "--hidden", "32",
                             "--latent-dim", "3", "--epochs", "3", "--out", run)
    assert code == 0, err
    assert f"run: {run}" in out and "test ELBO:" in out
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "best.pt", "last.pt",
                 "summary.json", "samples.png", "reconstructions.png"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_elbo", "train_reconstruction", "train_kl", "val_elbo",
                "val_reconstruction", "val_kl"):
        assert all(np.isfinite(r[key]) for r in rows), key
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["torch"] == torch.__version__
    assert manifest["data"]["shape"] == [1, 8, 8] and "train" in manifest["command"]

    code, out, err = run_cli(capsys, "eval", run, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"elbo", "reconstruction", "kl", "n"}
    assert result["n"] == 20  # 10% of 200 held out as test
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"])
    assert result["kl"] >= 0 and result["reconstruction"] <= 0  # bernoulli pmf: log p <= 0

    for name in ("s.png", "s.npy", "s.csv"):
        code, out, err = run_cli(capsys, "sample", run, "-n", "6", "--out", tmp_path / name)
        assert code == 0, err
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (6, 1, 8, 8)
    assert 0 <= arr.min() and arr.max() <= 255  # data space: pixels as given (uint8 scale)
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",").shape == (6, 64)
    from PIL import Image
    with Image.open(tmp_path / "s.png") as im:
        assert im.width > 16 and im.height > 16


def test_python_api_mirrors_the_cli(tmp_path):
    run = vaekit.train(quick_config(), out=tmp_path / "r", quiet=True)
    loaded = vaekit.load(tmp_path / "r")
    assert loaded.config.model.likelihood == "bernoulli"  # digits in [0, 1] -> auto resolved
    x = torch.rand(5, 1, 8, 8)
    _q = loaded.model.encode(x)
    mu, logvar = _q.loc, _q.logvar
    assert mu.shape == logvar.shape == (5, 4)
    assert loaded.model.decode(mu).shape == (5, 1, 8, 8)
    assert loaded.model.sample(3).shape == (3, 1, 8, 8)
    assert loaded.model.elbo(x).shape == (5,)
    for a, b in zip(run.model.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_same_seed_same_numbers(tmp_path):
    a = vaekit.train(quick_config(seed=3), out=tmp_path / "a", quiet=True)
    b = vaekit.train(quick_config(seed=3), out=tmp_path / "b", quiet=True)
    c = vaekit.train(quick_config(seed=4), out=tmp_path / "c", quiet=True)
    assert a.metrics == b.metrics or all(
        {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
        for ra, rb in zip(a.metrics, b.metrics, strict=True))
    assert a.metrics[-1]["val_elbo"] != c.metrics[-1]["val_elbo"]


@pytest.mark.parametrize("options", [{}, {"kl_warmup_steps": 40}])  # 15 steps an epoch: resumed
def test_resume_equals_uninterrupted(tmp_path, capsys, options):    # mid-warm-up, at step 30
    whole = vaekit.train(quick_config(epochs=4, **options), out=tmp_path / "whole", quiet=True)
    vaekit.train(quick_config(epochs=2, **options), out=tmp_path / "part", quiet=True)
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "part", "--epochs", "4",
                           "--quiet")
    assert code == 0, err
    whole_last = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    part_last = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert part_last["state"]["epoch"] == 4
    for key, value in whole_last["model"].items():
        assert torch.equal(value, part_last["model"][key]), key
    # the same numbers; timings differ, and so may warnings about how a run ended (the part run
    # ended at epoch 2, so its row 2 can say "collapse at the last epoch")
    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "warnings")} for r in rows]
    assert strip(whole.metrics) == strip(vaekit.load(tmp_path / "part").metrics)


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_early_stopping_keeps_the_best_checkpoint(tmp_path, beta):
    """Best = highest validation E log p(x|z) - beta * KL: the objective being trained."""
    run = vaekit.train(quick_config(epochs=40, patience=2, lr=0.05, beta=beta), out=tmp_path / "r",
                       quiet=True)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    best = max(run.metrics, key=lambda r: r["val_reconstruction"] - beta * r["val_kl"])
    assert summary["best_epoch"] == best["epoch"]
    if summary["stop"]:
        assert summary["epochs"] == best["epoch"] + 2


def test_config_file_and_options(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"hidden": "24,12", "latent_dim": 2, "epochs": 5,
                                        "batch_size": 100}))
    code, _, err = run_cli(capsys, "train", "--config", cfg_file, "--epochs", "1", "--quiet",
                           "--out", tmp_path / "r")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["hidden"] == [24, 12] and saved["latent_dim"] == 2 and saved["epochs"] == 1
    # the saved config is itself a valid --config
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "r" / "config.yaml",
                           "--quiet", "--out", tmp_path / "r2")
    assert code == 0, err


def test_autoencoder_baseline_trains(tmp_path, capsys):
    vaekit.train(quick_config(model="ae"), out=tmp_path / "ae", quiet=True)
    code, out, err = run_cli(capsys, "eval", tmp_path / "ae", "--json")
    result = json.loads(out)
    assert code == 0 and result["elbo"] is None and result["kl"] == 0
    assert result["reconstruction"] < 0


def test_gaussian_tabular_run_is_standardized_with_training_statistics(tmp_path, tiny_table):
    cfg = quick_config(data=str(tiny_table), epochs=2)
    ds, cfg = load_dataset(cfg)
    assert cfg.model.likelihood == "gaussian" and cfg.data.standardize == "on"
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(ds.x_train.std(0), torch.ones(5), atol=1e-2)
    run = vaekit.train(quick_config(data=str(tiny_table), epochs=2), out=tmp_path / "r", quiet=True)
    assert torch.equal(run.model.shift, ds.shift) and torch.equal(run.model.scale, ds.scale)
    # nats of the data as given: a standardized gaussian model pays -sum(log std) per example
    assert float(run.model.log_jacobian()) == pytest.approx(-float(torch.log(ds.scale).sum()))
    raw_test = run.model.restore(ds.x_test).numpy()
    assert raw_test.mean() == pytest.approx(float(np.load(tiny_table).mean()), rel=0.2)


def test_dynamic_binarization_binarizes_test_data_once(tmp_path):
    ds, _ = load_dataset(quick_config(binarize="dynamic"))
    assert set(ds.x_test.unique().tolist()) <= {0.0, 1.0}
    again, _ = load_dataset(quick_config(binarize="dynamic"))
    assert torch.equal(ds.x_test, again.x_test)
    assert len(ds.x_train.unique()) > 2  # training data stays grey: redrawn every batch


def test_train_on_in_memory_data_with_a_fresh_config(tmp_path):
    """The likelihood 'auto' resolved by the data reaches the model and the saved config."""
    from vaekit.data import dataset_from_arrays

    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    ds, _ = dataset_from_arrays(x, quick_config())
    run = vaekit.train(quick_config(), out=tmp_path / "r", quiet=True, dataset=ds)
    assert run.config.model.likelihood == "gaussian" and run.config.data.standardize == "on"
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["likelihood"] == "gaussian"


def test_eval_of_the_runs_own_file_reads_every_row(tmp_path, tiny_table, capsys):
    vaekit.train(quick_config(data=str(tiny_table), epochs=1), out=tmp_path / "r", quiet=True)
    code, out, err = run_cli(capsys, "eval", tmp_path / "r", "--data", tiny_table, "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 300
    code, out, err = run_cli(capsys, "eval", tmp_path / "r", "--json")
    assert json.loads(out)["n"] == 30  # the run's test split


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_off_cuda_is_one_line(tmp_path, capsys, amp):
    """--amp is autocast on CUDA; on the CPU it is refused in one line before any file exists."""
    code = main(["train", "--amp", amp, "--out", str(tmp_path / "r"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--amp {amp}" in err[0] and "--device cuda" in err[0]
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_amp_dtypes_and_nproc_line():
    from vaekit.cli.train import without_nproc
    from vaekit.runtime import resolve_amp

    assert resolve_amp("off", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cuda")) is torch.bfloat16
    assert resolve_amp("fp16", torch.device("cuda")) is torch.float16
    assert without_nproc(["train", "--nproc", "2", "--epochs", "3", "--nproc=4"]) == [
        "train", "--epochs", "3"]


def test_a_run_saved_before_an_option_existed_resumes(tmp_path, capsys):
    """A checkpoint of vaekit 0.1 resumes: its spec lacks options added later (here the iaf and
    mixture-prior ones; a missing key counts as its default, as when such a run is loaded) and its
    history is a list of rows. A real spec difference is still refused."""
    vaekit.train(quick_config(epochs=1), out=tmp_path / "run", quiet=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    for key in ("flow_steps", "flow_hidden", "prior_components"):
        del last["spec"]["model_config"][key]
    last["history"] = [json.loads(line) for line in last.pop("history_jsonl").splitlines()]
    torch.save(last, tmp_path / "run" / "last.pt")
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"]["epoch"] == 2
    assert [r["epoch"] for r in vaekit.load(tmp_path / "run").metrics] == [1, 2]
    from vaekit.model import VAE
    spec = last["spec"]
    other = {**spec, "model_config": {**spec["model_config"], "latent_dim": 7}}
    assert VAE.same_spec(spec, spec) and not VAE.same_spec(spec, other)
    damaged = {**spec, "model_config": {**spec["model_config"], "no_such_option": 1}}
    assert not VAE.same_spec(damaged, spec)  # a damaged checkpoint is "options differ", one line
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    last["spec"] = damaged
    torch.save(last, tmp_path / "run" / "last.pt")
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--epochs", "3", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "differ" in err, err


def test_last_checkpoint_keeps_the_history_as_metrics_text(tmp_path):
    """last.pt holds the epoch rows as metrics.jsonl's text, one string: pickling a list of rows
    into every epoch's checkpoint cost O(epochs^2) (a 300-epoch fit of a small table spent 60% of
    its time there)."""
    vaekit.train(quick_config(epochs=3), out=tmp_path / "run", quiet=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "history" not in last
    assert last["history_jsonl"] == (tmp_path / "run" / "metrics.jsonl").read_text()
    assert len(last["history_jsonl"].splitlines()) == 3


def test_a_runs_gpu_generator_state_restores_on_a_machine_with_fewer_gpus(monkeypatch):
    """last.pt keeps the state of the model's own GPU's generator; an earlier version kept every
    visible GPU's (torch.cuda.get_rng_state_all) and restored them all, which fails on a machine
    with fewer GPUs. Each saved form restores onto the device the run now uses."""
    from vaekit.runtime import restore_device_rng

    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state, device)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    a, b = torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)
    restore_device_rng(a, torch.device("cuda", 1))  # this version's: the one state, any device
    restore_device_rng([a, b], torch.device("cuda", 0))  # an earlier version's from 2 GPUs, on 1
    restore_device_rng([a, b], torch.device("cuda", 1))
    restore_device_rng([a], torch.device("cuda", 1))  # no state for that index: left as it is
    restore_device_rng([a, b], torch.device("cuda"))  # no index: the current device's
    restore_device_rng(a, torch.device("cpu"))  # CPU draws: torch's global generator, saved apart
    restore_device_rng(None, torch.device("cuda", 0))
    assert calls == [(a, torch.device("cuda", 1)), (a, torch.device("cuda", 0)),
                     (b, torch.device("cuda", 1)), (a, torch.device("cuda"))]


def test_every_rank_takes_the_saved_gpu_generator_state_on_resume(monkeypatch, tmp_path):
    """docs/scale.md: under data parallelism rank 0's draws go on from the run's saved generators.
    On CUDA the GPU's generator was restored only in single-process runs, so a multi-GPU resume
    drew other z on rank 0 than the uninterrupted run. restore() now hands the saved state to
    `restore_device_rng` whatever the number of processes (ranks > 0 reseed each epoch)."""
    import sys
    import types

    from vaekit.config import ModelConfig
    from vaekit.model import VAE

    loop = sys.modules["vaekit.train"]  # the module (the package exports a function of its name)
    calls = []
    monkeypatch.setattr(loop, "restore_device_rng", lambda saved, device: calls.append(saved))
    model = VAE(ModelConfig(hidden=(4,), latent_dim=2, likelihood="bernoulli"), (3,))
    opt = torch.optim.Adam(model.parameters())
    saved = torch.tensor([7], dtype=torch.uint8)
    last = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
            "state": {}, "history": [], "history_jsonl": "", "cuda_rng": saved}
    state = types.SimpleNamespace(average=None, stop_kind=None, run_dir=tmp_path)
    loop.restore(last, quick_config(), model, opt, state)
    assert calls == [saved]
