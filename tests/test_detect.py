"""A fitted VAEAnomalyDetector saved and loaded (no pickle), and `vaekit detect`, the detector on
the command line: the same numbers as the Python API, scikit-learn's metrics for AUROC, one-line
errors."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import interrupt_everywhere, run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

from vaekit import VAEAnomalyDetector
from vaekit import detector as detector_module
from vaekit.errors import VaekitError

STEPS = 40  # short fits: these tests check plumbing, not accuracy


def table(seed: int = 0, n: int = 300, d: int = 5, outliers: int = 15):
    """n rows: normal ones from N(0, I), the last `outliers` shifted by 5 in every feature; labels
    1 for those."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[n - outliers:] += 5.0
    return x, (np.arange(n) >= n - outliers).astype(int)


def test_saved_detector_scores_as_the_one_fitted(tmp_path):
    x, _ = table()
    new = table(seed=1)[0]
    for det in (VAEAnomalyDetector(steps=STEPS, random_state=3).fit(x),               # auto
                VAEAnomalyDetector(method="elbo", ensemble=2, steps=STEPS).fit(x),
                VAEAnomalyDetector(method="neighbours", steps=STEPS, contamination=0.05).fit(x)):
        folder = det.save(tmp_path / det.method)
        loaded = VAEAnomalyDetector.load(folder)
        assert loaded.get_params() == det.get_params()
        assert (loaded.method_, loaded.offset_, loaded.n_features_in_) == (
            det.method_, det.offset_, det.n_features_in_)
        assert getattr(loaded, "isolated_", None) == getattr(det, "isolated_", None)
        np.testing.assert_array_equal(loaded.score_samples(new), det.score_samples(new))
        np.testing.assert_array_equal(loaded.predict(new), det.predict(new))
        np.testing.assert_array_equal(loaded.member_scores(new), det.member_scores(new))
        assert len(loaded.models_) == det.ensemble
    assert not (tmp_path / "elbo" / "reference.npz").exists()  # no neighbours: no reference rows


def test_a_loaded_detector_searches_as_many_neighbours_as_when_it_was_fit(tmp_path, monkeypatch):
    """offset_ holds only for the k the detector was fit with: a detector saved under one k and
    loaded where the default is another scores with its own; one saved before detector.json
    recorded k (no "neighbours" entry) was fit with 10, the default then."""
    x, _ = table()
    new = table(seed=1)[0]
    det = VAEAnomalyDetector(method="neighbours", steps=STEPS).fit(x)
    folder = det.save(tmp_path / "det")
    monkeypatch.setattr(detector_module, "NEIGHBOURS", det.neighbours_.n_neighbors + 4)
    loaded = VAEAnomalyDetector.load(folder)
    assert loaded.neighbours_.n_neighbors == det.neighbours_.n_neighbors
    np.testing.assert_array_equal(loaded.score_samples(new), det.score_samples(new))
    meta = folder / "detector.json"
    body = json.loads(meta.read_text())
    del body["fitted"]["neighbours"]
    meta.write_text(json.dumps(body))
    assert VAEAnomalyDetector.load(folder).neighbours_.n_neighbors == 10


def test_a_detector_saved_before_the_kl_warm_up_loads_as_fit_without_one(tmp_path):
    """detector.json of a detector saved before kl_warmup_steps was a parameter lacks it: its fit
    had no warm-up, so get_params says 0, not today's default; its scores are unchanged."""
    x, _ = table()
    det = VAEAnomalyDetector(method="elbo", steps=STEPS, kl_warmup_steps=0).fit(x)
    folder = det.save(tmp_path / "det")
    meta = folder / "detector.json"
    body = json.loads(meta.read_text())
    assert body["params"]["kl_warmup_steps"] == 0
    del body["params"]["kl_warmup_steps"]
    meta.write_text(json.dumps(body))
    loaded = VAEAnomalyDetector.load(folder)
    assert loaded.get_params() == det.get_params()
    assert VAEAnomalyDetector().kl_warmup_steps == 50
    np.testing.assert_array_equal(loaded.score_samples(x), det.score_samples(x))


