"""Representations: `vaekit encode` (input order, shapes, formats) and `vaekit probe`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli

import vaekit


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A tiny VAE on a 5-column table with a label column that the CSV carries."""
    folder = tmp_path_factory.mktemp("enc")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = rng.normal(size=(240, 5)) + 3 * y[:, None]
    path = folder / "table.csv"
    lines = ["a,b,c,d,e,kind"] + [",".join(f"{v:.5f}" for v in row) + f",k{k}"
                                  for row, k in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    cfg = quick_config(data=str(path), label_column="kind", epochs=5)
    run = vaekit.train(cfg, out=folder / "run", quiet=True, hooks=[])
    return run, path, x.astype(np.float32), y


def test_encode_keeps_input_order_and_shape(table_run, capsys, tmp_path):
    run, path, x, _ = table_run
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", path, "--out", tmp_path / "z.npy")
    assert code == 0, err
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (len(x), run.model.latent_dim)
    with torch.no_grad():
        want = run.model.encode(run.model.prepare(x)).mean.numpy()
    np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-5)
    # the same rows in another order give the same codes in that order
    order = np.random.default_rng(1).permutation(len(x))
    np.save(tmp_path / "shuffled.npy", x[order])
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", tmp_path / "shuffled.npy",
                           "--out", tmp_path / "zs.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "zs.npy"), z[order], rtol=1e-4, atol=1e-5)


def test_encode_csv_with_logvar(table_run, capsys, tmp_path):
    run, path, x, _ = table_run
    out = tmp_path / "z.csv"
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", path, "--with-logvar", "--out", out)
    assert code == 0, err
    L = run.model.latent_dim
    header = out.read_text().splitlines()[0].split(",")
    assert header == [f"mu_{i}" for i in range(L)] + [f"logvar_{i}" for i in range(L)]
    values = np.loadtxt(out, delimiter=",", skiprows=1)
    with torch.no_grad():
        _q = run.model.encode(run.model.prepare(x))
        mu, logvar = _q.loc, _q.logvar
    np.testing.assert_allclose(values, torch.cat([mu, logvar], 1).numpy(), rtol=1e-4, atol=1e-5)


def test_encode_parquet_needs_pyarrow(table_run, capsys, tmp_path):
    run, path, x, _ = table_run
    out = tmp_path / "z.parquet"
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", path, "--out", out)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install pyarrow" in err
        assert not out.exists()
        return
    assert code == 0, err
    table = pq.read_table(out)
    assert table.num_rows == len(x) and table.column_names[0] == "mu_0"


@pytest.mark.parametrize("shape,words", [((10, 4), ["shape", "(4,)"]), ((10, 6), ["shape"])])
def test_encode_feature_count_must_match(table_run, capsys, tmp_path, shape, words):
    run = table_run[0]
    np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
    code, _, err = run_cli(capsys, "encode", run.dir, "--data", tmp_path / "bad.npy", "--out",
                           tmp_path / "z.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "z.npy").exists()


def test_probe_json_compares_latent_and_raw(table_run, capsys, tmp_path):
    run, path, x, y = table_run
    code, out, err = run_cli(capsys, "probe", run.dir, "--data", path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"latent", "raw"}
    assert result["latent"]["dim"] == run.model.latent_dim and result["raw"]["dim"] == 5
    for m in result.values():
        assert 0 <= m["logreg_accuracy"] <= 1 and 0 <= m["knn_accuracy"] <= 1
        assert -1 <= m["kmeans_ari"] <= 1 and 0 <= m["kmeans_nmi"] <= 1
    assert result["raw"]["logreg_accuracy"] > 0.9  # classes 3 sd apart in every column
    # sample sizes: 240 labelled rows, a stratified 25% held out (sklearn rounds the test part up)
    assert {k: result["latent"][k] for k in ("n_train", "n_test", "n_classes")} == {
        "n_train": 180, "n_test": 60, "n_classes": 3}
    code, table, err = run_cli(capsys, "probe", run.dir, "--data", path, "--test-data", path)
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0] == f"n train {len(x)}, n test {len(x)}, 3 classes"
    assert lines[1].split()[:2] == ["features", "dim"] and len(lines) == 4


def test_probe_needs_labels(table_run, capsys, tmp_path):
    run, _, x, _ = table_run
    np.save(tmp_path / "unlabelled.npy", x)
    code, _, err = run_cli(capsys, "probe", run.dir, "--data", tmp_path / "unlabelled.npy")
    assert code == 2 and "labelled" in err and len(err.strip().splitlines()) == 1


def test_probe_scores_held_out_rows_with_the_classifiers_fitted_by_hand():
    """probe's accuracies are those of scikit-learn pipelines fitted on the training rows and scored
    on the held-out rows (random labels: on the rows they were fitted on, k-NN would score far
    above chance)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vaekit.probe import probe

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(80, 4))
    ya, yb = rng.integers(0, 2, 200), rng.integers(0, 2, 80)
    m = probe({"f": (a, b)}, ya, yb)["f"]
    text = lambda v: np.asarray([str(t) for t in v])  # noqa: E731 (probe compares labels as text)
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(5)).fit(a, text(ya))
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(a, text(ya))
    assert m["knn_accuracy"] == pytest.approx(knn.score(b, text(yb)))
    assert m["logreg_accuracy"] == pytest.approx(logreg.score(b, text(yb)))
    assert knn.score(a, text(ya)) > m["knn_accuracy"] + 0.1  # scoring the fitted rows differs


def test_probe_test_data_is_the_data_scored(table_run, capsys, tmp_path):
    """--test-data with every label moved to the next class: held-out accuracy collapses (it would
    stay near 1 if --test-data were ignored and a split of --data scored instead)."""
    run, path, x, y = table_run
    shifted = tmp_path / "shifted.csv"
    rows = path.read_text().splitlines()
    swap = {"k0": "k1", "k1": "k2", "k2": "k0"}
    shifted.write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + "," + swap[r.rsplit(",", 1)[1]]
                                             for r in rows[1:]]) + "\n")
    code, out, err = run_cli(capsys, "probe", run.dir, "--data", path, "--test-data", shifted,
                             "--json")
    assert code == 0, err
    assert json.loads(out)["raw"]["logreg_accuracy"] < 0.2
