"""Shared fixtures: tiny data, quick configs, and the real datasets beside the repo (../shared/data)."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import Config
from vaekit.cli import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small models: one thread is fastest and deterministic


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (present in CI, beside the repo)")
    return SHARED_DATA


def quick_config(**flat) -> Config:
    """A small, fast config; keys as in config.yaml / the CLI options."""
    base = {"hidden": [32], "latent_dim": 4, "epochs": 3, "batch_size": 100, "patience": 0}
    return Config.from_flat(base | flat)


@pytest.fixture
def tiny_images(tmp_path) -> Path:
    """200 uint8 8x8 images of bright squares at random places, as an .npz with labels."""
    rng = np.random.default_rng(0)
    x = np.zeros((200, 8, 8), np.uint8)
    y = rng.integers(0, 2, 200)
    for i, label in enumerate(y):
        r, c = rng.integers(0, 5, 2)
        x[i, r:r + 3, c:c + 3] = 255 if label else 128
    path = tmp_path / "tiny.npz"
    np.savez(path, X=x, y=y)
    return path


def low_rank_table(seed: int = 1) -> np.ndarray:
    """300 rows of correlated gaussian features: 5 columns driven by 2 factors, plus a little
    noise, float32."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(300, 2))
    return (z @ rng.normal(size=(2, 5)) * 3 + 10 + 0.1 * rng.normal(size=(300, 5))).astype(np.float32)


@pytest.fixture
def tiny_table(tmp_path) -> Path:
    """`low_rank_table()` as .npy."""
    path = tmp_path / "table.npy"
    np.save(path, low_rank_table())
    return path


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/served: (that folder, its base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `vaekit ARGV` in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse exits on --help and usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_train_refused(capsys, tmp_path, options, needle: str) -> None:
    """`vaekit train --data digits --epochs 1 OPTIONS` ends in one line naming `needle`, exit 2,
    and writes no run folder."""
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--epochs", "1", *options,
                           "--out", tmp_path / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


def interrupt_at(step: int):
    """A tracer raising KeyboardInterrupt (as Ctrl-C's or the SIGTERM handler's) at the step-th
    bytecode boundary of any Python frame: where a signal's handler can run."""
    seen = {"n": 0}

    def trace(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            seen["n"] += 1
            if seen["n"] == step:
                raise KeyboardInterrupt
        return trace
    return trace


def interrupt_everywhere(fn, check, timeout: float = 120) -> int:
    """Run fn() interrupted at its 1st, 2nd, ... bytecode boundary until a run ends normally;
    after each, the cleanup `vaekit`'s main() and interpreter exit do (tempfiles.remove_pending), then
    check(step) (returns a problem or None). In a thread, so that a run left hanging fails the
    test instead of stalling it. Returns the number of runs; asserts no problem."""
    from vaekit.tempfiles import remove_pending
    steps, problems, finished = [0], [], []

    def each_point():
        while True:
            steps[0] += 1
            sys.settrace(interrupt_at(steps[0]))
            try:
                fn()
                finished.append(steps[0])
                return
            except BaseException:  # the interrupt, or what the library's cleanup turned it into
                pass  # (an interrupt inside shutil.rmtree can surface as OSError EBADF)
            finally:
                sys.settrace(None)
                remove_pending()
                problem = check(steps[0])
                if problem:
                    problems.append((steps[0], problem))

    worker = threading.Thread(target=each_point, daemon=True)
    worker.start()
    worker.join(timeout=timeout)
    assert not worker.is_alive(), f"a run interrupted at step {steps[0]} never returned"
    assert finished, f"the driver stopped at step {steps[0]} (its check raised?)"
    assert not problems, problems[:5]
    return steps[0]
