"""save_pretrained / load: a self-describing folder (safetensors, JSON, model card) that loads
without unpickling and without the training data, and gives the run's very outputs."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import low_rank_table, quick_config, run_cli

import vaekit
from vaekit.errors import VaekitError
from vaekit.pretrained import Detector, detector_of, is_pretrained

pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A 2-epoch gaussian run on a 5-column table, its data file in its own folder."""
    root = tmp_path_factory.mktemp("pretrained")
    x = low_rank_table()
    np.save(root / "table.npy", x)
    run = vaekit.train(quick_config(data=str(root / "table.npy"), epochs=2), out=root / "run",
                       quiet=True, command=["vaekit", "train", "--data", "table.npy"])
    return run, x


def test_round_trip_gives_the_same_outputs_without_the_training_data(table_run, tmp_path):
    run, x = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "shared")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                         "model.safetensors", "summary.json"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)  # the folder alone, away from the run and its data
    data = run.dir.parent / "table.npy"
    data.rename(data.with_suffix(".away"))  # the training data gone while it loads
    try:
        loaded = vaekit.load(moved)
    finally:
        data.with_suffix(".away").rename(data)
    assert isinstance(loaded, vaekit.Run) and is_pretrained(moved)
    assert loaded.model.config == run.model.config and not loaded.model.training
    for a, b in zip(vaekit.encode(run, x, logvar=True), vaekit.encode(loaded, x, logvar=True), strict=True):
        np.testing.assert_array_equal(a, b)
    z = np.random.default_rng(0).normal(size=(6, run.model.latent_dim))
    np.testing.assert_array_equal(vaekit.decode(run, z), vaekit.decode(loaded, z))
    for method in ("kl", "elbo"):
        np.testing.assert_array_equal(vaekit.score(run, x, method), vaekit.score(loaded, x, method))
    assert loaded.summary == run.summary  # test metrics travel with the weights


def test_config_json_and_model_card_describe_the_run(table_run, tmp_path):
    run, x = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "card")
    config = json.loads((folder / "config.json").read_text())
    # the preprocessing is the training rows' standardization, written out (the oracle: numpy)
    keep = vaekit.load(run.dir).model  # run folder load still works through vaekit.load
    assert config["library"] == "vaekit" and config["likelihood"] == "gaussian"
    assert config["data_shape"] == [5] and config["image"] is False and config["detector"] is None
    np.testing.assert_allclose(config["preprocessing"]["shift"], keep.shift.numpy(), rtol=1e-7)
    np.testing.assert_allclose(config["preprocessing"]["scale"], keep.scale.numpy(), rtol=1e-7)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vaekit\ntags:\n- vaekit\n")
    assert "vaekit train --data table.npy" in card  # the command from manifest.json
    elbo = run.summary["test"]["elbo"]
    assert f"| elbo | {elbo:.4f} |" in card  # the test metrics from summary.json


def test_loading_never_unpickles(table_run, tmp_path, monkeypatch):
    run, x = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "nopickle")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = vaekit.load(folder)
    np.testing.assert_array_equal(vaekit.encode(loaded, x[:7]), vaekit.encode(run, x[:7]))


def test_image_run_keeps_its_scaling(tmp_path):
    run = vaekit.train(quick_config(data="digits", epochs=1, latent_dim=3), out=tmp_path / "run",
                       quiet=True)
    folder = vaekit.save_pretrained(run, tmp_path / "digits")
    config = json.loads((folder / "config.json").read_text())
    assert config["image"] is True and config["data_shape"] == [1, 8, 8]
    assert config["preprocessing"]["scale"] == 16.0 and config["preprocessing"]["shift"] == 0.0
    assert config["label_names"] == run.manifest["data"]["label_names"] and config["posterior"] == "gaussian"
    images = np.random.default_rng(0).integers(0, 17, size=(9, 8, 8)).astype(np.float64)
    loaded = vaekit.load(folder)
    np.testing.assert_array_equal(vaekit.reconstruct(run, images), vaekit.reconstruct(loaded, images))


def test_detector_threshold_travels_with_the_model(table_run, tmp_path):
    run, x = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "det", method="kl", fpr=0.1)
    det = detector_of(vaekit.load(folder))
    assert det is not None and det.method == "kl" and "fpr 0.1" in det.rule
    # the threshold is a validation score with at most 10% of the validation scores above it
    x_val = run.model.restore(vaekit.data.load_for_model(run.model, run.config, None, "val")[0])
    val = vaekit.score(run, x_val.numpy(), "kl")
    assert np.isclose(val, det.threshold, rtol=1e-6).any() and (val > det.threshold).mean() <= 0.1
    assert "anomaly-detection" in (folder / "README.md").read_text()
    assert detector_of(run) is None  # a run folder has none
    given = Detector("elbo", 12.5, "by hand")
    assert detector_of(vaekit.load(vaekit.save_pretrained(run, tmp_path / "d2", detector=given))) == given


@pytest.mark.parametrize("damage, expected", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:200]),
     "model.safetensors is corrupt or not a safetensors file"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 5), "model.safetensors is corrupt"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json is corrupt"),
    (lambda f: (f / "config.json").unlink(), "is not a vaekit model folder (no config.json)"),
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text().replace(
        '"format": 1', '"format": "one"')), "config.json is corrupt"),
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text().replace(
        '"latent_dim": 4', '"latent_dim": 3')), "does not match"),
])
def test_damaged_folders_are_one_line(table_run, tmp_path, capsys, damage, expected):
    run, _ = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "broken")
    damage(folder)
    with pytest.raises(VaekitError, match="save the model again|save_pretrained") as e:
        vaekit.load(folder)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_truncated_weights_are_one_line_in_the_cli(table_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    run, _ = table_run
    folder = vaekit.save_pretrained(run, tmp_path / "cut")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, out, err = run_cli(capsys, "export", folder, "--format", "onnx", "--part", "encoder",
                             "--out", tmp_path / "e.onnx")
    assert code == 2 and err.count("\n") == 1 and "model.safetensors is corrupt" in err
    assert not (tmp_path / "e.onnx").exists()


def test_save_refuses_a_folder_holding_other_files(table_run, tmp_path):
    run, _ = table_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(VaekitError, match="already holds other files"):
        vaekit.save_pretrained(run, tmp_path / "busy")
    with pytest.raises(VaekitError, match="the run folder itself"):
        vaekit.save_pretrained(run, run.dir)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
