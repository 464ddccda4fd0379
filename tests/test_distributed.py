"""Data-parallel training (torch.distributed, gloo on CPU): the sharding of each epoch, and two
processes against one on the same global batches. Ranks are spawned with torch.multiprocessing
and run the real CLI (`vaekit.cli.main`), as torchrun would start them."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import vaekit
from vaekit.batches import epoch_order, local_batches
from vaekit.cli import main
from vaekit.distributed import Group, derive_seed, shard

TIMEOUT_S = 300  # the collectives' timeout in these ranks: a hang would end only after it
TINY = ["--data", "digits", "--model", "ae", "--hidden", "32", "--latent-dim", "4", "--epochs",
        "3", "--batch-size", "100", "--patience", "0", "--threads", "1", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, argv: list[str], fail_rank: int | None,
              switch_s: float | None = None) -> None:
    """One rank, as torchrun starts it: the group in the environment, then `vaekit ...`.
    switch_s: the interpreter's GIL switch interval (see `test_ranks_exit_cleanly`)."""
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), VAEKIT_DIST_TIMEOUT=str(TIMEOUT_S))
    torch.set_num_threads(1)
    if rank == fail_rank:  # this rank crashes in its second epoch (after one checkpoint)
        import importlib

        module = importlib.import_module("vaekit.train")
        real, calls = module.train_epoch, {"n": 0}

        def crash(*args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("rank crashed on purpose")
            return real(*args)

        module.train_epoch = crash
    sys.exit(main(argv))


def spawn(argv: list[str], world: int = 2, fail_rank: int | None = None,
          switch_s: float | None = None) -> None:
    mp.spawn(rank_main, args=(world, free_port(), [str(a) for a in argv], fail_rank, switch_s),
             nprocs=world, join=True)


@pytest.mark.parametrize("n, batch, world", [(1437, 100, 2), (1437, 100, 3), (10, 4, 3), (7, 7, 2)])
def test_each_example_once_per_epoch_across_ranks_and_workers(n, batch, world):
    """The oracle: the permutation cut into global batches of `batch`; every rank's part of
    batch j, in rank order, is batch j (so the union is each example once), with and without
    workers splitting the batches (j mod K)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    expected = [order.tolist()[i:i + batch] for i in range(0, n, batch)]
    for workers in (1, 2):
        seen: dict[int, list] = {}
        for rank in range(world):
            for w in range(workers):
                for j, idx, total in local_batches(order, batch, Group(rank, world), w, workers):
                    assert total == len(expected[j]) and j % workers == w
                    seen.setdefault(j, []).append((rank, idx.tolist()))
        assert sorted(seen) == list(range(len(expected)))
        for j, parts in seen.items():
            parts.sort()
            assert [i for _, part in parts for i in part] == expected[j]
            sizes = [len(p) for _, p in parts]
            assert max(sizes) - min(sizes) <= 1


def test_a_single_process_draws_its_order_where_it_always_did():
    """One process: torch.randperm from the global RNG, as the loop before DDP drew it (its
    runs and their exact resume are unchanged)."""
    torch.manual_seed(5)
    expected = torch.randperm(50)
    torch.manual_seed(5)
    assert torch.equal(epoch_order(50, 0, 3), expected)


def test_shard_and_seeds():
    assert [shard(10, Group(r, 3)) for r in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert len({derive_seed(0, e, r) for e in range(5) for r in range(4)}) == 20


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_give_the_metrics_of_one(tmp_path):
    """The autoencoder's loss has no draws of z, so two ranks on their parts of each global batch
    of 3 (2 and 1 examples) take the steps one process takes on the whole batch: the same
    metrics up to float32 rounding of the sums in another order (relative 1e-4 after 2 epochs,
    958 Adam steps; averaging the ranks' mean losses as equals, 1/2 each instead of 2/3 and 1/3,
    moves them by more)."""
    one = vaekit.train(vaekit.Config.from_flat({"data": "digits", "model": "ae", "hidden": [32],
                                                "latent_dim": 4, "epochs": 2, "batch_size": 3,
                                                "patience": 0, "threads": 1}),
                       out=tmp_path / "one", quiet=True)
    spawn(["train", *TINY, "--epochs", "2", "--batch-size", "3", "--out", tmp_path / "two"])
    a, b = metrics(one.dir), metrics(tmp_path / "two")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_reconstruction", "val_reconstruction"):
            assert math.isclose(ra[key], rb[key], rel_tol=1e-4), (key, ra[key], rb[key])
    sa = json.loads((one.dir / "summary.json").read_text())
    sb = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert math.isclose(sa["test"]["reconstruction"], sb["test"]["reconstruction"], rel_tol=1e-4)
    # the same run folder, in form: the same files, config and checkpoints' keys
    assert sorted(p.name for p in one.dir.iterdir()) == sorted(
        p.name for p in (tmp_path / "two").iterdir())
    assert (one.dir / "config.yaml").read_text() == (tmp_path / "two" / "config.yaml").read_text()
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["data"]["processes"] == 2


def test_ranks_exit_cleanly(tmp_path):
    """A run's last collective is an object broadcast (tensors made in Python); the gloo worker
    that ran it needs the GIL to let them go. torch keeps the group a DDP was built on alive
    past destroy_process_group, so with the DDP on the default group that worker was still
    alive when the interpreter exited, and the rank aborted (SIGABRT, "terminate called
    without an active exception") in about 1 run of `vaekit train` in 20 on 2 busy cores.
    Keeping the GIL with the main thread until it blocks (a 1,000 s switch interval) made it
    1 run in 2; with the DDP on a group of its own, 0 in 100 (busy cores) and 0 in 6 (GIL)."""
    for i in range(3):
        spawn(["train", *TINY, "--epochs", "1", "--out", tmp_path / str(i)], switch_s=1000.0)
        assert (tmp_path / str(i) / "summary.json").exists()


@pytest.mark.slow
def test_resume_with_another_number_of_processes(tmp_path, capsys):
    """Two ranks train 2 epochs; one process continues to 3: the same global batches, so the
    autoencoder's metrics match an uninterrupted single-process run (to float rounding)."""
    spawn(["train", *TINY, "--epochs", "2", "--out", tmp_path / "r"])
    code = main(["train", "--resume", str(tmp_path / "r"), "--epochs", "3", "--quiet"])
    assert code == 0
    assert "was trained with 2 process(es), it continues with 1" in capsys.readouterr().err
    whole = tmp_path / "whole"
    assert main(["train", *TINY, "--out", str(whole)]) == 0
    for ra, rb in zip(metrics(whole), metrics(tmp_path / "r"), strict=True):
        assert math.isclose(ra["val_reconstruction"], rb["val_reconstruction"], rel_tol=1e-4)


def test_a_crashing_rank_ends_every_rank_without_a_hang(tmp_path):
    """Rank 1 dies in epoch 2: the launcher ends rank 0 (blocked in the gradient all-reduce)
    long before the collective timeout (TIMEOUT_S; the whole test takes seconds on a quiet
    machine, under a minute on a busy one); the folder keeps epoch 1's complete checkpoint."""
    tick = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match="rank crashed on purpose"):
        spawn(["train", *TINY, "--out", tmp_path / "r"], fail_rank=1)
    assert time.monotonic() - tick < TIMEOUT_S * 0.8
    assert len(metrics(tmp_path / "r")) == 1 and not (tmp_path / "r" / "summary.json").exists()
    assert vaekit.load(tmp_path / "r", "last").model is not None


def test_an_error_on_one_rank_is_one_line_from_rank_0(tmp_path, capfd):
    """Bad input seen by one rank only (its --data is missing): every rank stops, exit 2, and
    the one line comes from rank 0, naming the rank."""
    with pytest.raises(mp.ProcessExitedException) as e:
        spawn_split(tmp_path)
    assert e.value.exit_code == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "rank 1" in lines[0] and "not found" in lines[0], err
    assert not (tmp_path / "r" / "last.pt").exists()


def split_rank_main(rank: int, world: int, port: int, out: str) -> None:
    data = "digits" if rank == 0 else out + "-missing.npy"
    rank_main(rank, world, port, ["train", *TINY, "--data", data, "--out", out], None)


def spawn_split(tmp_path: Path) -> None:
    mp.spawn(split_rank_main, args=(2, free_port(), str(tmp_path / "r")), nprocs=2, join=True)


@pytest.mark.slow
def test_nproc_launches_torchrun_and_writes_the_run_folder_of_one_process(tmp_path):
    """`vaekit train --nproc 2` (torchrun's launcher, as a user runs it): exit 0, the files of a
    single-process run; a user error is one line on stderr, exit 2, no folder."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(Path(vaekit.__file__).parents[1]))
    done = subprocess.run([sys.executable, "-m", "vaekit", "train", "--nproc", "2", *TINY, "--out",
                           str(tmp_path / "r")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {"config.yaml", "manifest.json", "metrics.jsonl", "best.pt", "last.pt",
            "summary.json"} <= {p.name for p in (tmp_path / "r").iterdir()}
    bad = subprocess.run([sys.executable, "-m", "vaekit", "train", "--nproc", "2", "--data",
                          str(tmp_path / "missing.npy"), "--out", str(tmp_path / "b")], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "not found" in bad.stderr and not (tmp_path / "b").exists()


# Per-example KL of 4 latent dimensions for a global batch of 3; rank 0 holds rows 0-1, rank 1 row 2.
# With a floor of 1 nat, dimension 0's global mean (1.2) is above the floor but rank 0's (0.5) is
# below it, and dimension 1 the other way round: floors decided per rank get both wrong.
FREE_BITS_KL = [[0.5, 1.4, 3.0, 0.1], [0.5, 1.4, 2.0, 0.2], [2.6, 0.0, 1.0, 0.3]]
FREE_BITS_PARTS = [slice(0, 2), slice(2, 3)]


def free_bits_rank(rank: int, world: int, port: int, out: str) -> None:
    """One rank: its part's free-bits penalty with the global floor, weighted as the training loop
    weights a rank's loss (share * world), gradients averaged over ranks as DDP averages them."""
    import torch.distributed as dist

    from vaekit.distributed import GlobalMean
    from vaekit.objectives import Terms, kl_penalty

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        kl = torch.tensor(FREE_BITS_KL, dtype=torch.float64)[FREE_BITS_PARTS[rank]].requires_grad_()
        share = len(kl) / 3
        terms = Terms(reconstruction=torch.zeros(len(kl)), kl=kl.sum(-1), kl_per_dim=kl,
                      posterior=None)
        penalty = kl_penalty(terms, 1.0, GlobalMean(Group(rank, world), total=3))
        (penalty * share * world).backward()
        grad = kl.grad / world  # DDP's average of the ranks' gradients
        loss = (penalty * share).detach().reshape(1)  # what the loop sums over ranks
        dist.all_reduce(loss)
        grads = [torch.zeros(len(p), 4, dtype=torch.float64) for p in
                 (range(3)[s] for s in FREE_BITS_PARTS)]
        dist.all_gather_object(grads, grad)
        if rank == 0:
            torch.save({"loss": loss, "grad": torch.cat(grads)}, out)
    finally:
        dist.destroy_process_group()


def test_free_bits_under_two_processes_are_the_loss_and_gradient_of_one(tmp_path):
    """--free-bits floors each dimension's *global* batch-mean KL: the ranks' weighted losses and
    averaged gradients equal max(1, mean KL_u) summed and its gradient on the whole batch."""
    from vaekit.objectives import Terms, kl_penalty

    mp.spawn(free_bits_rank, args=(2, free_port(), str(tmp_path / "two.pt")), nprocs=2, join=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    kl = torch.tensor(FREE_BITS_KL, dtype=torch.float64).requires_grad_()
    one = kl_penalty(Terms(torch.zeros(3), kl.sum(-1), kl, None), 1.0)
    one.backward()
    assert torch.allclose(two["loss"], one.detach().reshape(1), atol=1e-12)
    assert torch.allclose(two["grad"], kl.grad, atol=1e-12)
    # the oracle itself: dimensions 0 and 2 above the floor (gradient 1/3 per row), 1 and 3 below
    assert torch.allclose(kl.grad, torch.tensor([1 / 3, 0, 1 / 3, 0]).expand(3, 4).double())


def test_trim_is_refused_under_data_parallelism_before_any_file(tmp_path, capfd):
    """--trim ranks a whole batch, which the ranks split: one line, exit 2, no run folder."""
    with pytest.raises(mp.ProcessExitedException) as e:
        spawn(["train", *TINY, "--trim", "0.1", "--out", tmp_path / "r"])
    assert e.value.exit_code == 2
    lines = [line for line in capfd.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and "--trim" in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_a_two_process_run_with_free_bits_trains(tmp_path):
    """The floor's collective inside DistributedDataParallel's forward: every rank takes part at
    every step (digits' 1455 training rows in batches of 2: the last batch leaves rank 1 empty)."""
    argv = [a if a != "ae" else "vae" for a in TINY]
    spawn(["train", *argv, "--epochs", "1", "--batch-size", "2", "--free-bits", "0.2",
           "--out", tmp_path / "fb"])
    row = metrics(tmp_path / "fb")[0]
    assert math.isfinite(row["train_loss"]) and row["train_kl"] > 0
    # the loss floors each dimension at 0.2 nats: at least 4 x 0.2 above -reconstruction
    assert row["train_loss"] >= -row["train_reconstruction"] + 4 * 0.2 - 1e-6
