"""Colour image data: the layout rule for 4-D arrays (--layout), an .npz's own train/test split and
class names, the built-in cifar10 (official binary batches, verified download and safe unpacking,
against a local HTTP server), and RGB image folders."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import interrupt_everywhere, quick_config, run_cli
from PIL import Image

from vaekit import VaekitError, datasets
from vaekit.data import load_dataset
from vaekit.report import class_names
from vaekit.sources import IDX_FILES, as_examples, has_own_test_split, read_source, read_user

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]


# --- the layout rule ----------------------------------------------------------------------------
def channels_last_oracle(x: np.ndarray) -> np.ndarray:
    """(n, h, w, c) -> (n, c, h, w), written out element by element."""
    n, h, w, c = x.shape
    out = np.empty((n, c, h, w), x.dtype)
    for i in range(n):
        for k in range(c):
            out[i, k] = x[i, :, :, k]
    return out


@pytest.mark.parametrize("shape, layout, expected", [
    ((2, 5, 6, 3), "auto", "last"),  # last axis 3, axis 1 not: channels-last
    ((2, 5, 6, 1), "auto", "last"),
    ((2, 7, 6, 4), "auto", "last"),
    ((2, 3, 5, 6), "auto", "first"),  # axis 1 is 3, last not: channels-first
    ((2, 1, 6, 5), "auto", "first"),
    ((2, 3, 4, 3), "channels-last", "last"),  # ambiguous, said
    ((2, 3, 4, 3), "channels-first", "first"),
    ((2, 5, 6, 7), "channels-first", "first"),  # neither axis looks like channels, said
    ((2, 5, 6, 7), "channels-last", "last"),
    ((2, 5, 6, 3), "channels-first", "first"),  # the option overrides what auto would pick
])
def test_layout_rule_for_four_dimensional_arrays(shape, layout, expected):
    x = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    got, image = as_examples(x, "a.npy", layout)
    assert image
    np.testing.assert_array_equal(got, channels_last_oracle(x) if expected == "last" else x)


@pytest.mark.parametrize("shape", [(2, 3, 4, 3), (2, 1, 5, 1), (2, 4, 8, 4), (2, 5, 6, 7), (2, 2, 8, 8)])
def test_ambiguous_layout_is_one_line_asking_for_the_option(shape):
    with pytest.raises(VaekitError, match="--layout channels-first") as e:
        as_examples(np.zeros(shape, np.uint8), "a.npy")
    assert "\n" not in str(e.value) and str(shape[1:]) in str(e.value)


def test_grey_and_tabular_arrays_ignore_the_layout():
    x = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    for layout in ("auto", "channels-first", "channels-last"):
        got, image = as_examples(x, "a.npy", layout)
        assert image and got.shape == (2, 1, 5, 3)
        np.testing.assert_array_equal(got[:, 0], x)
        assert as_examples(x[:, :, 0], "a.npy", layout)[0].shape == (2, 5)


def test_layout_reaches_the_readers_through_the_cli(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (30, 3, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "amb.npy", x)
    base = ("train", "--data", tmp_path / "amb.npy", "--epochs", "1", "--hidden", "8",
            "--latent-dim", "2", "--quiet")
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "r0")
    assert code == 2 and "--layout" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r0").exists()
    code, _, err = run_cli(capsys, *base, "--layout", "channels-last", "--out", tmp_path / "run")
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["shape"] == [3, 3, 4]
    # the commands after training read files with the run's layout, or the one given
    outs = {}
    for name, extra in (("own", ()), ("last", ("--layout", "channels-last")),
                        ("first", ("--layout", "channels-first"))):
        code, _, err = run_cli(capsys, "encode", tmp_path / "run", "--data", tmp_path / "amb.npy",
                               "--out", tmp_path / f"{name}.npy", *extra)
        assert code == 0, err
        outs[name] = np.load(tmp_path / f"{name}.npy")
    np.testing.assert_array_equal(outs["own"], outs["last"])
    assert not np.allclose(outs["own"], outs["first"])  # other pixels in other places
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "amb.npy", "--layout", "sideways")
    assert code == 2 and "channels-last" in err


def test_in_memory_arrays_follow_the_configs_layout():
    from vaekit.data import dataset_from_arrays

    x = np.random.default_rng(0).integers(0, 256, (40, 3, 4, 3), dtype=np.uint8)
    with pytest.raises(VaekitError, match="--layout"):
        dataset_from_arrays(x, quick_config())
    ds, _ = dataset_from_arrays(x, quick_config(layout="channels-last"))
    assert ds.shape == (3, 3, 4)


# --- an .npz with its own split and class names --------------------------------------------------
def split_npz(path: Path, n_train: int = 40, n_test: int = 9, **extra) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 5, 6, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 3, n_train), "x_test": rng.integers(0, 256, (n_test, 5, 6, 3),
                                                                             dtype=np.uint8),
              "y_test": rng.integers(0, 3, n_test), "class_names": np.array(["cat", "dog", "emu"])}
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_with_its_own_split_is_read_with_it(tmp_path):
    a = split_npz(tmp_path / "s.npz")
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "s.npz"), test_fraction=0.5))
    assert ds.shape == (3, 5, 6) and len(ds.x_test) == 9 and len(ds.x_train) + len(ds.x_val) == 40
    expected = channels_last_oracle(a["x_test"]).reshape(9, -1) / 255.0  # in file order
    np.testing.assert_allclose(ds.x_test.numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.y_test, a["y_test"])
    assert ds.info["label_names"] == ["cat", "dog", "emu"] and ds.info["n_test"] == 9
    assert has_own_test_split(str(tmp_path / "s.npz"))


def test_npz_split_read_whole_by_the_commands_after_training(tmp_path):
    a = split_npz(tmp_path / "s.npz")
    raw = read_source(str(tmp_path / "s.npz"), quick_config().data)  # no split: train then test
    np.testing.assert_array_equal(raw.x, channels_last_oracle(np.concatenate([a["x_train"],
                                                                              a["x_test"]])))
    np.testing.assert_array_equal(raw.y, np.concatenate([a["y_train"], a["y_test"]]))
    assert raw.label_names == ["cat", "dog", "emu"]


def test_npz_without_a_split_keeps_the_test_fraction(tmp_path):
    np.savez(tmp_path / "p.npz", X=np.zeros((50, 4)), y=np.arange(50) % 2,
             class_names=np.array(["no", "yes"]))
    assert not has_own_test_split(str(tmp_path / "p.npz"))
    ds, _ = load_dataset(quick_config(data=str(tmp_path / "p.npz"), test_fraction=0.2))
    assert len(ds.x_test) == 10 and ds.info["label_names"] == ["no", "yes"]


@pytest.mark.parametrize("extra, message", [
    ({"x_test": None}, "x_train without"),
    ({"y_test": None}, "y_train without"),
    ({"class_names": np.array(["cat", "dog"])}, "integers 0..1"),
    ({"class_names": np.array([1, 2, 3])}, "1-D array of strings"),
])
def test_npz_split_and_names_problems_are_one_line(tmp_path, extra, message):
    split_npz(tmp_path / "s.npz", **extra)
    with pytest.raises(VaekitError, match=message) as e:
        load_dataset(quick_config(data=str(tmp_path / "s.npz")))
    assert "\n" not in str(e.value)


def test_own_test_split_and_test_data_together_are_refused(tmp_path):
    split_npz(tmp_path / "s.npz")
    np.save(tmp_path / "t.npy", np.zeros((5, 5, 6, 3), np.uint8))
    with pytest.raises(VaekitError, match="own test split; drop --test-data"):
        load_dataset(quick_config(data=str(tmp_path / "s.npz"), test_data=str(tmp_path / "t.npy")))
    with pytest.raises(VaekitError, match="own test split; drop --test-data"):
        load_dataset(quick_config(data="cifar10", data_dir=str(tmp_path), test_data="t.npy"))


def test_real_cifar10_npz_test_part(shared_data):
    path = shared_data / "cifar10" / "cifar10.npz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    assert has_own_test_split(str(path))
    raw = read_user(str(path), None, None, split="test")  # 30 MB of the 184 MB
    assert raw.x.shape == (10_000, 3, 32, 32) and raw.x.dtype == np.uint8 and raw.image
    assert raw.label_names == CIFAR10_NAMES and sorted(set(raw.y.tolist())) == list(range(10))


# --- built-in cifar10 ----------------------------------------------------------------------------
def batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The official record layout: one label byte, then the R, G and B planes, row by row."""
    return b"".join(bytes([int(lab)]) + img.tobytes() for img, lab in zip(images, labels, strict=True))


