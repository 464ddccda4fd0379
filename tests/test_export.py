"""`vaekit export`: ONNX / TorchScript files that take raw data (the preprocessing inside the graph),
any batch size, and give vaekit's numbers: the encoder's posterior, the decoder's mean, and the
deterministic scores against torch.distributions written out here."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import low_rank_table, quick_config, run_cli
from torch.distributions import Bernoulli, Laplace, Normal

import vaekit
from vaekit.errors import VaekitError
from vaekit.export import export

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An MLP gaussian run on a 5-column table and a conv bernoulli run on 16x16 grey images."""
    root = tmp_path_factory.mktemp("export")
    table = low_rank_table()
    np.save(root / "table.npy", table)
    rng = np.random.default_rng(2)
    images = np.zeros((120, 16, 16), np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, 12, size=(120, 2))):
        images[i, r:r + 4, c:c + 4] = 255
    np.save(root / "images.npy", images)
    torch.manual_seed(0)
    table_run = vaekit.train(quick_config(data=str(root / "table.npy"), epochs=2), out=root / "t",
                             quiet=True)
    image_run = vaekit.train(quick_config(data=str(root / "images.npy"), epochs=1, channels=[4, 8],
                                          batch_size=64), out=root / "i", quiet=True)
    assert image_run.model.config.backbone == "conv" and image_run.config.model.likelihood == "bernoulli"
    return {"table": (table_run, table),
            "image": (image_run, images[:, None].astype(np.float32))}


def runner(path, fmt):
    """The exported file as a function of numpy arrays -> list of numpy arrays."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated in 2.13
        module = torch.jit.load(str(path))

    def run(x):
        out = module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
    return run


def scores_by_hand(run, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KL(q || N(0, I)) and -log p(x | z = mu) from torch.distributions, the preprocessing and
    its log-Jacobian written out (gaussian: standardized; bernoulli: pixels / 255, a pmf)."""
    m = run.model
    xm = (torch.from_numpy(x).reshape(len(x), -1) - m.shift) / m.scale
    with torch.no_grad():
        mu, logvar = m.encoder(xm.reshape(len(x), *m.input_shape)).chunk(2, -1)
        q = Normal(mu, torch.exp(0.5 * logvar))
        kl = torch.distributions.kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        params = m.decoder(mu).reshape(len(x), -1)
        if m.config.likelihood == "bernoulli":
            log_px = Bernoulli(logits=params, validate_args=False).log_prob(xm).sum(-1)
        else:
            sigma = m.likelihood.log_sigma.clamp(min=np.log(1e-3)).exp()
            log_px = Normal(params, sigma).log_prob(xm).sum(-1) - torch.log(m.scale).sum()
    return kl.numpy(), -log_px.numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["table", "image"])
def test_exported_parts_give_vaekits_outputs_at_any_batch_size(runs, kind, fmt, tmp_path):
    run, x = runs[kind]
    files = {part: export(run.model, part, fmt, tmp_path / f"{part}.{fmt}")
             for part in ("encoder", "decoder", "scorer")}
    encoder, decoder, scorer = (runner(files[p], fmt) for p in ("encoder", "decoder", "scorer"))
    for b in (1, 7):
        rows = x[10:10 + b]  # raw values: feature values / pixel levels 0..255
        mean, logvar = encoder(rows)
        want_mean, want_logvar = vaekit.encode(run, rows, logvar=True)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logvar, want_logvar, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(decoder(want_mean)[0], vaekit.decode(run, want_mean), rtol=1e-5,
                                   atol=1e-5 * float(np.abs(x).max()))
        kl, rec = scorer(rows)
        np.testing.assert_allclose(kl, vaekit.score(run, rows, "kl"), rtol=1e-5, atol=1e-6)
        kl_hand, rec_hand = scores_by_hand(run, rows)
        np.testing.assert_allclose(kl, kl_hand, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rec, rec_hand, rtol=1e-5, atol=1e-4)
        assert kl.shape == rec.shape == (b,)


