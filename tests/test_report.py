"""`vaekit report`: every section of a tiny run's page, the figures decode, the AUROC agrees with
a rank count, and the page renders in a real Chromium with no console errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quick_config, run_cli
from PIL import Image

from vaekit.report import SECTIONS, build_report
from vaekit.train import train

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WARNING = {"kind": "overfitting", "message": "validation reconstruction falls behind training"}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A 3-epoch run on 8x8 squares (labels 0/1), a planted warning and a scores CSV."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    x, y = np.zeros((300, 8, 8), np.uint8), rng.integers(0, 2, 300)
    for i, label in enumerate(y):
        r, c = rng.integers(0, 5, 2)
        x[i, r:r + 3, c:c + 3] = 255 if label else 128
    np.savez(root / "squares.npz", X=x, y=y)
    run = root / "run"
    train(quick_config(data=str(root / "squares.npz"), latent_dim=3), out=run, quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[1]["warnings"] = [WARNING]  # as the diagnostics hook writes them
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = rng.integers(0, 2, 60)
    lines = ["index,method,score,label"]
    for method, shift in (("elbo", 2.0), ("kl", 0.5)):
        scores = rng.normal(size=60) + shift * labels
        lines += [f"{i},{method},{s:.6f},{lab}"
                  for i, (s, lab) in enumerate(zip(scores, labels, strict=True))]
    (run / "scores.csv").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture(scope="module")
def report(image_run) -> tuple[Path, str]:
    path = build_report(image_run)
    return path, path.read_text()


def section(html: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert m, f"section {key} missing"
    return m.group(1)


def embedded_images(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b)))
            for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half: the AUROC by counting."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg)))


def test_report_has_every_section_with_its_content(image_run, report):
    path, html = report
    assert path == image_run / "report.html"
    summary = json.loads((image_run / "summary.json").read_text())["test"]
    s = section(html, "summary")
    for text in ("squares.npz", "bernoulli", f"{summary['elbo']:.2f}", f"{summary['rate']:.2f}",
                 f"{summary['distortion']:.2f}", "training time"):
        assert text in s, text
    assert f"{summary['active_units']} of 3" in s
    curves = section(html, "curves")
    assert "<img" in curves and WARNING["message"] in curves and "epoch 2" in curves
    assert "<img" in section(html, "kl") and "Active units" in section(html, "kl")
    assert section(html, "reconstructions").count("<img") == 2  # pairs, prior samples
    assert section(html, "traversals").count("<img") == 1
    assert section(html, "latent").count("<img") == 2  # PCA and t-SNE
    assert section(html, "scores").count("<img") == 2  # histograms and ROC
    assert list(SECTIONS) == re.findall(r'<section id="(\w+)">', html)


def test_figures_are_valid_pngs_and_nothing_is_fetched(report):
    _, html = report
    pictures = embedded_images(html)
    assert len(pictures) == 9
    assert all(p.format == "PNG" and p.width > 100 and p.height > 100 for p in pictures)
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)  # self-contained, offline


def test_auroc_in_the_page_matches_a_rank_count(image_run, report):
    _, html = report
    rows = [line.split(",") for line in (image_run / "scores.csv").read_text().split()[1:]]
    for method in ("elbo", "kl"):
        s = np.array([float(r[2]) for r in rows if r[1] == method])
        lab = np.array([r[3] == "1" for r in rows if r[1] == method])
        assert f"<td>{method}</td><td>{mann_whitney_auc(s, lab):.4f}</td>" in section(html, "scores")


def test_tabular_run_report(tmp_path, tiny_table):
    run = tmp_path / "run"
    train(quick_config(data=str(tiny_table), latent_dim=2, epochs=2), out=run, quiet=True)
    html = build_report(run, out=tmp_path / "r.html").read_text()
    for key in ("reconstructions", "traversals"):
        assert "tabular" in section(html, key) and "<img" not in section(html, key)
    assert "a 2-D latent space" in section(html, "latent")
    assert "No scores" in section(html, "scores")


def test_eval_file_and_other_data(image_run, tmp_path):
    """eval-test.json (vaekit eval) supplies the log-likelihood; --data pictures other data."""
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    test = json.loads((run / "summary.json").read_text())["test"]
    (run / "eval-test.json").write_text(json.dumps(test | {"log_likelihood": -12.3456}))
    html = build_report(run).read_text()
    assert "-12.35" in section(html, "summary") and "eval-test.json" in section(html, "summary")
    with np.load(image_run.parent / "squares.npz") as z:
        np.savez(tmp_path / "other.npz", X=z["X"][:50], y=z["y"][:50])
    html = build_report(run, data=str(tmp_path / "other.npz"), out=tmp_path / "o.html",
                        scores=run / "scores.csv").read_text()
    assert "evaluated now" in section(html, "summary")
    assert "50 posterior means of" in section(html, "latent")  # every example of the file


def test_cli_report_and_its_errors(image_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    code, stdout, err = run_cli(capsys, "report", image_run, "--out", out, "--threads", "1")
    assert code == 0, err
    assert out.is_file() and f"report: {out}" in stdout
    code, _, err = run_cli(capsys, "report", image_run, "--scores", tmp_path / "none.csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--scores" in err
    code, _, err = run_cli(capsys, "report", tmp_path)
    assert code == 2 and "not a vaekit run folder" in err


def chrome():
    """A headless Debian Chromium through its own chromedriver (nothing downloaded)."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"Chromium not found ({CHROMIUM}, {CHROMEDRIVER}); .ci/run installs it with "
                    "apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                f"--user-data-dir={tempfile.mkdtemp(prefix='vaekit-chromium-')}",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), options


