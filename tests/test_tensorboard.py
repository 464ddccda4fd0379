"""`vaekit train --tensorboard`: the event files hold the metrics.jsonl scalars and the pictures."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import quick_config, run_cli

from vaekit.train import train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install 'vaekit[tensorboard]')")


def read_events(log_dir):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    return acc.Reload()


def test_event_files_hold_the_epoch_scalars_and_images(tmp_path, tiny_images):
    run = tmp_path / "run"
    train(quick_config(data=str(tiny_images), tensorboard=True), out=run, quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = read_events(run / "tensorboard")
    tags = acc.Tags()
    for key, tag in (("train_elbo", "train/elbo"), ("train_kl", "train/kl"),
                     ("val_elbo", "val/elbo"), ("val_reconstruction", "val/reconstruction"),
                     ("val_kl", "val/kl"), ("val_active_units", "val/active_units"),
                     ("beta", "beta")):
        assert tag in tags["scalars"], tag
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["epoch"] for r in rows]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows], rtol=1e-6)
    for d in range(4):  # kl_per_dim: one scalar series per latent dimension
        values = [e.value for e in acc.Scalars(f"val/kl_per_dim/{d}")]
        np.testing.assert_allclose(values, [r["val_kl_per_dim"][d] for r in rows], rtol=1e-6)
    for name in ("samples", "reconstructions"):
        images = acc.Images(name)
        assert [e.step for e in images] == [r["epoch"] for r in rows]
        # grids of 8x8 images, each enlarged to >= 64 px (nearest neighbour): >= 8 tiles a row
        assert images[-1].width >= 8 * 64 and images[-1].height >= 64


def test_tabular_run_logs_scalars_without_images(tmp_path, tiny_table):
    run = tmp_path / "run"
    train(quick_config(data=str(tiny_table), tensorboard=True, epochs=2), out=run, quiet=True)
    tags = read_events(run / "tensorboard").Tags()
    assert "val/elbo" in tags["scalars"] and tags["images"] == []


def test_missing_tensorboard_is_one_line_with_the_install_command(tmp_path, tiny_images, capsys,
                                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if absent
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", tiny_images, "--epochs", "1",
                             "--tensorboard", "--out", run)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'vaekit[tensorboard]'" in err
    assert not (run / "config.yaml").exists()  # failed before writing a half run folder