def test_an_autoencoders_reconstruction_is_the_registry_score(runs, tmp_path):
    """For a point-mass posterior the `reconstruction` score of anomaly.SCORES is deterministic:
    the exported scorer must give exactly its numbers."""
    _, x = runs["table"]
    np.save(tmp_path / "t.npy", x)
    ae = vaekit.train(quick_config(data=str(tmp_path / "t.npy"), epochs=1, model="ae"),
                      out=tmp_path / "ae", quiet=True)
    path = export(ae.model, "scorer", "onnx", tmp_path / "ae.onnx")
    kl, rec = runner(path, "onnx")(x[:7])
    np.testing.assert_allclose(rec, vaekit.score(ae, x[:7], "reconstruction"), rtol=1e-5)
    np.testing.assert_array_equal(kl, np.zeros(7, np.float32))
    (code,) = runner(export(ae.model, "encoder", "onnx", tmp_path / "e.onnx"), "onnx")(x[:3])
    np.testing.assert_allclose(code, vaekit.encode(ae, x[:3]), rtol=1e-5, atol=1e-6)


def test_cli_writes_the_file_and_refuses_sampled_scores_in_one_line(runs, tmp_path, capsys):
    run, x = runs["table"]
    code, out, err = run_cli(capsys, "export", run.dir, "--part", "scorer", "--out",
                             tmp_path / "s.onnx")
    assert code == 0 and "wrote the scorer" in out and (tmp_path / "s.onnx").is_file()
    for method in ("elbo", "reconstruction", "iw-nll"):
        code, out, err = run_cli(capsys, "export", run.dir, "--part", "scorer", "--method", method,
                                 "--out", tmp_path / "x.onnx")
        assert code == 2 and err.count("\n") == 1 and "draws z at random and is not exported" in err
    assert not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]  # no temp file left behind


def test_pretrained_folder_exports_the_same_graph(runs, tmp_path):
    run, x = runs["table"]
    folder = vaekit.save_pretrained(run, tmp_path / "shared")
    a = runner(export(run.model, "scorer", "onnx", tmp_path / "a.onnx"), "onnx")(x[:5])
    b = runner(export(vaekit.load(folder).model, "scorer", "onnx", tmp_path / "b.onnx"), "onnx")(x[:5])
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.fixture(scope="module")
def dl_run(tmp_path_factory):
    """A conv run on 8-bit RGB 5x5 images: the discretized-logistic likelihood (a pmf)."""
    root = tmp_path_factory.mktemp("dl")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 3, 5, 5)).astype(np.uint8)
    np.save(root / "c.npy", x)
    run = vaekit.train(quick_config(data=str(root / "c.npy"), epochs=1, mixtures=2, batch_size=50),
                       out=root / "c", quiet=True)
    assert run.config.model.likelihood == "discretized-logistic"
    return run, x.astype(np.float32)


