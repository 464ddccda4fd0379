"""Streamed data (--stream): the one-pass statistics against numpy, the same splits and model-space
rows as in memory, workers, Parquet and image folders, bad files, and eval/encode chunk by chunk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import quick_config

from vaekit import Config
from vaekit.batches import InMemory
from vaekit.cli import main
from vaekit.data import load_dataset, standardization
from vaekit.streams import FileRows, Moments, NpyReader


@pytest.fixture
def table(tmp_path):
    """2100 rows, 6 columns far from 0 (mean 1e4, spread ~1): a naive sum of squares would lose
    the spread; labels beside it."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.normal(size=(2100, 6)) * [1, 2, 3, 0.5, 1e-3, 4]).astype(np.float32)
    path = tmp_path / "t.npy"
    np.save(path, x)
    return path, x


def test_moments_equal_numpy_in_float64(table):
    _, x = table
    m = Moments()
    for a, b in ((0, 1), (1, 700), (700, 701), (701, 2100)):  # ragged chunks, one of one row
        m.add(x[a:b])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.mean, x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, x64.std(0), rtol=1e-9)
    assert (m.lo == x64.min(0)).all() and (m.hi == x64.max(0)).all() and m.n == len(x) and m.bad == 0
    bad = x[:5].copy()
    bad[0, 0], bad[1, 2] = np.nan, np.inf
    m.add(bad)
    assert m.bad == 2


def test_streamed_splits_and_standardization_equal_in_memory(table):
    path, _ = table
    mem, _ = load_dataset(quick_config(data=str(path), stream="off"))
    st, cfg = load_dataset(quick_config(data=str(path), stream="on"))
    assert cfg.data.standardize == "on" and st.info["streamed"]
    np.testing.assert_allclose(st.shift.double(), mem.shift.double(), rtol=1e-6)
    np.testing.assert_allclose(st.scale.double(), mem.scale.double(), rtol=1e-6)
    # the oracle for the statistics: numpy over the training rows, in float64
    shift, scale = standardization(mem.x_train.numpy() * mem.scale.numpy() + mem.shift.numpy())
    np.testing.assert_allclose(st.scale.double(), scale, rtol=1e-5)
    for name in ("train", "val", "test"):
        a, b = getattr(mem, f"x_{name}"), getattr(st, f"x_{name}")
        assert isinstance(b, FileRows) and len(a) == len(b)
        torch.testing.assert_close(b[:], a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.cat([b[:333], b[333:]]), b[:])


def test_memmap_is_mapped_not_read(table):
    path, x = table
    reader = NpyReader(str(path))
    assert isinstance(reader.mapped(), np.memmap) and len(reader) == len(x)
    np.testing.assert_array_equal(reader.read(np.array([3, 5, 2000])), x[[3, 5, 2000]])


