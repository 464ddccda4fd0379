"""Pictures are checked by content, read back with PIL: each tile of a grid is cut out and compared
with the data or with the decoder applied by hand; a blank, constant or swapped grid fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from PIL import Image

import vaekit
from vaekit.data import load_dataset
from vaekit.images import pictured, pictured_rows

PAD, SCALE = 2, 2  # the grids: 2 white pixels between tiles, then enlarged 2x (nearest)


def read_tiles(path, n: int, ncol: int, hw: tuple[int, int] = (8, 8)) -> np.ndarray:
    """The n tiles (n, h, w) of a grayscale PNG grid, in row-major order, as uint8 levels; checks
    the picture's size and that everything between the tiles is white padding."""
    h, w = hw
    with Image.open(path) as im:
        assert im.mode == "L"
        big = np.asarray(im)
    nrow = -(-n // ncol)
    assert big.shape == (SCALE * (nrow * (h + PAD) + PAD), SCALE * (ncol * (w + PAD) + PAD))
    small = big[::SCALE, ::SCALE]
    assert np.array_equal(np.repeat(np.repeat(small, SCALE, 0), SCALE, 1), big)  # 2x2 blocks
    tiles, padding = [], np.ones(small.shape, bool)
    for i in range(n):
        top, left = PAD + (i // ncol) * (h + PAD), PAD + (i % ncol) * (w + PAD)
        tiles.append(small[top:top + h, left:left + w])
        padding[top:top + h, left:left + w] = False
    assert np.all(small[padding] == 255)
    return np.stack(tiles)


def levels(x: torch.Tensor, hw=(8, 8)) -> np.ndarray:
    """Model-space pixels in [0, 1] -> the uint8 levels a grid shows: (n, h, w)."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, *hw).numpy()


def decoder_mean(model, z: torch.Tensor) -> torch.Tensor:
    """sigmoid(decoder logits): the Bernoulli mean, by hand."""
    with torch.no_grad():
        return torch.sigmoid(model.decoder(z))


def posterior_mean(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder(x.reshape(len(x), -1))[:, :model.latent_dim]


def assert_close_levels(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to one level (float rounding at .5 between torch and the grid's numpy)."""
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """8x8 digits, a small VAE trained for 15 epochs, and its test split (model space)."""
    folder = tmp_path_factory.mktemp("pictures")
    torch.manual_seed(0)
    cfg = quick_config(epochs=15, latent_dim=8, hidden=[128], lr=3e-3, threads=1)
    run = vaekit.train(cfg, out=folder / "run", quiet=True, hooks=[])
    return run, load_dataset(quick_config())[0]


def test_reconstructions_png_shows_inputs_above_their_reconstructions(digits_run):
    run, ds = digits_run
    tiles = read_tiles(run.dir / "reconstructions.png", 64, ncol=8)
    # 4 rows of 8 inputs (a seeded draw over the test split), each above their reconstructions
    x = ds.x_test[pictured(len(ds.x_test), 32, run.config.train.seed)]
    inputs, recons = tiles.reshape(4, 2, 8, 8, 8)[:, 0], tiles.reshape(4, 2, 8, 8, 8)[:, 1]
    assert_close_levels(inputs.reshape(32, 8, 8), levels(x))
    want = levels(decoder_mean(run.model, posterior_mean(run.model, x)))
    assert_close_levels(recons.reshape(32, 8, 8), want)
    # a reconstruction looks like its own input more than like the other inputs
    r, i = recons.reshape(32, -1).astype(float), inputs.reshape(32, -1).astype(float)
    dist = np.abs(r[:, None] - i[None]).mean(-1)  # (32, 32)
    assert (dist.argmin(1) == np.arange(32)).mean() > 0.3  # chance: 1/32
    assert np.diag(dist).mean() < 0.7 * dist[~np.eye(32, dtype=bool)].mean()


def test_samples_png_is_prior_draws_through_the_decoder_and_not_blank(digits_run):
    run, ds = digits_run
    tiles = read_tiles(run.dir / "samples.png", 64, ncol=8)
    g = torch.Generator().manual_seed(run.config.train.seed)
    z = torch.randn(64, run.model.latent_dim, generator=g)
    assert_close_levels(tiles, levels(decoder_mean(run.model, z)))
    flat = tiles.reshape(64, -1).astype(float) / 255
    assert flat.std(1).min() > 0.1  # every tile has strokes, not one flat level
    assert flat.std(0).mean() > 0.05  # the tiles differ from one another
    assert abs(flat.mean() - float(ds.x_train.mean())) < 0.1  # ink like the data's


def test_traverse_png_tiles_vary_along_the_traversed_dimension(digits_run, capsys, tmp_path):
    run, ds = digits_run
    out = tmp_path / "t.png"
    code, _, err = run_cli(capsys, "traverse", run.dir, "--index", "3", "--dims", "0,1,2,3,4,5,6,7",
                           "--steps", "5", "--range", "-2", "2", "--out", out)
    assert code == 0, err
    tiles = read_tiles(out, 40, ncol=5).reshape(8, 5, 8, 8)
    base = posterior_mean(run.model, ds.x_test[3:4])[0]
    values = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    for d in range(8):
        z = base.repeat(5, 1)
        z[:, d] = values
        assert_close_levels(tiles[d], levels(decoder_mean(run.model, z)))
    assert len(np.unique(tiles)) > 10  # not constant
    # along an informative dimension the ends differ; its neighbouring tiles differ too
    kl = vaekit.evaluate(run.model, ds.x_test)["kl_per_dim"]
    top = int(np.argmax(kl))
    row = tiles[top].astype(int)
    assert np.abs(row[0] - row[-1]).mean() > 10
    assert all(np.abs(row[i] - row[i + 1]).max() > 0 for i in range(4))


@pytest.mark.parametrize(("n", "most", "shown", "ncol"), [(1000, 32, 32, 8), (1000, 20, 16, 8),
                                                         (13, 32, 8, 8), (5, 32, 5, 5)])
def test_pictured_rows_are_whole_rows_of_distinct_examples(n, most, shown, ncol):
    """At most `most` examples, in whole rows of 8 (a single row of all n when n < 8)."""
    chosen, columns = pictured_rows(n, most, seed=3)
    assert (len(chosen), columns) == (shown, ncol)
    assert len(set(chosen.tolist())) == shown and 0 <= int(chosen.min()) and int(chosen.max()) < n
