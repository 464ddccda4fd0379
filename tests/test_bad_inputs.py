"""Bad inputs to the commands used after training, as a table: each row is a command line (built
in a fresh folder) and the words its one-line error must hold. Every row must exit 2 with one line
on stderr, no traceback, no warning, and leave no file behind (pyproject turns warnings into
errors, so a leaked warning fails its row too)."""

from __future__ import annotations

import errno
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import quick_config, run_cli

import vaekit
from vaekit.sources import IDX_FILES

TEST_IMAGES = IDX_FILES["test"][0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 1-epoch digits run (8x8 images, values 0..16, 2 latent dimensions)."""
    out = tmp_path_factory.mktemp("bad") / "run"
    vaekit.train(quick_config(hidden=[8], latent_dim=2, epochs=1), out=out, quiet=True, hooks=[])
    return out


def idx_folder(t: Path, content: bytes, gz: bool = True) -> Path:
    """A folder named mnist whose test images file holds `content` (the .gz bytes if gz)."""
    folder = t / "mnist"
    folder.mkdir()
    (folder / (TEST_IMAGES + (".gz" if gz else ""))).write_bytes(content)
    return folder


def bad_deflate() -> bytes:
    good = gzip.compress(b"\0\0\x08\x03" + bytes(12) + bytes(200))
    return good[:10] + b"\xff" * 8 + good[18:]  # a gzip header, then a broken deflate stream


HUGE_IDX = b"\0\0\x08\x03" + (2**31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2  # no body


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height 8-bit grey pixels and holds almost none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + chunk(b"IEND", b""))


def image_folder(t: Path, content: bytes) -> Path:
    (t / "imgs").mkdir()
    (t / "imgs" / "a.png").write_bytes(content)
    return t / "imgs"


def write(t: Path, name: str, content) -> Path:
    path = t / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_text(content)
    return path


def few_labelled(t: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    return write(t, "few.npz", {"X": rng.integers(0, 17, (n, 8, 8)).astype(np.uint8),
                                "y": np.arange(n) % 2})


ROWS = {  # name (issue 8 item): (argv from (tmp folder, run folder), words of the error)
    "11 sample temperature nan": (lambda t, r: ["sample", r, "--temperature", "nan", "--out",
                                                t / "s.png"], ["--temperature", "finite"]),
    "11 sample temperature inf": (lambda t, r: ["sample", r, "--temperature", "inf", "--out",
                                                t / "s.png"], ["--temperature", "finite"]),
    "11 sample temperature -1": (lambda t, r: ["sample", r, "--temperature", "-1", "--out",
                                               t / "s.png"], ["--temperature", ">= 0"]),
    "11 gz with a bad deflate block": (lambda t, r: [
        "eval", r, "--data", "mnist", "--data-dir", idx_folder(t, bad_deflate())], ["corrupt"]),
    "11 idx header claims 2^31 rows (.gz)": (lambda t, r: [
        "eval", r, "--data", "mnist", "--data-dir", idx_folder(t, gzip.compress(HUGE_IDX))],
        ["truncated", "2147483648"]),
    "11 idx header claims 2^31 rows (plain)": (lambda t, r: [
        "eval", r, "--data", "mnist", "--data-dir", idx_folder(t, HUGE_IDX, gz=False)],
        ["truncated", "2147483648"]),
    "11 idx header of 255 dimensions": (lambda t, r: [
        "eval", r, "--data", "mnist", "--data-dir", idx_folder(t, b"\0\0\x08\xff" + bytes(8),
                                                              gz=False)], ["truncated"]),
    "11 png of 20000x20000 (bomb)": (lambda t, r: [
        "encode", r, "--data", image_folder(t, png_header(20000, 20000)), "--out", t / "z.npy"],
        ["pixels", "bomb"]),
    "11 png of 12000x12000 (bomb warning)": (lambda t, r: [
        "encode", r, "--data", image_folder(t, png_header(12000, 12000)), "--out", t / "z.npy"],
        ["pixels", "bomb"]),
    "11 npy header claims 2^40 rows": (lambda t, r: [
        "encode", r, "--data", write_npy_header(t, (2**40, 64)), "--out", t / "z.npy"],
        ["truncated"]),
    "15 csv value beyond float32": (lambda t, r: [
        "encode", r, "--data", write(t, "x.csv", "a,b\n1,2\n3,1e40\n"), "--out", t / "z.npy"],
        ["line 3", "float32"]),
    "15 npy float64 beyond float32": (lambda t, r: [
        "encode", r, "--data", write(t, "x.npy", np.full((4, 64), 1e300)), "--out", t / "z.npy"],
        ["float32"]),
    "15 csv nan": (lambda t, r: [
        "encode", r, "--data", write(t, "x.csv", "1,2\nnan,1\n"), "--out", t / "z.npy"],
        ["line 2", "NaN"]),
    "2 --split with a file": (lambda t, r: [
        "encode", r, "--data", write(t, "x.npy", np.zeros((3, 64))), "--split", "val", "--out",
        t / "z.npy"], ["--split", "drop"]),
    "13 label column not in the file": (lambda t, r: [
        "encode", r, "--data", write(t, "x.csv", "a,b\n1,2\n"), "--label-column", "kind", "--out",
        t / "z.npy"], ["kind", "none"]),
    "13 --label-column without a file": (lambda t, r: ["eval", r, "--label-column", "kind"],
                                         ["--label-column", "drop"]),
    "13 --image-size with a built-in": (lambda t, r: ["eval", r, "--data", "digits",
                                                      "--image-size", "8"], ["--image-size"]),
    "17 eval --threads 0": (lambda t, r: ["eval", r, "--threads", "0"], ["--threads"]),
    "17 sample --device bogus": (lambda t, r: ["sample", r, "--device", "bogus", "--out",
                                               t / "s.png"], ["--device"]),
    "11 eval --seed -1": (lambda t, r: ["eval", r, "--seed", "-1"], ["--seed"]),
    "11 score --seed 99999999999": (lambda t, r: ["score", r, "--seed", "99999999999"], ["--seed"]),
    "11 sample --seed -1": (lambda t, r: ["sample", r, "--seed", "-1", "--out", t / "s.png"],
                            ["--seed"]),
    "20 probe on 40 examples (10 held out)": (lambda t, r: [
        "probe", r, "--data", few_labelled(t, 40)], ["10 held-out", "at least 20"]),
}


def write_npy_header(t: Path, shape: tuple[int, ...]) -> Path:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": shape})
    (t / "huge.npy").write_bytes(buf.getvalue())
    return t / "huge.npy"


OUT_COMMANDS = {  # command -> its arguments before --out (RUN_DIR first), the --out option
    "sample": ([], "--out"), "encode": ([], "--out"), "score": ([], "--out"),
    "eval": ([], "--per-example"), "interpolate": (["--from", "0", "--to", "1"], "--out"),
    "traverse": ([], "--out"), "manifold": ([], "--out"),
    "shift": (["--index", "0", "--toward", "1"], "--out"), "report": ([], "--out"),
}
SUFFIX = {"report": ".html", "encode": ".npy", "score": ".csv", "eval": ".csv"}


def out_row(command: str, where: str):
    """--out at an existing folder, under a file, or in a read-only folder."""
    before, option = OUT_COMMANDS[command]
    name = "out" + SUFFIX.get(command, ".png")

    def argv(t: Path, r: Path) -> list:
        target = {"a folder": lambda: t / "folder", "under a file": lambda: t / "file" / name,
                  "read-only": lambda: t / "ro" / name}[where]()
        (t / "folder").mkdir()
        (t / "ro").mkdir()
        (t / "file").write_text("a file")
        return [command, r, *before, option, target]
    words = {"a folder": ["is a folder"], "under a file": ["is a file"],
             "read-only": ["read-only"]}[where]
    return argv, [option, *words]


for _command in OUT_COMMANDS:
    for _where in ("a folder", "under a file", "read-only"):
        ROWS[f"11 {_command} {_where}"] = out_row(_command, _where)


def files_under(*folders: Path) -> set[Path]:
    return {p for f in folders for p in f.rglob("*")}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, capsys, monkeypatch,
                                                         name):
    make, words = ROWS[name]
    argv = make(tmp_path, run_dir)
    real_access = os.access  # root ignores chmod: the read-only folder is simulated for the check
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        Path(p).name != "ro" and real_access(p, mode, **kw)))
    before = files_under(tmp_path, run_dir)
    code, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), (words, lines[0])
    assert files_under(tmp_path, run_dir) == before  # nothing written, nothing half-written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_really_read_only_folder(run_dir, tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    code, _, err = run_cli(capsys, "sample", run_dir, "--out", tmp_path / "ro" / "s.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "read-only" in err


class FullDisk:
    """A file that takes a few bytes, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data) -> int:
        self.f.write(bytes(data)[:8])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("command", ["sample", "encode", "score", "eval", "report"])
