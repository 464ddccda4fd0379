"""The run folder's state machine (issue 8: items 3, 8, 9, 11 disk full, 14, 21): one writer at a
time, folders without a checkpoint restart, stops survive a resume, orphan temp files go, a full
disk is one line, and sizes left unset follow the data."""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED_DATA, interrupt_everywhere, quick_config, run_cli

import vaekit
from vaekit import VaekitError
from vaekit.config import default_sizes
from vaekit.runs import atomic_write, claim, load_torch

train_module = importlib.import_module("vaekit.train")  # the module (vaekit.train is the function)
ROOT = Path(__file__).resolve().parents[1]
FAST = ("--hidden", "16", "--latent-dim", "2", "--batch-size", "100", "--threads", "1", "--quiet")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}


def vaekit_process(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, argv)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def numbers(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --- item 3: one writer per folder ------------------------------------------------------------
def test_two_concurrent_train_processes_one_folder_one_wins_the_other_is_refused(tmp_path,
                                                                                tiny_images):
    out = tmp_path / "run"
    procs = {seed: vaekit_process("train", "--data", tiny_images, "--epochs", "2", "--seed", seed,
                                  "--out", out, *FAST) for seed in (3, 4)}
    results = {seed: (p.wait(timeout=300), *p.communicate()) for seed, p in procs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    (winner, (_, stdout, _)), = [(s, r) for s, r in results.items() if r[0] == 0]
    (_, _, stderr), = [r for r in results.values() if r[0] == 2]
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert "in use by another" in stderr or "already holds a run" in stderr
    # the folder is the winner's alone: its seed everywhere, and the test figure it printed
    assert json.loads((out / "manifest.json").read_text())["seed"] == winner
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == winner
    elbo = json.loads((out / "summary.json").read_text())["test"]["elbo"]
    assert f"test ELBO: {elbo:.2f}" in stdout


def test_a_folder_in_use_is_refused_in_one_line_and_left_alone(tmp_path, tiny_images, capsys):
    out = tmp_path / "run"
    with claim(out, resume=False):  # another writer holds it (flock is per open file: a
        code, _, err = run_cli(capsys, "train", "--data", tiny_images, "--epochs", "1",  # second
                               "--out", out, *FAST)  # open in this process conflicts too)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use" in err
    assert list(out.iterdir()) == []


# --- items 8 and 9: stops survive a resume, folders without a checkpoint restart ---------------
def test_resuming_an_early_stopped_run_trains_no_further_and_rewrites_the_same_summary(tmp_path,
                                                                                     capsys):
    cfg = quick_config(epochs=40, patience=2, lr=0.05)
    run = vaekit.train(cfg, out=tmp_path / "r", quiet=True)
    summary = (tmp_path / "r" / "summary.json").read_text()
    assert json.loads(summary)["stop"].startswith("early stop")
    stopped_at = len(run.metrics)
    assert stopped_at < 40
    (tmp_path / "r" / "summary.json").unlink()  # killed after the last checkpoint, before summary
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--quiet")
    assert code == 0, err
    assert len(vaekit.load(tmp_path / "r").metrics) == stopped_at
    assert (tmp_path / "r" / "summary.json").read_text() == summary  # timings included
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--quiet")  # finished
    assert code == 0 and (tmp_path / "r" / "summary.json").read_text() == summary
    # a larger --patience lets the stopped run go on
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--patience", "0",
                           "--epochs", str(stopped_at + 1), "--quiet")
    assert code == 0 and len(vaekit.load(tmp_path / "r").metrics) == stopped_at + 1


def interrupt_in_epoch(monkeypatch, epoch):
    real, calls = train_module.train_epoch, {"n": 0}

    def epoch_then_interrupt(*args):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt  # as a kill: nothing after this point is written
        return real(*args)

    monkeypatch.setattr(train_module, "train_epoch", epoch_then_interrupt)
    return real


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed_or_reused(tmp_path, capsys,
                                                                         monkeypatch):
    whole = vaekit.train(quick_config(), out=tmp_path / "whole", quiet=True)
    real = interrupt_in_epoch(monkeypatch, 1)
    for again in (["--resume", tmp_path / "r"], ["--out", tmp_path / "r", "--data", "digits",
                                                 "--hidden", "32", "--latent-dim", "4",
                                                 "--epochs", "3", "--batch-size", "100",
                                                 "--patience", "0"]):
        with pytest.raises(KeyboardInterrupt):
            vaekit.train(quick_config(), out=tmp_path / "r", quiet=True)
        assert (tmp_path / "r" / "config.yaml").exists() and not (tmp_path / "r" / "last.pt").exists()
        monkeypatch.setattr(train_module, "train_epoch", real)
        code, _, err = run_cli(capsys, "train", *again, "--quiet")
        assert code == 0, err
        assert numbers(vaekit.load(tmp_path / "r").metrics) == numbers(whole.metrics)
        shutil.rmtree(tmp_path / "r")
        real = interrupt_in_epoch(monkeypatch, 1)


# --- item 14: orphan temp files -----------------------------------------------------------------
def test_orphan_temp_files_of_killed_writes_are_removed_on_resume_and_nothing_else(tmp_path):
    vaekit.train(quick_config(epochs=2), out=tmp_path / "r", quiet=True)
    orphans = [".last.pt.k3j_x9a1", ".best.pt.abcdefgh", ".metrics.jsonl.0a1b2c3d"]
    kept = [".notes.txt.abcdefgh", ".last.pt.toolong123", "last.pt.abcdefgh", "mine.txt"]
    for name in orphans + kept:
        (tmp_path / "r" / name).write_bytes(b"x" * 10)
    vaekit.train(quick_config(epochs=3), out=tmp_path / "r", resume=True, quiet=True)
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert not names & set(orphans) and set(kept) <= names


# --- item 11: a full disk ------------------------------------------------------------------------
def test_a_full_disk_mid_run_is_one_line_and_leaves_whole_checkpoints(tmp_path, capsys,
                                                                     monkeypatch):
    """The 6th file write (epoch 2's best.pt: config, manifest, best, last, metrics, best) finds
    the disk full: one line, exit 2, the checkpoints on disk whole, no temp file, resumable."""
    real_fdopen, writes = os.fdopen, {"n": 0}

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            writes["n"] += 1
            if writes["n"] == 6:
                self.f.write(bytes(data)[:len(data) // 2])  # half of it lands, as on a full disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--epochs", "3",
                             "--patience", "0", *FAST)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left" in err and "best.pt" in err and "Traceback" not in err
    assert load_torch(tmp_path / "r" / "last.pt")["state"]["epoch"] == 1
    assert load_torch(tmp_path / "r" / "best.pt")["epoch"] == 1
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--quiet")
    assert code == 0, err


# --- item 21: sizes follow the data ------------------------------------------------------------
def test_default_sizes_rule():
    """The one rule (train and VAEAnomalyDetector): written out for three tables and images."""
    assert default_sizes(49, 5) == {"batch_size": 49, "epochs": 500, "patience": 500,
                                    "hidden": [32, 16], "latent_dim": 2}
    # 104 rows: batches of 100 -> 2 steps an epoch; patience holds 500 steps = 250 epochs
    assert default_sizes(104, 13) == {"batch_size": 100, "epochs": 500, "patience": 250,
                                      "hidden": [64, 32], "latent_dim": 6}
    # 50000 rows: batches of 128 -> 391 steps; 20000 steps = 52 epochs; patience floor 10
    assert default_sizes(50_000, 40) == {"batch_size": 128, "epochs": 52, "patience": 10,
                                         "hidden": [256, 128], "latent_dim": 16}
    assert default_sizes(1455, 64, image=True) == {"batch_size": 128, "epochs": 50,
                                                   "patience": 10, "hidden": [400],
                                                   "latent_dim": 20}


def test_train_on_a_small_table_sizes_follow_it_and_given_options_win(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    np.save(tmp_path / "t.npy", x)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.npy", "--epochs", "2",
                           "--out", tmp_path / "r", "--threads", "1", "--quiet")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    n_train = 60 - 6 - 5  # 10% test, then 10% of the rest for validation
    assert saved["batch_size"] == n_train  # fewer rows than a minibatch: one batch of all
    assert saved["epochs"] == 2  # given: wins
    assert saved["patience"] == 500 and saved["hidden"] == [32, 16] and saved["latent_dim"] == 2
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--quiet")  # as resolved
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == saved


@pytest.mark.slow
def test_default_sizes_keep_the_code_of_a_small_real_table(tmp_path):
    """ODDS glass (214 rows): with the defaults the KL stays away from collapse (before: batch 128
    = 2 steps an epoch, patience 10 epochs: stopped at epoch 25 with a test KL of 0.32 nats;
    now 2.25)."""
    path = SHARED_DATA / "odds" / "glass.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    run = vaekit.train(vaekit.Config.from_flat({"data": str(path)}), out=tmp_path / "r",
                       quiet=True)
    test = run.summary["test"]
    assert test["kl"] > 1.0 and test["active_units"] >= 2


# --- the crash drill, once ----------------------------------------------------------------------
def drill():
    spec = importlib.util.spec_from_file_location("crash_drill", ROOT / "benchmarks" /
                                                  "crash_drill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_killed_at_a_random_point_and_resumed_equals_uninterrupted(tmp_path):
    """One trial of benchmarks/crash_drill.py: SIGKILL at a random time while training, continue,
    compare every file with an uninterrupted run (three process starts: slow on a busy machine)."""
    d = drill()
    seconds = d.reference(tmp_path / "whole", d.OPTIONS)
    delay = random.Random().uniform(0, seconds)
    where = d.kill_and_resume(tmp_path / "killed", d.OPTIONS, delay)
    assert "failed" not in where
    assert d.differences(tmp_path / "whole", tmp_path / "killed") == [], (delay, where)


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` catches it."""


def stop_at_event(monkeypatch, n: int) -> None:
    """Raise Killed at the n-th event of a run: a training epoch starting, or a file write (that
    one after half its bytes reached a temp file, left behind as a killed write leaves it)."""
    runs_module = importlib.import_module("vaekit.runs")
    real_epoch, real_write, seen = train_module.train_epoch, runs_module.atomic_write, {"n": 0}

    def tick():
        seen["n"] += 1
        return seen["n"] == n

    def epoch(*args):
        if tick():
            raise Killed
        return real_epoch(*args)

    def write(path, data):
        if tick():
            body = data if isinstance(data, bytes) else str(data).encode()
            (path.parent / f".{path.name}.killed00").write_bytes(body[:len(body) // 2])
            raise Killed
        return real_write(path, data)

    monkeypatch.setattr(train_module, "train_epoch", epoch)
    monkeypatch.setattr(runs_module, "atomic_write", write)


@pytest.mark.parametrize("options, events, trials", [
    ({"epochs": 8, "patience": 2, "lr": 0.05}, range(1, 40), 3),  # early-stops: both endings
    # the rate is a function of the epoch, the average is saved in last.pt, and the perturbation
    # draws are seeded by (seed, epoch, batch)
    ({"epochs": 5, "lr": 0.01, "lr_schedule": "cosine", "lr_min": 0.001, "polyak": 0.9,
      "perturb": 0.2}, range(2, 25), 2),
], ids=["plain", "schedule-polyak-perturb"])
def test_interrupted_at_random_points_in_process_and_resumed_equals_uninterrupted(
        tmp_path, monkeypatch, options, events, trials):
    """The crash drill without process starts: stop the run at a random epoch start or file
    write (leaving a half temp file), continue as a user would, compare every file."""
    d = drill()
    cfg = quick_config(**options)
    vaekit.train(cfg, out=tmp_path / "whole", quiet=True)
    for trial, n in enumerate(random.Random().sample(events, trials)):
        out = tmp_path / f"t{trial}"
        with monkeypatch.context() as m:
            stop_at_event(m, n)
            with contextlib.suppress(Killed):
                vaekit.train(cfg, out=out, quiet=True)
        vaekit.train(cfg, out=out, resume=(out / "config.yaml").exists(), quiet=True)
        assert d.differences(tmp_path / "whole", out) == [], f"stopped at event {n}"


def test_load_refuses_another_runs_checkpoint(tmp_path):
    vaekit.train(quick_config(epochs=1), out=tmp_path / "a", quiet=True)
    vaekit.train(quick_config(epochs=1, latent_dim=3), out=tmp_path / "b", quiet=True)
    shutil.copy(tmp_path / "b" / "best.pt", tmp_path / "a" / "best.pt")
    with pytest.raises(VaekitError, match="another model"):
        vaekit.load(tmp_path / "a")
    assert torch.is_tensor(load_torch(tmp_path / "b" / "best.pt")["model"]["shift"])


def test_sigterm_ends_training_in_one_line_leaves_no_temp_file_and_the_run_resumes(tmp_path,
                                                                                   tiny_images):
    """A scheduler's stop (SIGTERM) ends `vaekit train` as Ctrl-C does: one line, exit 143, the
    temp file of a checkpoint being written removed; `--resume` goes on. (It killed the process
    on the spot: exit -15, no message, a `.last.pt.*` temp file left when it hit a write.)"""
    out = tmp_path / "run"
    proc = vaekit_process("train", "--data", tiny_images, "--epochs", "100000", "--out", out, *FAST)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or len(
            (out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, (_, err) = proc.wait(timeout=60), proc.communicate()
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning")]
    assert code == 143 and lines == ["vaekit train: terminated (SIGTERM)"], err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files
    done = len(vaekit.load(out).metrics)
    proc = vaekit_process("train", "--resume", out, "--epochs", str(done + 2), "--quiet")
    code, (_, err) = proc.wait(timeout=120), proc.communicate()
    assert code == 0, err
    assert len(vaekit.load(out).metrics) == done + 2


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # a file object the interrupt left open
def test_an_interrupt_at_any_point_of_a_write_leaves_the_old_or_new_file_and_no_temp_file(
        tmp_path):
    """atomic_write interrupted at each of its bytecode boundaries in turn, then the cleanup every
    command runs on the way out: the file is whole (old or new content) and no temp file is left.
    (An interrupt between mkstemp's creating the file and the `try` that removes it, or between
    the `finally`'s exists() and unlink(), left a `.last.pt.*` file: CI's SIGTERM test hit it.)"""
    path, old, new = tmp_path / "last.pt", b"old" * 1000, b"new" * 1000
    path.write_bytes(old)

    def check(step):
        names = sorted(p.name for p in tmp_path.iterdir())
        whole = path.read_bytes() in (old, new)
        path.write_bytes(old)
        return None if names == ["last.pt"] and whole else (names, whole)

    assert interrupt_everywhere(lambda: atomic_write(path, new), check) > 50
    umask = os.umask(0)
    os.umask(umask)
    atomic_write(tmp_path / "new.txt", "x")  # a new file gets the usual mode (0644 under 022)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask


def test_a_run_trained_on_relative_paths_is_evaluated_and_resumed_from_another_directory(
        capsys, tmp_path, monkeypatch):
    """--data, --test-data and --data-dir given relative to the training directory are saved
    absolute: `vaekit eval RUN` and `--resume` from elsewhere read the same files (they were read
    against the new directory: a run trained with `--data-dir ../shared/data/mnist` could not be
    evaluated from any other)."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    rng = np.random.default_rng(0)
    np.save(work / "x.npy", rng.normal(size=(300, 4)).astype(np.float32))
    np.save(work / "t.npy", rng.normal(size=(50, 4)).astype(np.float32))
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, "train", "--data", "x.npy", "--test-data", "t.npy", "--data-dir",
                           "cache", "--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--quiet",
                           "--out", "../run")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"] == str(work / "x.npy") and saved["test_data"] == str(work / "t.npy")
    assert saved["data_dir"] == str(work / "cache")
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, "eval", "../run", "--json")
    assert code == 0, err
    assert json.loads(out)["elbo"] == pytest.approx(vaekit.load(tmp_path / "run").summary["test"]["elbo"])
    code, _, err = run_cli(capsys, "train", "--resume", "../run", "--epochs", "3", "--quiet")
    assert code == 0, err
