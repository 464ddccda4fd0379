"""The commands used after training read exactly the data asked for: the named built-in dataset
(never another one's files), its documented split, the run's own split, or a whole file; with the
same data options as `train`, and --threads/--device on every command that computes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli

import vaekit
from vaekit import sources
from vaekit.sources import IDX_FILES, read_idx

NO_NETWORK = ("--data-url", "http://127.0.0.1:9/")  # the discard port: refused at once
SIZES = {"mnist": (100, 30), "fashion-mnist": (120, 40)}  # (train, test): told apart by count


def write_idx(path, arr: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08" + bytes([arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
                + arr.tobytes())


def fake_idx(folder, seed: int, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """8x8 uint8 images and labels under the official MNIST file names, as .gz."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, arrays = np.random.default_rng(seed), {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = IDX_FILES[split]
        arrays[split] = rng.integers(0, 17, (n, 8, 8), dtype=np.uint8)  # 0..16: digits runs take it
        write_idx(folder / f"{images}.gz", arrays[split])
        write_idx(folder / f"{labels}.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return arrays


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fake MNIST and Fashion-MNIST, each flat in a folder named after it under data/, a digits
    run and an MNIST run (data_dir data/mnist)."""
    root = tmp_path_factory.mktemp("world")
    images = {name: fake_idx(root / "data" / name, seed, *SIZES[name])
              for seed, name in enumerate(SIZES)}
    tiny = {"hidden": [8], "latent_dim": 2, "epochs": 1}
    digits = vaekit.train(quick_config(**tiny), out=root / "digits", quiet=True, hooks=[])
    mnist = vaekit.train(quick_config(data="mnist", data_dir=str(root / "data" / "mnist"), **tiny),
                         out=root / "mnist", quiet=True, hooks=[])
    return root, images, digits, mnist


def codes(run, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return run.model.encode(run.model.prepare(x)).mean.numpy()


def encode(capsys, tmp_path, run_dir, *argv) -> np.ndarray:
    out = tmp_path / "z.npy"
    code, _, err = run_cli(capsys, "encode", run_dir, *argv, "--out", out)
    assert code == 0, err
    return np.load(out)


def seeded_parts(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, written out: a RandomState(seed) permutation, the first round(n*f)
    indices held out; both parts sorted."""
    perm = np.random.RandomState(seed).permutation(n)
    held = int(round(n * fraction))
    return np.sort(perm[held:]), np.sort(perm[:held])


def digits_rows(split: str, seed: int = 0) -> np.ndarray:
    """Row indices of the bundled digits in a run's split (test 10%, then val 10% of the rest)."""
    keep, test = seeded_parts(1797, 0.1, seed)
    kept, val = seeded_parts(len(keep), 0.1, seed + 1)
    return {"test": test, "val": keep[val], "train": keep[kept]}[split]


@pytest.mark.parametrize("split", ["test", "val"])
def test_the_runs_own_builtin_dataset_gives_the_runs_own_split(world, capsys, tmp_path, split):
    from sklearn.datasets import load_digits
    _, _, digits, _ = world
    x = load_digits().images[digits_rows(split)][:, None]
    z = encode(capsys, tmp_path, digits.dir, "--data", "digits", "--split", split)
    assert z.shape == (len(x), 2)  # not all 1797 rows
    np.testing.assert_allclose(z, codes(digits, x), rtol=1e-5, atol=1e-6)
    # the same rows as without --data (the run's own data)
    no_data = encode(capsys, tmp_path, digits.dir, "--split", split)
    np.testing.assert_array_equal(no_data, z)


def test_another_builtin_dataset_gives_its_documented_split(world, capsys, tmp_path):
    root, images, digits, _ = world
    where = ("--data", "mnist", "--data-dir", root / "data" / "mnist")
    z = encode(capsys, tmp_path, digits.dir, *where, "--split", "val")
    _, val = seeded_parts(SIZES["mnist"][0], 0.1, 0 + 1)  # a seeded 10% of its own train split
    np.testing.assert_allclose(z, codes(digits, images["mnist"]["train"][val]), rtol=1e-5, atol=1e-6)
    z = encode(capsys, tmp_path, digits.dir, *where)  # its own test split, whole, in order
    np.testing.assert_allclose(z, codes(digits, images["mnist"]["test"]), rtol=1e-5, atol=1e-6)


def test_score_fashion_on_an_mnist_run_reads_fashion(world, capsys, tmp_path):
    root, images, _, mnist = world
    z = encode(capsys, tmp_path, mnist.dir, "--data", "fashion-mnist", "--data-dir",
               root / "data" / "fashion-mnist")
    np.testing.assert_allclose(z, codes(mnist, images["fashion-mnist"]["test"]), rtol=1e-5,
                               atol=1e-6)
    # a folder holding both, one subfolder each
    z2 = encode(capsys, tmp_path, mnist.dir, "--data", "fashion-mnist", "--data-dir", root / "data")
    np.testing.assert_array_equal(z2, z)
    code, out, err = run_cli(capsys, "score", mnist.dir, "--data", "fashion-mnist", "--data-dir",
                             root / "data")
    assert code == 0, err
    assert len(out.splitlines()) == 1 + SIZES["fashion-mnist"][1]


def test_fashion_is_never_read_from_the_runs_mnist_folder(world, capsys):
    """The run's data folder holds MNIST under the very file names Fashion-MNIST uses."""
    _, _, _, mnist = world
    code, out, err = run_cli(capsys, "score", mnist.dir, "--data", "fashion-mnist", *NO_NETWORK)
    assert code == 2 and out == "", out[:200]
    assert len(err.strip().splitlines()) == 1 and "could not download" in err
    assert "fashion-mnist" in err
    assert not (Path(mnist.config.data.data_dir) / "fashion-mnist").exists()  # no empty folder


def test_eval_mnist_on_a_fashion_run_reads_mnist(world, capsys, tmp_path):
    root, _, _, _ = world
    fashion = vaekit.train(quick_config(data="fashion-mnist", hidden=[8], latent_dim=2, epochs=1,
                                        data_dir=str(root / "data" / "fashion-mnist")),
                           out=tmp_path / "fashion", quiet=True, hooks=[])
    code, _, err = run_cli(capsys, "eval", fashion.dir, "--data", "mnist", *NO_NETWORK)
    assert code == 2 and "could not download" in err and len(err.strip().splitlines()) == 1
    assert "--data-dir" in err  # the way to the files a user already has, as below
    per = tmp_path / "per.csv"
    code, _, err = run_cli(capsys, "eval", fashion.dir, "--data", "mnist", "--data-dir",
                           root / "data", "--per-example", per)
    assert code == 0, err
    assert len(per.read_text().splitlines()) == 1 + SIZES["mnist"][1]


def test_official_files_are_found_in_a_shared_flat_folder(shared_data, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stem = IDX_FILES["test"][0]
    (cache / f"{stem}.gz").write_bytes((shared_data / "mnist" / f"{stem}.gz").read_bytes())
    if sources.md5sum(cache / f"{stem}.gz") != sources.IDX_DATASETS["mnist"]["md5"][f"{stem}.gz"]:
        pytest.skip("the shared MNIST test images are not the official .gz")
    assert sources.find_idx("mnist", cache, stem, None) == cache / f"{stem}.gz"
    with pytest.raises(vaekit.VaekitError, match="not taken for fashion-mnist"):
        sources.find_idx("fashion-mnist", cache, stem, NO_NETWORK[1])


def test_split_does_not_apply_to_a_file(world, capsys, tmp_path):
    _, _, digits, _ = world
    np.save(tmp_path / "x.npy", np.zeros((5, 1, 8, 8), np.float32))
    code, _, err = run_cli(capsys, "encode", digits.dir, "--data", tmp_path / "x.npy", "--split",
                           "val", "--out", tmp_path / "z.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--split" in err
    assert not (tmp_path / "z.npy").exists()
    z = encode(capsys, tmp_path, digits.dir, "--data", tmp_path / "x.npy")
    assert z.shape == (5, 2)


def test_idx_arrays_are_writable(tmp_path):
    """np.frombuffer over bytes is read-only; torch warns when it wraps such an array."""
    write_idx(tmp_path / "a.gz", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    x = read_idx(tmp_path / "a.gz")
    assert x.flags.writeable and x.shape == (2, 3, 4) and int(x[1, 2, 3]) == 23


def test_eval_of_another_builtin_warns_nothing(world, capsys):
    """With warnings as errors (pyproject): torch's 'not writable' warning would fail this."""
    root, _, digits, _ = world
    code, out, err = run_cli(capsys, "eval", digits.dir, "--data", "mnist", "--data-dir",
                             root / "data" / "mnist", "--json")
    assert code == 0 and err == "", err


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A run on a CSV whose 'kind' column holds labels."""
    root = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    x = rng.normal(size=(120, 3)) + 2 * y[:, None]
    (root / "train.csv").write_text("a,b,kind,c\n" + "".join(
        f"{r[0]:.6f},{r[1]:.6f},k{k},{r[2]:.6f}\n" for r, k in zip(x, y, strict=True)))
    cfg = quick_config(data=str(root / "train.csv"), label_column="kind", hidden=[8],
                       latent_dim=2, epochs=1)
    return vaekit.train(cfg, out=root / "run", quiet=True, hooks=[]), x.astype(np.float32)


def test_unlabelled_csv_on_a_run_trained_with_a_label_column(csv_run, capsys, tmp_path):
    run, x = csv_run
    (tmp_path / "new.csv").write_text("a,b,c\n" + "".join(f"{r[0]},{r[1]},{r[2]}\n" for r in x))
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", tmp_path / "new.csv", "--out",
                           tmp_path / "z.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--label-column none" in err
    z = encode(capsys, tmp_path, run.dir, "--data", tmp_path / "new.csv", "--label-column", "none")
    np.testing.assert_allclose(z, codes(run, x), rtol=1e-5, atol=1e-6)
    code, out, err = run_cli(capsys, "score", run.dir, "--data", tmp_path / "new.csv",
                             "--label-column", "none", "--fpr", "0.1")
    assert code == 0, err
    assert out.splitlines()[0] == "index,method,score,flagged" and len(out.splitlines()) == 121


def test_label_column_can_be_changed(csv_run, capsys, tmp_path):
    run, x = csv_run
    target = (x[:, 0] > 2).astype(int)  # column 0 of the headerless file: the label
    (tmp_path / "other.csv").write_text("".join(
        f"{t},{r[0]},{r[1]},{r[2]}\n" for t, r in zip(target, x, strict=True)))
    code, out, err = run_cli(capsys, "score", run.dir, "--data", tmp_path / "other.csv",
                             "--label-column", "0")
    assert code == 0, err
    rows = [line.split(",") for line in out.splitlines()[1:]]
    assert [int(r[3]) for r in rows] == target.tolist()
    assert "AUROC" in err


COMPUTE = {  # command -> the rest of a valid command line (RUN_DIR first)
    "eval": [], "score": [], "encode": ["--out", "{tmp}/z.npy"], "probe": [],
    "sample": ["--out", "{tmp}/s.npy"], "manifold": ["--out", "{tmp}/m.npy"],
    "interpolate": ["--from", "0", "--to", "1", "--out", "{tmp}/i.npy"],
    "traverse": ["--out", "{tmp}/t.npy"], "shift": ["--index", "0", "--toward", "1", "--out",
                                                   "{tmp}/s.npy"],
    "report": ["--out", "{tmp}/r.html"],
}


@pytest.mark.parametrize("command", sorted(COMPUTE))
def test_every_command_that_computes_takes_threads(world, capsys, tmp_path, command):
    _, _, digits, _ = world
    rest = [a.format(tmp=tmp_path) for a in COMPUTE[command]]
    code, _, err = run_cli(capsys, command, digits.dir, *rest, "--threads", "2")
    assert code == 0, err
    assert torch.get_num_threads() == 2  # conftest sets 1 before every test
    code, _, err = run_cli(capsys, command, digits.dir, *rest, "--threads", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--threads" in err
    code, _, err = run_cli(capsys, command, digits.dir, *rest, "--device", "bogus")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--device" in err


def test_the_data_options_are_trains_own():
    """One definition: the options of every command that reads data are DataConfig's fields."""
    from dataclasses import fields

    from vaekit.cli import build_parser
    from vaekit.cli.common import READ_FIELDS
    from vaekit.config import DataConfig

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    helps = {f.name: f.metadata["help"].split(" (default:")[0] for f in fields(DataConfig)
             if f.name in READ_FIELDS}
    for name in ("eval", "score", "encode", "probe", "shift", "traverse", "interpolate", "report",
                 "train"):
        actions = {a.dest: a for a in commands[name]._actions}
        for field, text in helps.items():
            assert actions[field].help.startswith(text), (name, field)