def test_workers_yield_the_batches_of_one_process(table):
    path, _ = table
    ds, _ = load_dataset(quick_config(data=str(path), stream="on"))
    rows: FileRows = ds.x_train
    order = torch.randperm(len(rows))
    alone = list(rows.epoch(order, 128))
    rows.workers = 2
    with_workers = list(rows.epoch(order, 128))
    in_memory = list(InMemory(rows[:]).epoch(order, 128))
    assert len(alone) == len(with_workers) == len(in_memory) == -(-len(rows) // 128)
    for (a, na), (b, nb), (c, nc) in zip(alone, with_workers, in_memory, strict=True):
        assert na == nb == nc
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_streamed_training_matches_in_memory(tmp_path, table):
    path, _ = table
    for mode in ("on", "off"):
        assert main(["train", "--data", str(path), "--stream", mode, "--out", str(tmp_path / mode),
                     "--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--batch-size", "100",
                     "--threads", "1", "--quiet"]) == 0
    rows = [[json.loads(line) for line in (tmp_path / m / "metrics.jsonl").read_text().splitlines()]
            for m in ("on", "off")]
    for a, b in zip(*rows, strict=True):
        for key in ("train_loss", "val_elbo"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_fixed_noise_is_the_same_in_any_slicing(tmp_path):
    x = np.random.default_rng(0).random((2500, 4)).astype(np.float32)
    np.save(tmp_path / "u.npy", x)
    rows = FileRows(NpyReader(str(tmp_path / "u.npy")), np.arange(2500), np.zeros(4, np.float32),
                    np.ones(4, np.float32), "binarize", 5)
    whole = rows[:]
    assert set(whole.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(torch.cat([rows[:1200], rows[1200:1201], rows[1201:]]), whole)
    assert abs(float(whole.mean()) - float(x.mean())) < 0.02  # P(1) = the pixel value


def test_parquet_streams_by_row_groups_with_a_label(tmp_path, table):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path, x = table
    cols = {f"c{i}": x[:, i] for i in range(x.shape[1])} | {"kind": np.arange(len(x)) % 3}
    pq.write_table(pa.table(cols), tmp_path / "t.parquet", row_group_size=256)
    st, _ = load_dataset(quick_config(data=str(tmp_path / "t.parquet"), stream="on",
                                      label_column="kind"))
    mem, _ = load_dataset(quick_config(data=str(path), stream="off"))
    torch.testing.assert_close(st.x_val[:], mem.x_val, rtol=1e-5, atol=1e-5)
    rows = st.x_test.rows
    assert (st.y_test == rows % 3).all()


def test_bad_streamed_files_are_one_line(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), tmp_path / "s.parquet")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]] * 20))
    full = tmp_path / "cut.npy"
    np.save(full, np.zeros((100, 8), np.float32))
    full.write_bytes(full.read_bytes()[:-100])
    nan = np.zeros((50, 3), np.float32)
    nan[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "vec.npy", np.arange(40, dtype=np.float32))  # one value per row: no shape
    for name, words in (("s.parquet", ["'name'", "not numeric"]), ("str.npy", ["<U1", "numeric"]),
                        ("vec.npy", ["shape (40,)", "(n, d)"]),
                        ("cut.npy", ["cut.npy", "truncated"]), ("nan.npy", ["NaN"])):
        code = main(["train", "--data", str(tmp_path / name), "--stream", "on", "--out",
                     str(tmp_path / f"r-{name}"), "--epochs", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
        assert not (tmp_path / f"r-{name}" / "last.pt").exists()


def test_eval_and_encode_stream_a_file_in_input_order(tmp_path, table, capsys):
    path, x = table
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--epochs", "1",
                 "--hidden", "16", "--latent-dim", "2", "--threads", "1", "--quiet"]) == 0
    out = {}
    for mode in ("on", "off"):
        assert main(["encode", str(tmp_path / "r"), "--data", str(path), "--stream", mode,
                     "--out", str(tmp_path / f"z-{mode}.npy")]) == 0
        assert main(["eval", str(tmp_path / "r"), "--data", str(path), "--stream", mode,
                     "--json", "--per-example", str(tmp_path / f"e-{mode}.npy")]) == 0
        out[mode] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    z_on, z_off = np.load(tmp_path / "z-on.npy"), np.load(tmp_path / "z-off.npy")
    assert z_on.shape == (len(x), 2)
    np.testing.assert_allclose(z_on, z_off, rtol=1e-5, atol=1e-5)
    e_on, e_off = np.load(tmp_path / "e-on.npy"), np.load(tmp_path / "e-off.npy")
    np.testing.assert_array_equal(e_on[:, 0], np.arange(len(x)))
    np.testing.assert_allclose(e_on, e_off, rtol=1e-5, atol=1e-4)
    assert out["on"]["n"] == len(x) and out["on"]["elbo"] == pytest.approx(out["off"]["elbo"],
                                                                          rel=1e-5)


def test_config_stream_is_a_choice():
    with pytest.raises(Exception, match="--stream"):
        Config.from_flat({"stream": "sometimes"})


def test_image_folder_decoded_per_batch_equals_the_whole_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(30):
        folder = tmp_path / "imgs" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    flat = {"data": str(tmp_path / "imgs"), "likelihood": "bernoulli"}
    st, _ = load_dataset(quick_config(**flat, stream="on"))
    mem, _ = load_dataset(quick_config(**flat, stream="off"))
    assert st.shape == mem.shape == (1, 6, 6)
    for name in ("train", "val", "test"):
        torch.testing.assert_close(getattr(st, f"x_{name}")[:], getattr(mem, f"x_{name}"))
        assert (getattr(st, f"y_{name}") == getattr(mem, f"y_{name}")).all()


def test_commands_after_a_streamed_run_read_its_own_splits(tmp_path, table, capsys):
    """eval reads the run's own streamed test split chunk by chunk; a command that needs a
    tensor (score) gets the split read whole; both see the rows of the manifest's n_test."""
    path, _ = table
    assert main(["train", "--data", str(path), "--stream", "on", "--out", str(tmp_path / "r"),
                 "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--threads", "1",
                 "--quiet"]) == 0
    capsys.readouterr()
    n_test = json.loads((tmp_path / "r" / "manifest.json").read_text())["data"]["n_test"]
    assert main(["eval", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == n_test
    assert main(["score", str(tmp_path / "r"), "--out", str(tmp_path / "s.csv")]) == 0
    assert len((tmp_path / "s.csv").read_text().splitlines()) == n_test + 1


def test_a_split_is_copied_to_a_gpu_only_when_it_takes_a_small_share_of_its_free_memory():
    from vaekit.batches import DEVICE_DATA_SHARE, fits_on_device

    assert fits_on_device(100, int(100 / DEVICE_DATA_SHARE))
    assert not fits_on_device(101, int(100 / DEVICE_DATA_SHARE))
    source = InMemory(torch.rand(10, 3))
    assert source.to_device(torch.device("cpu")) is source  # on the CPU: sliced where it is
