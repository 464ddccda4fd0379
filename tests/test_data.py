"""Data readers and splits: built-ins, user files of every supported kind, verified download."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from PIL import Image

from vaekit import VaekitError, sources
from vaekit.data import load_dataset
from vaekit.sources import download, read_idx


def test_digits_splits_are_disjoint_seeded_and_scaled():
    ds, cfg = load_dataset(quick_config())
    assert ds.shape == (1, 8, 8) and ds.image and cfg.model.likelihood == "bernoulli"
    n = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert n == 1797 and len(ds.x_test) == 180
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0
    again, _ = load_dataset(quick_config())
    assert torch.equal(ds.x_test, again.x_test)
    other, _ = load_dataset(quick_config(seed=5))
    assert not torch.equal(ds.x_test, other.x_test)


def test_csv_with_header_and_label_column(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    lines = ["a,label,b,c"] + [f"{r[0]},{'yes' if i % 2 else 'no'},{r[1]},{r[2]}"
                               for i, r in enumerate(x)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    ds, cfg = load_dataset(quick_config(data=str(path), label_column="label"))
    assert ds.shape == (3,) and not ds.image and cfg.model.likelihood == "gaussian"
    assert set(ds.y_train) <= {"yes", "no"}
    by_index, _ = load_dataset(quick_config(data=str(path), label_column="1"))
    assert torch.equal(by_index.x_test, ds.x_test)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(15):
            arr = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.png")
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "imgs"), image_size=8))
    assert ds.shape == (3, 8, 8) and ds.image
    labels = set(ds.y_train) | set(ds.y_test) | set(ds.y_val)
    assert labels == {"cat", "dog"}
    assert 0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1


def test_mixed_image_sizes_need_image_size(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "imgs" / "b.png")
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "imgs", "--quiet")
    assert code == 2 and "--image-size" in err


def test_npy_channels_last_images_and_npz_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", x)
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "a.npy")))
    assert ds.shape == (3, 6, 6)
    np.savez(tmp_path / "b.npz", X=x[:, :, :, 0], y=np.arange(40) % 3)
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "b.npz")))
    assert ds.shape == (1, 6, 6) and set(ds.y_train) <= {0, 1, 2}


def test_test_data_file_is_used_as_the_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tr.npy", rng.random((60, 4), dtype=np.float32))
    np.save(tmp_path / "te.npy", rng.random((13, 4), dtype=np.float32))
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "tr.npy"),
                                      test_data=str(tmp_path / "te.npy")))
    assert len(ds.x_test) == 13 and len(ds.x_train) + len(ds.x_val) == 60


def test_real_mnist_from_the_shared_folder(shared_data):
    ds, cfg = load_dataset(quick_config(data="mnist", data_dir=str(shared_data / "mnist")))
    assert len(ds.x_test) == 10_000 and len(ds.x_train) + len(ds.x_val) == 60_000
    assert ds.shape == (1, 28, 28) and cfg.model.likelihood == "bernoulli"
    assert sorted(set(ds.y_test.tolist())) == list(range(10))


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0")
    with pytest.raises(VaekitError, match="truncated"):
        read_idx(path)


def test_download_verifies_checksum_and_leaves_no_partial_file(tmp_path, http_server):
    root, url = http_server
    (root / "f.bin").write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    download(url + "f.bin", tmp_path / "out" / "f.bin", good)
    assert (tmp_path / "out" / "f.bin").read_bytes() == b"hello"
    with pytest.raises(VaekitError, match="checksum mismatch"):
        download(url + "f.bin", tmp_path / "out" / "g.bin", "0" * 32)
    with pytest.raises(VaekitError, match="could not download"):
        download(url + "missing.bin", tmp_path / "out" / "h.bin", good)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.bin"]


def test_mnist_download_end_to_end(tmp_path, http_server, shared_data, monkeypatch):
    """`--data mnist` with an empty --data-dir fetches the four files from --data-url."""
    root, url = http_server
    for f in (shared_data / "mnist").iterdir():
        shutil.copy(f, root / f.name)
    # the shared train-images is a lossless rebuild (same pixels, other gzip bytes): its own md5
    table = dict(sources.IDX_DATASETS["mnist"]["md5"])
    table["train-images-idx3-ubyte.gz"] = sources.md5sum(root / "train-images-idx3-ubyte.gz")
    monkeypatch.setitem(sources.IDX_DATASETS["mnist"], "md5", table)
    cfg = quick_config(data="mnist", data_dir=str(tmp_path / "dl"), data_url=url)
    ds, _ = load_dataset(cfg)
    assert len(ds.x_test) == 10_000
    assert sorted(p.name for p in (tmp_path / "dl" / "mnist").iterdir()) == sorted(table)
