"""Latent-space manipulation and generation: interpolation, traversal, manifold, attribute vectors,
sample; from Python and from the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from scipy.stats import norm
from test_pictures import assert_close_levels, decoder_mean, levels, posterior_mean, read_tiles

import vaekit
from vaekit import latent
from vaekit.data import load_for_model
from vaekit.evaluate import evaluate


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny VAE on 8x8 squares (labels 0/1), its data file, and the model-space data; trained
    enough (about 150 steps) that its decoder follows z, so pictures of paths differ along them."""
    from conftest import tiny_images

    folder = tmp_path_factory.mktemp("img")
    data = tiny_images.__wrapped__(folder)
    run = vaekit.train(quick_config(data=str(data), epochs=15, batch_size=16, lr=3e-3, threads=1),
                       out=folder / "run", quiet=True, hooks=[])
    x, y = load_for_model(run.model, run.config, str(data), "test")
    return run, data, x, y


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from conftest import tiny_table

    folder = tmp_path_factory.mktemp("tab")
    data = tiny_table.__wrapped__(folder)
    run = vaekit.train(quick_config(data=str(data), latent_dim=2), out=folder / "run", quiet=True,
                       hooks=[])
    return run, data


def test_interpolation_endpoints_decode_the_endpoint_encodings(image_run):
    run, _, x, _ = image_run
    _q = latent.encode(run.model, x[[3, 7]])
    mu, _ = _q.mean, _q.variance.log()
    ends = latent.decode(run.model, mu)
    for path in latent.PATHS:
        out = latent.interpolate(run.model, mu[0], mu[1], steps=5, path=path)
        assert out.shape == (5, *run.model.input_shape)
        torch.testing.assert_close(out[0], ends[0])
        torch.testing.assert_close(out[-1], ends[1])
    middle = latent.interpolate(run.model, mu[0], mu[1], steps=3)[1]
    torch.testing.assert_close(middle, latent.decode(run.model, (mu[:1] + mu[1:]) / 2)[0])


def test_slerp_follows_the_great_circle():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    z = latent.slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    # closed form for orthogonal a, b: sin((1-t) pi/2) a + sin(t pi/2) b
    torch.testing.assert_close(z[1], (a + b) / np.sqrt(2))
    torch.testing.assert_close(z[[0, 2]], torch.stack([a, b]))
    parallel = latent.slerp(a, 3 * a, torch.tensor([0.5]))  # degenerate: the straight line
    torch.testing.assert_close(parallel[0], 2 * a)


def test_traversal_changes_only_the_chosen_dimension(image_run):
    run, _, x, _ = image_run
    base = latent.encode(run.model, x[:1]).mean[0]
    values = torch.linspace(-2, 2, 4)
    codes = latent.traversal_codes(base, [2, 0], values).reshape(2, 4, -1)
    for row, d in enumerate([2, 0]):
        other = [k for k in range(run.model.latent_dim) if k != d]
        torch.testing.assert_close(codes[row][:, other], base[other].expand(4, -1))
        torch.testing.assert_close(codes[row][:, d], values)
    out = latent.traverse(run.model, base, [2, 0], values)
    assert out.shape == (8, *run.model.input_shape)
    torch.testing.assert_close(out, latent.decode(run.model, codes.reshape(8, -1)))


def test_dims_by_kl_orders_by_the_evaluated_kl(image_run):
    run, _, x, _ = image_run
    kl = evaluate(run.model, x)["kl_per_dim"]
    order = latent.dims_by_kl(run.model, x)
    assert sorted(order) == list(range(run.model.latent_dim))
    assert [kl[d] for d in order] == sorted(kl, reverse=True)


