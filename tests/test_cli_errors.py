"""Errors a user can cause: one line on stderr naming the problem and the fix, exit 2, no traceback,
and nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import quick_config, run_cli

import vaekit

FAST = ("--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet")


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def bad_file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("make,words", [
    (lambda p: p / "missing.npy", ["not found"]),
    (lambda p: bad_file(p, "x.npy", np.zeros((4, 2, 2, 2, 2), np.float32)), ["shape", "expected"]),
    (lambda p: bad_file(p, "x.npy", np.array([[0.5, np.nan]] * 30, np.float32)), ["NaN"]),
    (lambda p: bad_file(p, "x.npy", b"this is not a numpy file"), ["corrupt"]),
    (lambda p: bad_file(p, "x.csv", b"a,b\n1,2\n3,oops\n"),
     ["line 3, column 'b' holds 'oops', not a number"]),
    (lambda p: bad_file(p, "x.csv", b"1,2\n3,\n"), ["line 2, column 1 (from 0) is empty"]),
    (lambda p: bad_file(p, "x.txt", b"1 2 3"), ["unsupported"]),
    (lambda p: bad_file(p, "x.npz", b"PK\x03\x04garbage"), ["corrupt"]),
])
def test_bad_data_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, make, words):
    data = make(tmp_path)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", out, *FAST)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


def test_values_outside_unit_interval_for_bernoulli(tmp_path, capsys):
    data = bad_file(tmp_path, "x.npy", np.linspace(-1, 3, 200, dtype=np.float32).reshape(50, 4))
    code, _, err = run_cli(capsys, "train", "--data", data, "--likelihood", "bernoulli", *FAST,
                           "--out", tmp_path / "r")
    assert_one_line_error(code, err, "[0, 1]", "gaussian")


@pytest.mark.parametrize("argv,words", [
    (["train", "--likelihood", "laplace"], ["laplace", "bernoulli"]),
    (["train", "--hidden", "ten"], ["hidden"]),
    (["train", "--epochs", "0"], ["--epochs"]),
    (["train", "--objective", "nope"], ["objective"]),
    (["train", "--config", "/nonexistent.yaml"], ["config file", "not found"]),
    (["eval", "/nonexistent-run"], ["not found"]),
    (["sample", "/nonexistent-run", "--out", "x.png"], ["not found"]),
    (["train", "--model", "ae", "--free-bits", "1"], ["ae"]),
    (["train", "--binarize", "dynamic", "--likelihood", "gaussian"], ["bernoulli"]),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *words)


def test_bad_config_file(tmp_path, capsys):
    for text, word in (("epochs: [oops", "YAML"), ("epoch: 3", "unknown config key"),
                       ("epochs: many", "not a valid"), ("objective: sgd", "elbo, iwae"),
                       ("binarize: yes", "none, dynamic"), ("- epochs", "mapping")):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        code, _, err = run_cli(capsys, "train", "--config", path)
        assert_one_line_error(code, err, word)


@pytest.fixture
def run_dir(tmp_path):
    vaekit.train(quick_config(epochs=1), out=tmp_path / "run", quiet=True)
    return tmp_path / "run"


def test_existing_run_is_not_overwritten(run_dir, capsys):
    before = (run_dir / "best.pt").read_bytes()
    code, _, err = run_cli(capsys, "train", "--out", run_dir, *FAST)
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert (run_dir / "best.pt").read_bytes() == before


def test_corrupt_checkpoint(run_dir, capsys):
    (run_dir / "best.pt").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "eval", run_dir)
    assert_one_line_error(code, err, "corrupt")


def test_sample_png_of_tabular_data_and_bad_suffix(tmp_path, tiny_table, capsys):
    vaekit.train(quick_config(data=str(tiny_table), epochs=1), out=tmp_path / "r", quiet=True)
    code, _, err = run_cli(capsys, "sample", tmp_path / "r", "--out", tmp_path / "s.png")
    assert_one_line_error(code, err, "image", ".npy")
    assert not (tmp_path / "s.png").exists()
    code, _, err = run_cli(capsys, "sample", tmp_path / "r", "--out", tmp_path / "s.xlsx")
    assert_one_line_error(code, err, ".npy")


def test_eval_on_data_with_other_feature_count(run_dir, tmp_path, capsys):
    other = bad_file(tmp_path, "o.npy", np.random.rand(10, 7).astype(np.float32))
    code, _, err = run_cli(capsys, "eval", run_dir, "--data", other)
    assert_one_line_error(code, err, "shape")


def test_resume_refuses_model_options(run_dir, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--latent-dim", "7")
    assert_one_line_error(code, err, "--latent-dim")


def test_help_of_every_subcommand(capsys):
    from vaekit.cli import COMMANDS
    for name in COMMANDS:
        code, out, _ = run_cli(capsys, name, "--help")
        assert code == 0 and f"usage: vaekit {name}" in out


def test_binarize_dynamic_on_tabular_data(tiny_table, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", tiny_table, "--binarize", "dynamic", *FAST,
                           "--out", tmp_path / "r")
    assert_one_line_error(code, err, "--binarize dynamic", "bernoulli")
    assert not (tmp_path / "r").exists()


def test_unreadable_run_config(run_dir, capsys):
    (run_dir / "config.yaml").write_text("- just\n- a list\n")
    code, _, err = run_cli(capsys, "eval", run_dir)
    assert_one_line_error(code, err, "mapping")


def test_in_memory_test_data_of_another_shape():
    from vaekit import VaekitError
    from vaekit.data import dataset_from_arrays
    with pytest.raises(VaekitError, match="must match"):
        dataset_from_arrays(np.random.rand(50, 6), quick_config(), x_test=np.random.rand(9, 5))


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`vaekit eval RUN | head`: when the reader leaves, the command stops without an error line
    (it used to say "cannot read or write: Broken pipe; free some space ...")."""
    import vaekit.cli.eval as eval_command

    def reader_left(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(eval_command, "run", reader_left)
    code, _, err = run_cli(capsys, "eval", "some-run")
    assert code == 0 and "Broken pipe" not in err and "error" not in err


@pytest.mark.parametrize("signal_name, code, line", [("ctrl-c", 130, "interrupted"),
                                                      ("sigterm", 143, "terminated (SIGTERM)")])
def test_a_cleanup_that_fails_after_an_interrupt_still_reports_the_interrupt(
        monkeypatch, capsys, signal_name, code, line):
    """Ctrl-C or SIGTERM landing inside a cleanup (shutil.rmtree of a download's work folder) can
    make the cleanup fail with its own OSError (EBADF), raised while the interrupt was handled: the
    command said "cannot read or write ...; free some space" then, for a stop the user asked for."""
    import errno

    import vaekit.cli.eval as eval_command
    from vaekit.cli import Terminated

    def stopped_in_cleanup(args):
        try:
            raise Terminated if signal_name == "sigterm" else KeyboardInterrupt
        finally:
            raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(eval_command, "run", stopped_in_cleanup)
    code_, _, err = run_cli(capsys, "eval", "some-run")
    assert (code_, err.strip()) == (code, f"vaekit eval: {line}")


def test_an_oserror_of_its_own_still_says_cannot_read_or_write(monkeypatch, capsys):
    import errno

    import vaekit.cli.eval as eval_command

    def disk_full(args):
        try:
            raise ValueError("handled")  # a context that is not an interrupt
        except ValueError:
            raise OSError(errno.ENOSPC, "No space left on device", "run/last.pt") from None

    monkeypatch.setattr(eval_command, "run", disk_full)
    code, _, err = run_cli(capsys, "eval", "some-run")
    assert_one_line_error(code, err, "cannot read or write run/last.pt", "No space left")
