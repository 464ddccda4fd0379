"""`vaekit score --stream`: a memory-mapped .npy is scored slice by slice, in input order, with the
same scores as the whole file read into memory; anomaly.score never reads or converts x whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli

import vaekit
from vaekit import anomaly, streams


class CountingRows:
    """A float64 array read only through len() and contiguous slices, each at most `limit` rows
    (a stand-in for a memory-mapped file): records the rows of every read."""

    def __init__(self, a: np.ndarray, limit: int):
        self.a, self.limit, self.reads = a, limit, []

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, key: slice) -> torch.Tensor:
        assert isinstance(key, slice) and key.step in (None, 1), key
        part = self.a[key]
        assert len(part) <= self.limit, f"read {len(part)} rows at once"
        self.reads.append(len(part))
        return torch.from_numpy(part)  # float64, as a float64 memmap's rows


def table(n: int, seed: int) -> np.ndarray:
    """(n, 8) float64 rows near a 2-D plane."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ np.random.default_rng(9).normal(size=(2, 8)) + 0.1 * rng.normal(
        size=(n, 8)) + 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A gaussian VAE of `table` rows, and a background VAE of perturbed rows (another scaling)."""
    folder = tmp_path_factory.mktemp("stream")
    np.save(folder / "train.npy", table(500, 1).astype(np.float32))
    np.save(folder / "bg.npy", vaekit.ood.perturb(table(500, 2), 0.3, seed=0, low=-5, high=12))
    np.save(folder / "test.npy", table(2500, 3))  # float64 on disk
    torch.manual_seed(0)
    run = vaekit.train(quick_config(data=str(folder / "train.npy"), hidden=[16], latent_dim=2,
                                    epochs=3), out=folder / "run", quiet=True, hooks=[])
    bg = vaekit.train(quick_config(data=str(folder / "bg.npy"), hidden=[16], latent_dim=2,
                                   epochs=2), out=folder / "bg", quiet=True, hooks=[])
    return run, bg, folder


def scores_of(text: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split(",") for line in text.splitlines()[1:]]
    return np.array([int(r[0]) for r in rows]), np.array([float(r[2]) for r in rows])


def test_streamed_npy_gives_the_in_memory_scores_in_input_order(runs, capsys, tmp_path,
                                                                monkeypatch):
    run, _, folder = runs
    reads = []
    read = streams.NpyReader.read

    def counted(self, rows):
        reads.append(len(rows))
        return read(self, rows)

    monkeypatch.setattr(streams.NpyReader, "read", counted)
    argv = ["score", run.dir, "--data", folder / "test.npy", "--method", "iw-nll", "--samples",
            "100", "--out"]
    code, _, err = run_cli(capsys, *argv, tmp_path / "streamed.csv", "--stream", "on")
    assert code == 0, err
    assert reads and max(reads) <= 1000 < 2500  # chunk by chunk, never the whole file
    code, _, err = run_cli(capsys, *argv, tmp_path / "memory.csv", "--stream", "off")
    assert code == 0, err
    index, streamed = scores_of((tmp_path / "streamed.csv").read_text())
    _, memory = scores_of((tmp_path / "memory.csv").read_text())
    np.testing.assert_array_equal(index, np.arange(2500))
    np.testing.assert_allclose(streamed, memory, rtol=1e-6)
    # input order: row i's score is that of row i alone (each example's draws are its own)
    raw = np.load(folder / "test.npy")
    rows = [7, 1999, 2499, 0]
    alone = anomaly.score(run.model, run.model.prepare(raw[rows]), "iw-nll", samples=100)
    np.testing.assert_allclose(streamed[rows], alone.double().numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["kl", "elbo", "iw-nll", "likelihood-ratio"])
def test_score_reads_x_in_slices_only(runs, method):
    """A float64 source is read in batch-sized slices and converted one slice at a time; the
    scores equal those of the same rows as one float32 tensor."""
    run, bg, folder = runs
    x = run.model.prepare(np.load(folder / "test.npy")[:300])  # (300, 8) model space, float32
    rows = CountingRows(x.double().numpy(), limit=64)
    ref = anomaly.Reference(background=bg.model)
    got = anomaly.score(run.model, rows, method, samples=4, batch_size=64, ref=ref)
    want = anomaly.score(run.model, x, method, samples=4, ref=ref)
    torch.testing.assert_close(got, want)
    passes = 2 if method == "likelihood-ratio" else 1  # the model's and the background's
    assert sum(rows.reads) == passes * 300 and max(rows.reads) == 64


def test_complexity_reads_x_in_slices_only(tmp_path):
    """The PNG code lengths too are taken slice by slice, of the same images."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "noise.npy", rng.integers(0, 256, (300, 8, 8), dtype=np.uint8))
    run = vaekit.train(quick_config(data=str(tmp_path / "noise.npy"), likelihood="discretized-logistic",
                                    mixtures=1, hidden=[16], latent_dim=2, epochs=1),
                       out=tmp_path / "run", quiet=True, hooks=[])
    images = np.concatenate([rng.integers(0, 256, (50, 8, 8)), np.full((50, 8, 8), 77)])
    x = run.model.prepare(images)  # (100, 64) model space
    rows = CountingRows(x.double().numpy(), limit=32)
    got = anomaly.score(run.model, rows, "complexity", samples=4, batch_size=32)
    nll = anomaly.score(run.model, x, "iw-nll", samples=4).double()
    torch.testing.assert_close(got, nll - vaekit.ood.png_nats(images.astype(np.uint8)[:, None]))
    assert max(rows.reads) == 32 and sum(rows.reads) == 2 * 100  # the nll's pass and the png's


def test_batches_hold_a_bounded_number_of_values(runs, monkeypatch):
    """Whatever batch_size asks, a batch holds at most MAX_VALUES values (rows x features), so a
    file of wide examples is read a few MiB at a time; the scores do not change."""
    run, _, folder = runs
    x = run.model.prepare(np.load(folder / "test.npy")[:100])  # (100, 8)
    want = anomaly.score(run.model, x, "elbo", samples=3)
    monkeypatch.setattr(anomaly, "MAX_VALUES", 8 * 10)  # 10 rows of 8 features
    rows = CountingRows(x.double().numpy(), limit=10)
    torch.testing.assert_close(anomaly.score(run.model, rows, "elbo", samples=3), want)
    assert sum(rows.reads) == 100