def fake_batches(rng, n: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: (rng.integers(0, 256, (n + k, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n + k))
            for k, name in enumerate([*TRAIN_FILES, "test_batch.bin"])}


def write_batches(folder: Path, batches) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in batches.items():
        (folder / name).write_bytes(batch_bytes(x, y))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n")


def test_cifar10_record_layout_by_hand(tmp_path):
    # one record written out: label 2, a red plane of 255, green 7, blue 0 except pixel (row 1, col 2)
    blue = bytearray(1024)
    blue[1 * 32 + 2] = 9
    record = bytes([2]) + b"\xff" * 1024 + b"\x07" * 1024 + bytes(blue)
    (tmp_path / "b.bin").write_bytes(record * 2)
    x, y = datasets.read_cifar10_batch(tmp_path / "b.bin")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [2, 2]
    assert (x[:, 0] == 255).all() and (x[:, 1] == 7).all()
    assert x[0, 2, 1, 2] == 9 and x[0, 2].sum() == 9


@pytest.mark.parametrize("where", ["cifar10", "cifar-10-batches-bin", "cifar10/cifar-10-batches-bin",
                                   "itself"])
def test_cifar10_is_read_from_data_dir(tmp_path, where):
    batches = fake_batches(np.random.default_rng(0))
    data_dir = tmp_path / "d" / "cifar10" if where == "itself" else tmp_path / "d"
    write_batches(data_dir if where == "itself" else data_dir / where, batches)
    cfg = quick_config(data="cifar10", data_dir=str(data_dir), data_url="http://127.0.0.1:9/")
    test = read_source("cifar10", cfg.data, "test")
    np.testing.assert_array_equal(test.x, batches["test_batch.bin"][0])
    np.testing.assert_array_equal(test.y, batches["test_batch.bin"][1])
    train = read_source("cifar10", cfg.data, "train")
    np.testing.assert_array_equal(train.x, np.concatenate([batches[f][0] for f in TRAIN_FILES]))
    assert train.x.flags.writeable and train.pixel_max == 255 and train.label_names == CIFAR10_NAMES
    ds, _ = load_dataset(cfg)
    assert len(ds.x_test) == 9 and len(ds.x_train) + len(ds.x_val) == 4 + 5 + 6 + 7 + 8
    assert ds.shape == (3, 32, 32) and ds.info["label_names"] == CIFAR10_NAMES


def test_cifar10_incomplete_or_damaged_files_are_one_line(tmp_path):
    batches = fake_batches(np.random.default_rng(0))
    write_batches(tmp_path / "cifar10", batches)
    (tmp_path / "cifar10" / "data_batch_3.bin").unlink()
    cfg = quick_config(data="cifar10", data_dir=str(tmp_path)).data
    with pytest.raises(VaekitError, match="missing data_batch_3.bin"):
        read_source("cifar10", cfg, "test")
    write_batches(tmp_path / "cifar10", batches)
    with open(tmp_path / "cifar10" / "test_batch.bin", "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(VaekitError, match="not a CIFAR-10 binary batch"):
        read_source("cifar10", cfg, "test")
    (tmp_path / "cifar10" / "test_batch.bin").write_bytes(b"\x0a" + bytes(3072))
    with pytest.raises(VaekitError, match="label 10 outside 0..9"):
        read_source("cifar10", cfg, "test")


def test_cifar10_default_download_is_the_official_archive(tmp_path, monkeypatch):
    asked = []

    def no_network(url, dest, md5, put_in=None):
        asked.append((url, md5))
        raise VaekitError("no network here")
    monkeypatch.setattr(datasets, "download", no_network)
    with pytest.raises(VaekitError, match="no network"):
        read_source("cifar10", quick_config(data="cifar10", data_dir=str(tmp_path / "d")).data)
    assert asked == [("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                      "c32a1d4ab5d03f1284b67883e8d87530")]
    assert not (tmp_path / "d").exists()


def make_archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> str:
    """A .tar.gz of the given members (name -> bytes; links: name -> target); returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return hashlib.md5(path.read_bytes()).hexdigest()


def official_members(batches) -> dict[str, bytes]:
    members = {f"cifar-10-batches-bin/{name}": batch_bytes(*xy) for name, xy in batches.items()}
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n").encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return members


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_cifar10_download_end_to_end(tmp_path, http_server, monkeypatch, capsys):
    root, url = http_server
    batches = fake_batches(np.random.default_rng(3), n=3)
    md5 = make_archive(root / "cifar-10-binary.tar.gz", official_members(batches))
    monkeypatch.setitem(datasets.CIFAR10, "md5", md5)
    code, _, err = run_cli(capsys, "train", "--data", "cifar10", "--data-dir", tmp_path / "dl",
                           "--data-url", url, "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                           "--val-fraction", "0.2", "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    folder = tmp_path / "dl" / "cifar10" / "cifar-10-batches-bin"
    assert leftovers(tmp_path / "dl") == ["cifar10", "cifar10/cifar-10-batches-bin", *sorted(
        f"cifar10/cifar-10-batches-bin/{n}" for n in [*batches, "batches.meta.txt", "readme.html"])]
    for name, (x, y) in batches.items():
        assert (folder / name).read_bytes() == batch_bytes(x, y)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["n_test"] == 8 and manifest["data"]["label_names"] == CIFAR10_NAMES
    # found there the next time: nothing is fetched (the server is gone)
    raw = read_source("cifar10", quick_config(data="cifar10", data_dir=str(tmp_path / "dl"),
                                              data_url="http://127.0.0.1:9/").data, "test")
    np.testing.assert_array_equal(raw.x, batches["test_batch.bin"][0])


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # a folder scan the interrupt left open
def test_an_interrupt_at_any_point_of_an_archive_download_leaves_no_temp_folder(tmp_path,
                                                                              monkeypatch):
    """download_archive interrupted at each bytecode boundary in turn, from its start to the
    fetch (which fails here, offline), then the cleanup every command runs on the way out: no
    temp folder is left in the data folder. (tempfile.mkdtemp made the work folder before the
    `try` that removes it, so an interrupt in between left `.cifar-10-batches-bin.*`.)"""
    def offline(url, dest, md5, put_in=None):
        raise VaekitError("offline")
    monkeypatch.setattr(datasets, "download", offline)
    dest = tmp_path / "dl" / "cifar10" / "cifar-10-batches-bin"

    def fetch():
        with contextlib.suppress(VaekitError):
            datasets.download_archive("http://127.0.0.1:9/cifar-10-binary.tar.gz", dest)

    def check(step):
        return [p for p in leftovers(tmp_path) if Path(p).name.startswith(".")] or None

    assert interrupt_everywhere(fetch, check) > 20


def test_cifar10_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    root, url = http_server
    make_archive(root / "cifar-10-binary.tar.gz", official_members(fake_batches(np.random.default_rng(0), 1)))
    cfg = quick_config(data="cifar10", data_dir=str(tmp_path / "dl"), data_url=url)
    with pytest.raises(VaekitError, match="checksum mismatch") as e:
        read_source("cifar10", cfg.data, "test")  # the official md5: this archive is not it
    assert "\n" not in str(e.value)
    assert not (tmp_path / "dl").exists()
    (tmp_path / "dl").mkdir()  # a folder the user made stays; nothing is left in it
    with pytest.raises(VaekitError, match="checksum mismatch"):
        read_source("cifar10", cfg.data, "test")
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("bad", [
    {"members": {"../evil.bin": b"x"}},
    {"members": {"cifar-10-batches-bin/../../evil.bin": b"x"}},
    {"members": {"/tmp/evil.bin": b"x"}},
    {"links": {"cifar-10-batches-bin/data_batch_1.bin": "/etc/passwd"}},
])
def test_cifar10_archive_with_unsafe_members_is_refused_whole(tmp_path, http_server, monkeypatch, bad):
    root, url = http_server
    members = official_members(fake_batches(np.random.default_rng(0), 1))
    if "links" in bad:
        members.pop("cifar-10-batches-bin/data_batch_1.bin")
    members.update(bad.get("members", {}))
    md5 = make_archive(root / "cifar-10-binary.tar.gz", members, bad.get("links"))
    monkeypatch.setitem(datasets.CIFAR10, "md5", md5)
    data_dir = tmp_path / "a" / "b" / "dl"
    with pytest.raises(VaekitError, match="unsafe member"):
        read_source("cifar10", quick_config(data="cifar10", data_dir=str(data_dir), data_url=url).data)
    assert leftovers(tmp_path / "a") == [] and not Path("/tmp/evil.bin").exists()


def test_cifar10_archive_without_the_batches_is_refused(tmp_path, http_server, monkeypatch):
    root, url = http_server
    members = {k.replace("cifar-10-batches-bin", "cifar-10-batches-py"): v
               for k, v in official_members(fake_batches(np.random.default_rng(0), 1)).items()}
    monkeypatch.setitem(datasets.CIFAR10, "md5", make_archive(root / "cifar-10-binary.tar.gz", members))
    with pytest.raises(VaekitError, match="lacks data_batch_1.bin"):
        read_source("cifar10", quick_config(data="cifar10", data_dir=str(tmp_path / "dl"),
                                            data_url=url).data)
    assert not (tmp_path / "dl").exists()


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_datasets_carry_their_class_names(tmp_path, name):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        for stem, arr in zip(IDX_FILES[split], (rng.integers(0, 256, (n, 6, 6), dtype=np.uint8),
                                                 rng.integers(0, 10, n).astype(np.uint8)), strict=True):
            (tmp_path / name).mkdir(exist_ok=True)
            with gzip.open(tmp_path / name / f"{stem}.gz", "wb") as f:
                f.write(b"\0\0\x08" + bytes([arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
                        + arr.tobytes())
    ds, _ = load_dataset(quick_config(data=name, data_dir=str(tmp_path), data_url="http://127.0.0.1:9/"))
    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]
    assert ds.info["label_names"] == (fashion if name == "fashion-mnist" else None)


def test_builtin_class_names_live_beside_the_registry():
    assert datasets.CLASS_NAMES["cifar10"] == tuple(CIFAR10_NAMES)
    assert class_names("cifar10", np.array([0, 9, 3])) == {0: "airplane", 3: "cat", 9: "truck"}
    assert class_names("fashion-mnist", np.array([9]))[9] == "Ankle boot"


# --- RGB image folders ----------------------------------------------------------------------------
def test_rgb_folder_keeps_the_channel_order(tmp_path):
    (tmp_path / "imgs").mkdir()
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "mix": (10, 20, 30)}
    for name, rgb in colours.items():
        Image.fromarray(np.full((5, 7, 3), rgb, np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
    raw = read_user(str(tmp_path / "imgs"), None, None, layout="channels-last")  # not for folders
    assert raw.x.shape == (4, 3, 5, 7) and raw.image and raw.pixel_max == 255
    for i, name in enumerate(sorted(colours)):  # files in name order
        for c in range(3):
            assert (raw.x[i, c] == colours[name][c]).all(), (name, c)


def test_the_report_names_the_classes_an_npz_carried(tmp_path):
    """class_names in an .npz travel with the run (manifest) to the report's latent map legend."""
    from conftest import quick_config

    import vaekit
    from vaekit.report import build_report

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 5, 6, 3), dtype=np.uint8)
    y = np.arange(120) % 3
    path = tmp_path / "named.npz"
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:],
             class_names=np.array(["apple", "pear", "plum"]))
    run = vaekit.train(quick_config(data=str(path), epochs=1, latent_dim=2), out=tmp_path / "run",
                       quiet=True)
    page = build_report(run.dir).read_text()
    assert "0 apple" in page and "1 pear" in page and "2 plum" in page


def test_layout_without_a_file_to_read_is_refused(tmp_path, capsys):
    from conftest import quick_config, run_cli

    import vaekit

    run = vaekit.train(quick_config(epochs=1), out=tmp_path / "run", quiet=True)
    capsys.readouterr()  # training's own warnings
    code, _, err = run_cli(capsys, "encode", run.dir, "--layout", "channels-last", "--out",
                           tmp_path / "z.npy")
    assert code == 2 and "--layout" in err and len(err.strip().splitlines()) == 1