def test_page_renders_in_chromium(report, tmp_path):
    path, _ = report
    driver, options = chrome()
    try:
        driver.get(path.resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 9 and all(w > 0 for w in widths)
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('section h2')).map(h => h.innerText)")
        assert headings == [title for title, _ in SECTIONS.values()]
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as picture:
            assert picture.format == "PNG" and picture.width > 0
    finally:
        driver.quit()
        shutil.rmtree(next(a.split("=", 1)[1] for a in options.arguments
                           if a.startswith("--user-data-dir")), ignore_errors=True)


# --- readability (issue 8, item 22) -------------------------------------------------------------
def figures_drawn(monkeypatch) -> list:
    """Every matplotlib figure the plots module turns into a PNG, kept for inspection."""
    from vaekit import plots

    drawn, to_png = [], plots.png

    def keep(fig, *args, **kwargs):
        drawn.append(fig)
        return to_png(fig, *args, **kwargs)

    monkeypatch.setattr(plots, "png", keep)
    return drawn


def best_line_columns(picture: Image.Image) -> int:
    """Columns holding a vertical run (>= 60 px) of the best-epoch green (#2ca02c)."""
    a = np.asarray(picture.convert("RGB")).astype(int)
    green = (np.abs(a - np.array([0x2C, 0xA0, 0x2C])).sum(-1) < 40)
    return int((green.sum(0) >= 60).sum())


def test_best_epoch_is_marked_on_the_curves(image_run, report):
    from vaekit import plots

    _, html = report
    best = json.loads((image_run / "summary.json").read_text())["best_epoch"]
    curves = section(html, "curves")
    assert f"Best epoch: <b>{best}</b>" in curves
    history = [json.loads(line) for line in (image_run / "metrics.jsonl").read_text().splitlines()]
    shown = embedded_images(curves)[0]
    assert best_line_columns(shown) >= 3  # a green line in each of the three panels
    unmarked = Image.open(io.BytesIO(plots.training_curves(history, None)))
    assert best_line_columns(unmarked) == 0


def test_log_likelihood_shows_its_standard_error_and_k(image_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    test = json.loads((run / "summary.json").read_text())["test"]
    (run / "eval-test.json").write_text(json.dumps(test | {
        "log_likelihood": -12.3456, "log_likelihood_stderr": 0.2149, "iw_samples": 500, "n": 60}))
    s = section(build_report(run).read_text(), "summary")
    assert "-12.35 ± 0.21 (standard error over 60 examples); K = 500 importance samples" in s


def test_booleans_are_words(report):
    _, html = report
    assert "<td>labels</td><td>yes</td>" in section(html, "summary")
    assert not re.search(r"<td>(True|False)</td>", html)


def write_idx(path: Path, a: np.ndarray) -> None:
    """An IDX file of unsigned bytes (the MNIST format): magic, dimensions, data."""
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + a.astype(np.uint8).tobytes())