def test_the_docstring_states_the_neighbours_the_detector_searches():
    """help(VAEAnomalyDetector) gives the k and the reference size the code uses (it said 10 after
    the default became 3)."""
    doc = " ".join(VAEAnomalyDetector.__doc__.split())
    assert f"to its {detector_module.NEIGHBOURS} nearest training rows" in doc
    assert f"up to {detector_module.MAX_REFERENCE:,} of them" in doc
    assert f"default {detector_module.KL_WARMUP_STEPS}:" in doc
    assert "{k}" not in doc and "{reference}" not in doc and "{warmup}" not in doc


def test_the_detector_imports_without_docstrings():
    """python -OO drops docstrings: filling in the defaults must not fail on the missing one."""
    done = subprocess.run([sys.executable, "-OO", "-c", "import vaekit.detector"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_save_replaces_a_saved_detector_and_refuses_other_folders(tmp_path):
    x, _ = table()
    first = VAEAnomalyDetector(method="elbo", steps=STEPS, random_state=0).fit(x)
    second = VAEAnomalyDetector(method="neighbours", steps=STEPS, random_state=1).fit(x)
    first.save(tmp_path / "det")
    second.save(tmp_path / "det")
    assert VAEAnomalyDetector.load(tmp_path / "det").method_ == "neighbours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]  # no temp folder left
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(VaekitError, match="not a saved detector"):
        first.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_failed_save_leaves_the_saved_detector_as_it_was(tmp_path, monkeypatch):
    x, _ = table()
    old = VAEAnomalyDetector(method="elbo", steps=STEPS, random_state=0).fit(x)
    old.save(tmp_path / "det")
    before = {p.name: p.read_bytes() for p in (tmp_path / "det").iterdir()}

    def full_disk(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(detector_module, "save_torch", full_disk)
    new = VAEAnomalyDetector(method="elbo", steps=STEPS, random_state=5).fit(x)
    with pytest.raises(OSError):
        new.save(tmp_path / "det")
    assert {p.name: p.read_bytes() for p in (tmp_path / "det").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]


# Left behind by the interrupt itself: an open file object, and the repr of a Path it cut short.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_at_any_point_of_a_save_leaves_the_old_or_new_detector(tmp_path):
    """save() interrupted at each of its bytecode boundaries in turn (what it writes stubbed to one
    file, so that every boundary can be tried), then the cleanup every command runs: the folder
    holds the detector saved before or the new one, whole, and nothing else is left beside it
    (but the old folder, while its removal was under way, once the new one is in place)."""
    dest = tmp_path / "det"

    def reset():
        for p in tmp_path.iterdir():
            if p != dest:
                shutil.rmtree(p)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        (dest / "detector.json").write_text("old")
    reset()
    det = VAEAnomalyDetector()
    det.model_ = "fitted"  # what check_is_fitted looks for
    det._write = lambda folder: (folder / "detector.json").write_text("new")

    def check(step):
        content = (dest / "detector.json").read_text() if dest.is_dir() else None
        others = sorted(p.name for p in tmp_path.iterdir() if p != dest)
        ok = content in ("old", "new") and sorted(p.name for p in dest.iterdir()) == [
            "detector.json"] and all(n.startswith(".det.old-") for n in others) and (
            not others or content == "new")
        reset()
        return None if ok else (content, others)

    assert interrupt_everywhere(lambda: det.save(dest), check) > 30


@pytest.mark.parametrize("damage,words", [
    (lambda d: (d / "detector.json").write_text("{not json"), "corrupt"),
    (lambda d: (d / "detector.json").write_text(json.dumps({"format": "other"})), "corrupt"),
    (lambda d: (d / "detector.json").unlink(), "no detector.json"),
    (lambda d: (d / "model-0.pt").write_bytes(b"garbage"), "corrupt"),
    (lambda d: (d / "model-0.pt").unlink(), "lacks model-0.pt"),
    (lambda d: (d / "reference.npz").write_bytes(b"PK\x03\x04garbage"), "corrupt"),
    (lambda d: np.savez(d / "reference.npz", center=np.zeros(2), scale=np.ones(2),
                        reference=np.zeros((4, 2)), rows=np.arange(4)), "another shape"),
])
def test_load_of_a_damaged_folder_is_one_clear_error(tmp_path, damage, words):
    x, _ = table()
    VAEAnomalyDetector(method="neighbours", steps=STEPS).fit(x).save(tmp_path / "det")
    damage(tmp_path / "det")
    with pytest.raises(VaekitError, match=words):
        VAEAnomalyDetector.load(tmp_path / "det")


def read_csv(path):
    rows = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    return rows


def test_cli_fits_scores_and_flags_as_the_python_detector(tmp_path, capsys):
    x, y = table()
    np.savez(tmp_path / "fit.npz", X=x, y=y)
    code, out, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npz", "--steps", STEPS,
                             "--seed", 2, "--contamination", 0.05, "--out", tmp_path / "s.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "s.csv")
    det = VAEAnomalyDetector(steps=STEPS, random_state=2, contamination=0.05).fit(x)
    np.testing.assert_allclose(rows["score"], -det.score_samples(x), rtol=1e-6)
    assert set(rows["method"]) == {det.method_}
    np.testing.assert_array_equal(rows["label"], y)
    np.testing.assert_array_equal(rows["flagged"], det.predict(x) == -1)
    auroc = roc_auc_score(y, rows["score"])
    ap = average_precision_score(y, rows["score"])
    assert f"AUROC {auroc:.4f}  average precision {ap:.4f} (15 anomalies in 300)" in out
    assert f"{int(rows['flagged'].sum())} of 300 flagged" in out
    assert f"score {det.method_}" in out and f"elbo {det.isolated_['elbo']:.3f}" in out


def test_cli_reads_float_labels_of_0_and_1_as_the_anomaly_labels(tmp_path, capsys):
    """Labels stored as floats 0.0/1.0 (numpy's and pandas' default dtype) say which rows are
    anomalies as 0/1 integers do: AUROC and average precision are printed. (They were compared
    as text, "0.0" and "1.0" were not "0" and "1", and the metrics were left out in silence.)"""
    x, y = table()
    np.savez(tmp_path / "fit.npz", X=x, y=y.astype(np.float64))
    code, out, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npz", "--steps", STEPS,
                             "--out", tmp_path / "s.csv")
    assert code == 0, err
    scores = read_csv(tmp_path / "s.csv")["score"]
    auroc, ap = roc_auc_score(y, scores), average_precision_score(y, scores)
    assert f"AUROC {auroc:.4f}  average precision {ap:.4f} (15 anomalies in 300)" in out


@pytest.mark.parametrize("shares, n, close", [
    ((5 / 77, 6 / 77), 77, True),         # one row apart of 77: se 0.0415 > 0.013
    ((0.070, 0.088), 2500, False),        # se 0.0076 < 0.018
    ((2 / 960, 2 / 960), 960, True),      # a tie
    ((0.0, 0.0), 50, True),               # neither sets a row apart: the choice rests on nothing
])
def test_close_call_is_a_difference_within_one_standard_error(shares, n, close):
    det = VAEAnomalyDetector(steps=STEPS).fit(table()[0])
    det.isolated_ = {"elbo": shares[0], "neighbours": shares[1]}
    det.reference_rows_ = np.arange(n)
    assert det.close_call() is close
    with pytest.raises(ValueError, match="auto"):
        VAEAnomalyDetector(method="elbo", steps=STEPS).fit(table()[0]).close_call()


@pytest.mark.parametrize("close", [True, False])
def test_cli_says_when_autos_choice_was_a_close_call(tmp_path, capsys, monkeypatch, close):
    x, _ = table()
    np.save(tmp_path / "fit.npy", x)
    monkeypatch.setattr(VAEAnomalyDetector, "close_call", lambda self: close)
    code, out, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npy", "--steps", STEPS,
                             "--out", tmp_path / "s.csv")
    assert code == 0, err
    assert ("a close call" in out + err) is close


def test_cli_kl_warmup_steps_reaches_the_detector(tmp_path, capsys):
    """--kl-warmup-steps 0 fits as VAEAnomalyDetector(kl_warmup_steps=0): the same scores, and
    not those of the default warm-up."""
    x, _ = table()
    np.save(tmp_path / "fit.npy", x)
    code, _, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npy", "--steps", STEPS,
                           "--method", "elbo", "--kl-warmup-steps", 0, "--out", tmp_path / "s.csv")
    assert code == 0, err
    scores = read_csv(tmp_path / "s.csv")["score"]
    plain = VAEAnomalyDetector(steps=STEPS, method="elbo", kl_warmup_steps=0).fit(x)
    warm = VAEAnomalyDetector(steps=STEPS, method="elbo").fit(x)
    np.testing.assert_allclose(scores, -plain.score_samples(x), rtol=1e-6)
    assert not np.allclose(scores, -warm.score_samples(x), rtol=1e-3)