def test_manifold_grid_is_the_priors_quantiles():
    z = latent.manifold_codes(3, 4, dims=(0, 2))
    q = norm.ppf((np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(z[:4, 0].numpy(), q, rtol=1e-5)  # columns along dim 0
    np.testing.assert_allclose(z[::4, 2].numpy(), q[::-1], rtol=1e-5)  # top row = largest
    assert torch.all(z[:, 1] == 0)


def test_attribute_vector_is_the_difference_of_label_means():
    mu = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [10.0, 0.0]])
    y = np.array([1, 1, 2, 3])
    v = latent.attribute_vector(mu, y, "1", "3")
    torch.testing.assert_close(v, torch.tensor([1.0, 2.0]) - torch.tensor([10.0, 0.0]))
    everyone_else = latent.attribute_vector(mu, y, "1")
    torch.testing.assert_close(everyone_else, torch.tensor([1.0, 2.0]) - torch.tensor([7.0, 2.5]))
    moved = latent.shift(_Identity(), mu[0], v, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(moved, torch.stack([mu[0], mu[0] + v]))


class _Identity:
    """A stand-in model whose decoder is the identity: shift's arithmetic, seen directly."""

    device = torch.device("cpu")
    shift = torch.zeros(1)  # its dtype is the model's

    def decode(self, z):
        return z


def test_cli_image_commands_draw_the_decoded_codes(image_run, capsys, tmp_path):
    """Each tile of each grid is the decoder mean of the code the command promises, computed here
    from the data file and the encoder by hand (tiles read back with PIL)."""
    run, data, _, y = image_run
    model = run.model
    x = torch.from_numpy(np.load(data)["X"].astype(np.float32) / 255).reshape(-1, 64)
    mu = posterior_mean(model, x)
    q = torch.from_numpy(norm.ppf((np.arange(4) + 0.5) / 4)).float()
    shift_vector = mu[torch.from_numpy(y == 1)].mean(0) - mu[torch.from_numpy(y == 0)].mean(0)
    t = torch.linspace(0, 1, 6)[:, None]
    cases = {  # argv -> (codes (n, L) of the tiles, columns)
        ("interpolate", "--from", "0", "--to", "5", "--steps", "6"):
            ((1 - t) * mu[0] + t * mu[5], 6),
        ("traverse", "--index", "2", "--dims", "1", "--steps", "5", "--range", "-2", "2"):
            (torch.cat([mu[2:3].repeat(5, 1)[:, :1], torch.linspace(-2, 2, 5)[:, None],
                        mu[2:3].repeat(5, 1)[:, 2:]], 1), 5),
        ("manifold", "--dims", "0,1", "--steps", "4"):  # top row = largest z_1, columns = z_0
            (torch.stack([torch.tensor([a, b, 0.0, 0.0]) for b in q.flip(0) for a in q]), 4),
        ("shift", "--index", "0", "--toward", "1", "--away", "0", "--steps", "3"):
            (mu[0] + torch.linspace(0, 1, 3)[:, None] * shift_vector, 3),
    }
    for argv, (z, ncol) in cases.items():
        out = tmp_path / f"{argv[0]}.png"
        extra = [] if argv[0] == "manifold" else ["--data", data]
        code, _, err = run_cli(capsys, argv[0], run.dir, *extra, *argv[1:], "--out", out)
        assert code == 0, err
        tiles = read_tiles(out, len(z), ncol=ncol)
        assert_close_levels(tiles, levels(decoder_mean(model, z)))
        # not a constant picture: the first and the last tile differ (the path moves the decoder)
        assert np.abs(tiles[0].astype(int) - tiles[-1]).mean() > 2, argv


def test_cli_traverse_table_writes_rows_per_dimension(table_run, capsys, tmp_path):
    run, data = table_run
    out = tmp_path / "t.npy"
    code, _, err = run_cli(capsys, "traverse", run.dir, "--dims", "1", "--steps", "4",
                           "--range", "-1", "1", "--out", out)
    assert code == 0, err
    got = np.load(out)
    z = latent.traversal_codes(torch.zeros(2), [1], torch.linspace(-1, 1, 4))
    want = run.model.restore(latent.decode(run.model, z)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    code, _, err = run_cli(capsys, "manifold", run.dir, "--steps", "3", "--out", tmp_path / "m.npy")
    assert code == 0 and np.load(tmp_path / "m.npy").shape == (9, 5)


def test_cli_interpolate_table_matches_the_library(table_run, capsys, tmp_path):
    run, data = table_run
    out = tmp_path / "i.npy"
    code, _, err = run_cli(capsys, "interpolate", run.dir, "--data", data, "--from", "4", "--to",
                           "-1", "--steps", "3", "--out", out)
    assert code == 0, err
    raw = np.load(data)
    recon = run.model.restore(latent.decode(run.model, latent.encode(
        run.model, run.model.prepare(raw[[4, -1]])).mean)).numpy()
    got = np.load(out)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got[[0, -1]], recon, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("argv,words", [
    (["interpolate", "--from", "0", "--to", "400"], ["--to 400", "out of range"]),
    (["traverse", "--index", "-301"], ["--index -301", "out of range"]),
    (["traverse", "--dims", "0,7"], ["[7]", "out of range"]),
    (["manifold", "--dims", "0,0"], ["two different"]),
    (["shift", "--index", "0", "--toward", "cat"], ["no example has label 'cat'"]),
])
def test_cli_bad_inputs_exit_2_with_one_line(image_run, capsys, tmp_path, argv, words):
    run, data, _, _ = image_run
    extra = [] if argv[0] == "manifold" or "--dims" in argv else ["--data", str(data)]
    code, _, err = run_cli(capsys, argv[0], run.dir, *extra, *argv[1:], "--out",
                           tmp_path / "x.png")
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "x.png").exists()


def test_manifold_needs_two_dimensions(image_run, capsys, tmp_path):
    run = image_run[0]
    code, _, err = run_cli(capsys, "manifold", run.dir, "--out", tmp_path / "m.png")
    assert_one_line_error(code, err, "4 latent dimensions", "--dims")


# --- generation -------------------------------------------------------------------------------
def test_sample_seed_temperature_and_formats(table_run, capsys, tmp_path):
    run, _ = table_run
    paths = [tmp_path / f"{k}.npy" for k in "abc"]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        assert run_cli(capsys, "sample", run.dir, "-n", "6", "--seed", seed, "--out", path)[0] == 0
    a, b, c = (np.load(p) for p in paths)
    assert a.shape == (6, 5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    cold = tmp_path / "cold.csv"
    assert run_cli(capsys, "sample", run.dir, "-n", "4", "--temperature", "0", "--out", cold)[0] == 0
    rows = np.loadtxt(cold, delimiter=",")
    prior_mean = run.model.restore(latent.decode(run.model, torch.zeros(1, 2))).numpy()
    np.testing.assert_allclose(rows, np.repeat(prior_mean, 4, 0), rtol=1e-5, atol=1e-5)
    drawn = tmp_path / "drawn.npy"
    assert run_cli(capsys, "sample", run.dir, "-n", "4", "--temperature", "0", "--draw",
                   "--out", drawn)[0] == 0
    assert not np.allclose(np.load(drawn), rows)  # x ~ p(x|z) adds the learned noise
    code, _, err = run_cli(capsys, "sample", run.dir, "--out", tmp_path / "s.png")
    assert_one_line_error(code, err, "needs image data")


def test_sample_draw_on_images_is_binary(image_run, capsys, tmp_path):
    run = image_run[0]
    g = torch.Generator().manual_seed(0)
    x = run.model.sample(8, draw=True, generator=g)
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    out = tmp_path / "s.png"
    assert run_cli(capsys, "sample", run.dir, "-n", "9", "--draw", "--seed", "1", "--out", out)[0] == 0
    tiles = read_tiles(out, 9, ncol=3)
    assert set(np.unique(tiles).tolist()) == {0, 255}  # drawn pixels: black or white, both seen
    means = decoder_mean(run.model, torch.randn(9, run.model.latent_dim,
                                                generator=torch.Generator().manual_seed(1)))
    # x ~ Bernoulli(mean): the share of white pixels follows the decoder means
    assert tiles.mean() / 255 == pytest.approx(float(means.mean()), abs=4 * 0.5 / 24)