def test_fashion_mnist_classes_are_named_and_ten_score_labels_get_a_panel_each(tmp_path, monkeypatch):
    """A small stand-in for Fashion-MNIST (same files, same labels 0..9): the latent map names the
    classes; a scores file with ten labels is drawn as ten panels, each titled with its label."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    (folder / "fashion-mnist").mkdir(parents=True)  # a dataset's own files live in DATA_DIR/NAME
    for images, labels, n in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 300),
                              ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 100)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(y):  # one bright band per class
            x[i, 2 * label + 4:2 * label + 8] = 250
        write_idx(folder / "fashion-mnist" / images, x)
        write_idx(folder / "fashion-mnist" / labels, y)
    run = tmp_path / "run"
    train(quick_config(data="fashion-mnist", data_dir=str(folder), epochs=2, latent_dim=2), out=run,
          quiet=True)
    lines = ["index,method,score,label"] + [f"{i},kl,{rng.normal() + i % 10:.5f},{i % 10}"
                                             for i in range(200)]
    (run / "scores.csv").write_text("\n".join(lines) + "\n")
    drawn = figures_drawn(monkeypatch)
    html = build_report(run).read_text()
    latent = section(html, "latent")
    assert "0 T-shirt/top" in latent and "9 Ankle boot" in latent
    legends = [t.get_text() for fig in drawn for ax in fig.axes if ax.get_legend()
               for t in ax.get_legend().get_texts()]
    assert "0: T-shirt/top" in legends and "9: Ankle boot" in legends
    histograms = [ax for fig in drawn for ax in fig.get_axes()
                  if ax.get_visible() and ax.patches and ax.get_title().startswith("label")]
    assert sorted(ax.get_title() for ax in histograms) == sorted(
        f"label {c} (n=20)" for c in range(10))


def test_small_images_are_drawn_at_least_64_pixels_a_tile():
    """32 tiles of an 8x8 checkerboard, 16 a row (the size of a large grid): every square of the
    PNG is >= 8 pixels wide, so a tile is >= 64."""
    from vaekit import plots

    board = torch.tensor(np.indices((8, 8)).sum(0) % 2, dtype=torch.float32)[None, None]
    png = plots.image_grid(board.repeat(32, 1, 1, 1), 16, "boards")
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    dark = picture < 128
    row = next((r for r in range(picture.shape[0]) if dark[r].sum() >= 16 * 4 * 8), None)
    assert row is not None, "no pixel row crosses 16 boards with >= 8 px a square"
    transitions = np.flatnonzero(np.diff(dark[row].astype(int)) != 0)
    runs = np.diff(transitions)  # widths of the squares (and of the white gaps between tiles)
    assert len(runs) >= 16 * 7 and runs.min() >= 8, runs


def test_report_of_a_test_split_that_fills_no_whole_rows(tmp_path, tiny_images):
    """12 test images (not a multiple of the 8 columns): the reconstructions section shows whole
    rows of inputs above their reconstructions (it raised a matplotlib ValueError: more row labels
    than rows)."""
    import numpy as np

    import vaekit
    from vaekit.report import build_report

    data = np.load(tiny_images)
    np.save(tmp_path / "test12.npy", data["X"][:12])
    np.save(tmp_path / "train.npy", data["X"][12:])
    run = vaekit.train(quick_config(data=str(tmp_path / "train.npy"),
                                    test_data=str(tmp_path / "test12.npy"), epochs=1),
                       out=tmp_path / "run", quiet=True)
    page = build_report(run.dir).read_text()
    assert 'alt="reconstructions"' in page and run.summary["test"]["n"] == 12


def test_pictures_show_examples_from_across_a_class_sorted_test_split(tmp_path, monkeypatch):
    """A test file sorted by class (CIFAR-10's is): reconstructions.png and the report's
    reconstructions must not show only the first class (they showed the first 32 / 64 examples,
    all airplanes on CIFAR-10)."""
    import vaekit
    from vaekit.images import pictured
    from vaekit.model import VAE

    x = np.zeros((400, 8, 8), np.uint8)
    x[200:, 2:6, 2:6] = 255  # class 0: blank (the first half of the file), class 1: a square
    np.save(tmp_path / "train.npy", x[::2])
    np.save(tmp_path / "test.npy", x[1::2])  # sorted: 100 blank, then 100 squares
    shown = []
    reconstruct = VAE.reconstruct
    monkeypatch.setattr(VAE, "reconstruct", lambda self, xs: (shown.append(xs.detach().cpu()),
                                                             reconstruct(self, xs))[1])
    run = vaekit.train(quick_config(data=str(tmp_path / "train.npy"),
                                    test_data=str(tmp_path / "test.npy"), epochs=1),
                       out=tmp_path / "run", quiet=True)
    build_report(run.dir)
    pictures = [xs for xs in shown if len(xs) >= 16]  # reconstructions.png (32), the report (16)
    assert len(pictures) == 2
    for xs in pictures:
        squares = xs.flatten(1).amax(1) > 0.5
        assert 0.2 < squares.float().mean() < 0.8, squares.float().mean()
    idx = pictured(1000, 32, seed=0)  # sorted, distinct, reproducible
    assert idx.tolist() == sorted(set(idx.tolist())) and idx.equal(pictured(1000, 32, seed=0))