def test_full_disk_is_one_line_and_leaves_no_file(run_dir, tmp_path, capsys, monkeypatch, command):
    before, option = OUT_COMMANDS[command]
    out = tmp_path / ("out" + SUFFIX.get(command, ".png"))
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: FullDisk(real_fdopen(*a, **kw)))
    run_files = files_under(run_dir)
    code, _, err = run_cli(capsys, command, run_dir, *before, option, out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    assert files_under(run_dir) - run_files <= {run_dir / "eval-test.json"} - run_files


def test_eval_prints_its_result_when_the_run_folder_cannot_keep_it(run_dir, capsys, monkeypatch):
    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(vaekit.runs, "atomic_write", refuse)
    code, out, err = run_cli(capsys, "eval", run_dir)
    assert code == 0, err
    assert "elbo" in out and "kl_per_dim" in out  # the whole table
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "eval-test.json" in lines[0]


def test_probe_warns_in_one_line_about_a_class_with_one_held_out_example(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (60, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "train.npz", X=x[:40], y=np.arange(40) % 3)
    np.savez(tmp_path / "test.npz", X=x[40:], y=np.r_[np.zeros(10, int), np.ones(9, int), 2])
    code, out, err = run_cli(capsys, "probe", run_dir, "--data", tmp_path / "train.npz",
                             "--test-data", tmp_path / "test.npz")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "2" in lines[0], err
    assert out.splitlines()[0] == "n train 40, n test 20, 3 classes"
