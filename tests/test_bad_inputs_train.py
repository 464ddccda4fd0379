"""Bad inputs to training and to the run folder (issue 8, items 9 and 11), one row each: every one
ends in one line on stderr naming the problem, exit 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import quick_config, run_cli

import vaekit
from vaekit import VaekitError
from vaekit.runs import read_metrics

FAST = ("--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--batch-size", "100", "--quiet")


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def a_file(p):
    (p / "f").write_text("x")
    return p / "f"


def read_only(p):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (p / "ro").mkdir()
    (p / "ro").chmod(0o555)
    return p / "ro" / "run"


# (options, where --out goes, words of the one line)
TRAIN_ROWS = {
    "cuda on a CPU-only torch": (["--device", "cuda"], None, ["no CUDA", "--device cpu"]),
    "unknown device": (["--device", "bogus"], None, ["unknown --device", "auto"]),
    "negative seed": (["--seed", "-1"], None, ["--seed must be in 0.."]),
    "seed too large": (["--seed", "99999999999"], None, ["--seed must be in 0.."]),
    "negative threads": (["--threads", "-1"], None, ["--threads must be >= 1"]),
    "out is a file": ([], a_file, ["is a file", "another --out"]),
    "out under a file": ([], lambda p: a_file(p) / "run", ["cannot create the run folder"]),
    "out in a read-only folder": ([], read_only, ["cannot create the run folder"]),
    "resume of a folder that is no run": (["--resume"], lambda p: p, ["run folder", "no config"]),
}


@pytest.mark.parametrize("name", TRAIN_ROWS)
def test_bad_train_input_is_one_line(name, tmp_path, capsys):
    options, where, words = TRAIN_ROWS[name]
    if name.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    out = tmp_path / "run" if where is None else where(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [*options, out] if options == ["--resume"] else [*options, "--out", out, *FAST]
    code, _, err = run_cli(capsys, "train", *argv)
    assert_one_line_error(code, err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_config_file_with_a_bad_device_seed_or_threads_lists_all_three(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("device: bogus\nseed: -1\nthreads: 0\n")
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "c.yaml", "--out",
                           tmp_path / "r", *FAST)
    assert_one_line_error(code, err, "--device", "--seed", "--threads")


@pytest.fixture
def run_dir(tmp_path):
    vaekit.train(quick_config(epochs=2), out=tmp_path / "run", quiet=True)
    return tmp_path / "run"


def other_architecture(run_dir):
    vaekit.train(quick_config(epochs=1, hidden=[16]), out=run_dir.parent / "other", quiet=True)
    return (run_dir.parent / "other" / "best.pt").read_bytes()


def torch_bytes(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# what best.pt holds -> words of the one line (`runs.load`, here through `vaekit eval`)
CHECKPOINT_ROWS = {
    "a bare tensor": (lambda d: torch_bytes(torch.zeros(3)), ["not a vaekit checkpoint"]),
    "text": (lambda d: b"these are not weights\n", ["corrupt"]),
    "a dict of something else": (lambda d: torch_bytes({"weights": [1, 2]}),
                                 ["not a vaekit checkpoint"]),
    "another run's architecture": (other_architecture, ["another model"]),
    "nothing": (lambda d: b"", ["corrupt"]),
}


@pytest.mark.parametrize("name", CHECKPOINT_ROWS)
def test_a_bad_best_checkpoint_is_one_line(name, run_dir, capsys):
    make, words = CHECKPOINT_ROWS[name]
    (run_dir / "best.pt").write_bytes(make(run_dir))
    capsys.readouterr()  # training's own warnings
    code, _, err = run_cli(capsys, "eval", run_dir, "--json")
    assert_one_line_error(code, err, "best.pt", *words)


@pytest.mark.parametrize("name", ["a bare tensor", "text", "a dict of something else"])
def test_a_bad_last_checkpoint_on_resume_is_one_line(name, run_dir, capsys):
    make, words = CHECKPOINT_ROWS[name]
    (run_dir / "last.pt").write_bytes(make(run_dir))
    capsys.readouterr()
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "3", "--quiet")
    assert_one_line_error(code, err, "last.pt", *words)


def test_a_cut_off_metrics_file_reads_its_complete_rows(run_dir):
    text = (run_dir / "metrics.jsonl").read_text()
    whole = [json.loads(line) for line in text.splitlines()]
    (run_dir / "metrics.jsonl").write_text(text[:-40])  # the last row cut off
    assert read_metrics(run_dir) == whole[:-1]
    (run_dir / "metrics.jsonl").write_text("{oops\n" + text)  # garbage before the end: an error
    with pytest.raises(VaekitError, match="line 1 is not a JSON object"):
        read_metrics(run_dir)


@pytest.mark.parametrize("content", [b'{"test": {"elbo": -3', b"[1, 2]", b"\xff\xfe\x00"])
def test_a_corrupt_summary_is_one_line_that_says_how_to_rewrite_it(run_dir, content, capsys):
    (run_dir / "summary.json").write_bytes(content)
    with pytest.raises(VaekitError, match="summary.json.*--resume"):
        _ = vaekit.load(run_dir).summary
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--quiet")  # which rewrites it
    assert code == 0, err
    assert vaekit.load(run_dir).summary["best_epoch"] >= 1