def test_a_discretized_logistic_scorer_exports_at_any_batch_size(dl_run, tmp_path):
    """Its log-pmf reshapes by the batch's own size, so the TorchScript scorer keeps a dynamic batch
    and gives -log p(x | z = mean) as the likelihood computes it at the posterior mean (levels as
    given: a pmf needs no Jacobian). The ONNX exporter freezes a size in that graph: checked in
    onnxruntime and refused in one line, nothing written."""
    run, x = dl_run
    scorer = runner(export(run.model, "scorer", "torchscript", tmp_path / "dl.pt"), "torchscript")
    m = run.model
    for b in (1, 7):
        kl, rec = scorer(x[:b])
        xm = torch.from_numpy(x[:b]).reshape(b, -1) / 255.0
        with torch.no_grad():
            q = m.posterior(m.encoder(xm.reshape(b, *m.input_shape)))
            want = -m.likelihood.log_prob(xm.reshape(b, *m.input_shape), m.decoder_params(q.mean))
        np.testing.assert_allclose(rec, want.numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(kl, vaekit.score(run, x[:b], "kl"), rtol=1e-5, atol=1e-6)
    with pytest.raises(VaekitError, match="cannot be exported to ONNX with a dynamic batch size"):
        export(run.model, "scorer", "onnx", tmp_path / "dl.onnx")
    assert not (tmp_path / "dl.onnx").exists()


def test_a_graph_that_would_freeze_its_batch_is_refused(dl_run, tmp_path, monkeypatch):
    """A part whose trace would freeze the example batch (here: a log-pmf that reshapes by a
    Python int, as len(x) does under tracing) is refused in one line and nothing is written;
    the decoder, which does not call it, still exports."""
    run, x = dl_run
    lik = run.model.likelihood
    original = type(lik).log_prob
    monkeypatch.setattr(type(lik), "log_prob",
                        lambda self, xs, params: original(self, xs, params).reshape(len(xs)))
    with pytest.raises(VaekitError, match="cannot be exported with a dynamic batch size"):
        export(run.model, "scorer", "onnx", tmp_path / "frozen.onnx")
    assert not (tmp_path / "frozen.onnx").exists()
    z = np.random.default_rng(1).normal(size=(7, 4)).astype(np.float32)
    got = runner(export(run.model, "decoder", "onnx", tmp_path / "d.onnx"), "onnx")(z)[0]
    np.testing.assert_allclose(got, vaekit.decode(run, z), rtol=1e-5, atol=1e-3)


def test_a_laplace_scorer_gives_the_laplace_reconstruction_in_data_units(tmp_path):
    """laplace-fixed: the ONNX scorer's -log p(x | z = mu) is torch.distributions' Laplace of
    scale --sigma in standardized units, minus the standardization's log-Jacobian."""
    np.save(tmp_path / "t.npy", low_rank_table())
    run = vaekit.train(quick_config(data=str(tmp_path / "t.npy"), epochs=1,
                                    likelihood="laplace-fixed", sigma=0.5), out=tmp_path / "r",
                       quiet=True)
    x = low_rank_table()[:7]
    kl, rec = runner(export(run.model, "scorer", "onnx", tmp_path / "s.onnx"), "onnx")(x)
    m = run.model
    xm = (torch.from_numpy(x) - m.shift) / m.scale
    with torch.no_grad():
        mu = m.encoder(xm).chunk(2, -1)[0]
        want = -(Laplace(m.decoder(mu), 0.5).log_prob(xm).sum(-1) - torch.log(m.scale).sum())
    np.testing.assert_allclose(rec, want.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kl, vaekit.score(run, x, "kl"), rtol=1e-5, atol=1e-6)


def test_missing_onnx_names_the_extra(runs, tmp_path, monkeypatch):
    run, _ = runs["table"]
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(VaekitError, match=r"pip install 'vaekit\[export\]'"):
        export(run.model, "encoder", "onnx", tmp_path / "e.onnx")


def test_a_scorer_without_a_closed_form_kl_is_refused_in_one_line(tmp_path, capsys):
    """A mixture prior's KL is estimated from draws: the scorer, which holds the closed form, is
    refused in one line naming the parts (it pointed at the elbo score, which export refuses);
    the encoder still exports."""
    np.save(tmp_path / "t.npy", low_rank_table())
    run = vaekit.train(quick_config(data=str(tmp_path / "t.npy"), epochs=1, prior="mog"),
                       out=tmp_path / "mog", quiet=True)
    code, out, err = run_cli(capsys, "export", run.dir, "--part", "scorer", "--out", tmp_path / "s.onnx")
    assert code == 2 and err.count("\n") == 1 and "gaussian posterior and mog prior" in err, err
    assert not (tmp_path / "s.onnx").exists()
    code, out, err = run_cli(capsys, "export", run.dir, "--part", "encoder", "--out", tmp_path / "e.onnx")
    assert code == 0 and (tmp_path / "e.onnx").is_file(), err


@pytest.mark.parametrize("posterior", ["iaf", "layered"])
def test_an_encoder_without_a_posterior_variance_exports_its_mean_alone(tmp_path, posterior):
    """An iaf or layered q(z|x) has no per-dimension variance: the file gives `mean` (vaekit's
    posterior mean) and no `logvar` (it had given the encoder's base log-variance as q's)."""
    np.save(tmp_path / "t.npy", low_rank_table())
    run = vaekit.train(quick_config(data=str(tmp_path / "t.npy"), epochs=1, posterior=posterior,
                                    flow_steps=1, flow_hidden=8), out=tmp_path / posterior,
                       quiet=True)
    x = low_rank_table()[:6]
    with pytest.raises(VaekitError, match="no variance"):
        vaekit.encode(run, x, logvar=True)
    for fmt in ("onnx", "torchscript"):
        outputs = runner(export(run.model, "encoder", fmt, tmp_path / f"e.{fmt}"), fmt)(x)
        assert len(outputs) == 1
        np.testing.assert_allclose(outputs[0], vaekit.encode(run, x), rtol=1e-5, atol=1e-5)
    names = [o.name for o in ort.InferenceSession(str(tmp_path / "e.onnx")).get_outputs()]
    assert names == ["mean"]