def test_cli_save_then_load_scores_new_rows_the_same(tmp_path, capsys):
    x, _ = table()
    new, labels = table(seed=7, n=120, outliers=6)
    np.save(tmp_path / "fit.npy", x)
    np.savez(tmp_path / "new.npz", X=new, y=labels)
    code, _, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npy", "--test-data",
                           tmp_path / "new.npz", "--steps", STEPS, "--save", tmp_path / "det",
                           "--out", tmp_path / "a.csv")
    assert code == 0, err
    code, out, err = run_cli(capsys, "detect", "--load", tmp_path / "det", "--data",
                             tmp_path / "new.npz", "--out", tmp_path / "b.csv")
    assert code == 0, err
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    loaded = VAEAnomalyDetector.load(tmp_path / "det")
    np.testing.assert_allclose(read_csv(tmp_path / "b.csv")["score"], -loaded.score_samples(new),
                               rtol=1e-6)
    assert "6 anomalies in 120" in out


@pytest.mark.parametrize("extra,words", [
    (["--contamination", "0.5"], ["--contamination", "(0, 0.5)"]),
    (["--steps", "0"], ["--steps", "at least 1"]),
    (["--ensemble", "0"], ["--ensemble"]),
    (["--kl-warmup-steps", "-1"], ["--kl-warmup-steps", "at least 0"]),
    (["--load", "DET", "--kl-warmup-steps", "10"], ["--kl-warmup-steps", "already fit"]),
    (["--load", "DET", "--method", "elbo"], ["--method", "already fit"]),
    (["--load", "DET", "--test-data", "DATA"], ["--test-data", "already fit"]),
    (["--load", "NOWHERE"], ["--load", "no such folder"]),
    (["--save", "DATA"], ["not a saved detector"]),
])
def test_cli_refuses_bad_options_in_one_line(tmp_path, capsys, extra, words):
    x, _ = table()
    np.save(tmp_path / "fit.npy", x)
    if "DET" in extra:
        VAEAnomalyDetector(method="elbo", steps=STEPS).fit(x).save(tmp_path / "det")
    names = {"DET": tmp_path / "det", "DATA": tmp_path / "fit.npy", "NOWHERE": tmp_path / "none"}
    code, _, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npy",
                           *[names.get(a, a) for a in extra])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_cli_refuses_rows_of_another_width_and_nan(tmp_path, capsys):
    x, _ = table()
    VAEAnomalyDetector(method="elbo", steps=STEPS).fit(x).save(tmp_path / "det")
    np.save(tmp_path / "narrow.npy", x[:, :3])
    code, _, err = run_cli(capsys, "detect", "--load", tmp_path / "det", "--data",
                           tmp_path / "narrow.npy")
    assert code == 2 and "3 features per row" in err and "fit on 5" in err, err
    np.save(tmp_path / "fit.npy", x)
    code, _, err = run_cli(capsys, "detect", "--data", tmp_path / "fit.npy", "--test-data",
                           tmp_path / "narrow.npy", "--save", tmp_path / "new")
    assert code == 2 and "3 features per row" in err, err
    assert not (tmp_path / "new").exists()  # refused before the fit, nothing saved
    x[4, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    code, _, err = run_cli(capsys, "detect", "--data", tmp_path / "nan.npy")
    assert code == 2 and "NaN" in err and len(err.strip().splitlines()) == 1, err


def test_the_detectors_float64_model_samples_as_its_float32_copy():
    """The detector keeps its models in float64 (scores that do not depend on the batch); their
    verbs still work: sample() drew float32 noise and failed on them."""
    import copy

    import torch
    x, _ = table()
    det = VAEAnomalyDetector(method="elbo", steps=STEPS).fit(x)
    single = copy.deepcopy(det.model_).float()
    got = det.model_.sample(4, generator=torch.Generator().manual_seed(3))
    want = single.sample(4, generator=torch.Generator().manual_seed(3))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)

