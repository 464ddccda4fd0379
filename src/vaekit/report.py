"""`vaekit report`: one self-contained HTML page of a run (PNG figures embedded as base64).

The page is a list of sections; each is a function of the run's context that returns HTML.
Adding a section is one entry in SECTIONS.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from . import plots
from .data import load_for_model
from .datasets import CLASS_NAMES  # built-in datasets' class names, beside their registry
from .errors import VaekitError
from .evaluate import ACTIVE_UNIT_THRESHOLD, active_mask, evaluate
from .images import pictured_rows
from .latent import encode, kl_ranked, prior_values, rank_dims, traverse
from .runs import Run, atomic_write, load

MAX_POINTS = 10_000  # latent means shown in the PCA / 2-D scatter
TSNE_POINTS = 2_000  # t-SNE (O(n log n) but slow in practice) on a seeded subsample of this size
TRAVERSE_DIMS = 5  # most informative dimensions traversed
TRAVERSE_VALUES = torch.linspace(-3, 3, 9)  # in sd of the prior's marginal, about its mean
RECONSTRUCTIONS = 16
SAMPLES = 64


def class_names(source: str, y: np.ndarray | None,
                own: list[str] | None = None) -> dict[Any, str] | None:
    """{label: name} for labels 0..K-1 of data with named classes: `own`, the names the run's own
    data carried (an .npz's class_names, in its manifest), else a built-in dataset's names."""
    names = own or CLASS_NAMES.get(source)
    if names is None or y is None or not np.issubdtype(np.asarray(y).dtype, np.integer):
        return None
    return {c: names[c] for c in np.unique(y).tolist() if 0 <= c < len(names)}


@dataclass
class Context:
    """Everything the sections read: the run, its data (model space), metrics and files."""

    run: Run
    x: Tensor  # (N, D) model space
    y: np.ndarray | None
    data_name: str
    source: str  # the data pictured: a built-in name or a file/folder
    metrics: dict[str, Any]
    metrics_source: str
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    scores_path: Path | None
    posterior: Distribution = field(init=False)  # q(z|x) of the N examples pictured
    mu: Tensor = field(init=False)  # (N, L) posterior means

    def __post_init__(self) -> None:
        self.posterior = encode(self.run.model, self.x)
        self.mu = self.posterior.mean.double()

    @property
    def image(self) -> bool:
        return len(self.run.model.input_shape) == 3

    @property
    def active(self) -> np.ndarray:
        return active_mask(self.mu).numpy()


# --- small HTML helpers ---------------------------------------------------------------------
def esc(v: Any) -> str:
    return html.escape(str(v))


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def table(rows: list[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def images(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    return x.reshape(len(x), *shape).clamp(0, 1).cpu()


# --- sections -------------------------------------------------------------------------------
def section_summary(c: Context) -> str:
    cfg, s, m = c.run.config, c.summary, c.metrics
    info = c.run.manifest.get("data", {})
    data_rows = [("data", cfg.data.data), ("shape", info.get("shape", list(c.run.model.input_shape))),
                 ("train / val / test examples", f"{info.get('n_train', '?')} / "
                  f"{info.get('n_val', '?')} / {info.get('n_test', '?')}"),
                 ("preprocessing", info.get("preprocessing", "?")), ("labels", info.get("labels"))]
    mc = cfg.model
    model_rows = [("model", mc.model), ("likelihood", mc.likelihood), ("backbone", mc.backbone),
                  ("posterior", mc.posterior_name), ("prior", mc.prior),
                  ("hidden", mc.hidden), ("latent dimensions", mc.latent_dim),
                  ("objective", cfg.train.objective), ("beta", cfg.train.beta)]
    train_rows = [("epochs run", s.get("epochs", len(c.history))), ("best epoch", s.get("best_epoch")),
                  ("stopped because", s.get("stop") or "epoch limit reached"),
                  ("training time (s)", s.get("train_seconds")),
                  ("command", " ".join(c.run.manifest.get("command", [])) or "?")]
    metric_rows = [("ELBO (nats)", m.get("elbo")),
                   *([("-ELBO (bits per dimension)", m.get("bits_per_dim"))]
                     if c.run.model.image else []),
                   ("log-likelihood log p(x) (nats)", log_likelihood_text(m)),
                   ("reconstruction E_q log p(x|z) (nats)", m.get("reconstruction")),
                   ("rate = KL (nats)", rate_text(m)), ("distortion (nats)", m.get("distortion")),
                   ("active units", f"{m.get('active_units')} of {mc.latent_dim}")]
    config_rows = sorted(cfg.to_flat().items())
    return (f"<h3>Data</h3>{table(data_rows)}<h3>Model</h3>{table(model_rows)}"
            f"<h3>Training</h3>{table(train_rows)}"
            f"<h3>Final metrics</h3><p>{esc(c.metrics_source)}; nats per example.</p>"
            f"{table(metric_rows)}<details><summary>full configuration</summary>"
            f"{table(config_rows, ('option', 'value'))}</details>")


def log_likelihood_text(m: dict[str, Any]) -> str:
    """log p(x) with its standard error and K, as `vaekit eval --iw-samples K` wrote them."""
    ll = m.get("log_likelihood")
    if ll is None:
        return "not computed (vaekit eval RUN --iw-samples K)"
    text = f"{ll:.2f}"
    if m.get("log_likelihood_stderr") is not None:
        over = f" over {m['n']} examples" if m.get("n") else ""
        text += f" ± {m['log_likelihood_stderr']:.2f} (standard error{over})"
    if m.get("iw_samples"):
        text += f"; K = {m['iw_samples']} importance samples"
    if m.get("log_likelihood_bits_per_dim") is not None:
        text += f"; {m['log_likelihood_bits_per_dim']:.4f} bits per dimension"
    return text


def rate_text(m: dict[str, Any]) -> Any:
    """The rate, with its standard error where it is a Monte Carlo estimate (`rate_stderr`)."""
    if m.get("rate_stderr") is None or m.get("rate") is None:
        return m.get("rate")
    return f"{m['rate']:.2f} ± {m['rate_stderr']:.2f} (Monte Carlo estimate, standard error)"


def section_curves(c: Context) -> str:
    if not c.history:
        return note("metrics.jsonl is missing or empty: no curves to draw.")
    warnings = [(r["epoch"], str(w.get("kind", "warning")), str(w.get("message", "")))
                for r in c.history for w in r.get("warnings") or []]
    listed = "".join(f"<li>epoch {e}: <b>{esc(kind)}</b>: "
                     f"{esc(message.removeprefix(kind + ': '))}</li>" for e, kind, message in warnings)
    marks = (f'<p>Diagnostics warnings (dotted lines):</p><ul class="warnings">{listed}</ul>'
             if warnings else "<p>No diagnostics warnings were raised during training.</p>")
    best = c.summary.get("best_epoch")
    kept = (f"<p>Best epoch: <b>{esc(best)}</b> (solid green line and star): its weights are "
            "the ones kept (best.pt) and evaluated.</p>" if best is not None else "")
    return img(plots.training_curves(c.history, best), "training curves") + kept + marks


def section_kl(c: Context) -> str:
    kl = c.metrics.get("kl_per_dim")
    active = c.active
    dims = ", ".join(str(i) for i in np.flatnonzero(active)) or "none"
    if not c.run.model.stochastic:
        chart = note("A deterministic autoencoder has no KL term.")
    elif kl is None or not kl_ranked(c.run.model):
        chart = note("The KL per latent dimension is undefined for this posterior and prior (a "
                     "Monte Carlo estimate of the whole KL, which does not split over dimensions).")
    else:
        chart = img(plots.kl_per_dim(kl, active), "KL per latent dimension")
    return (chart + f"<p>Active units (Cov<sub>x</sub>(E<sub>q</sub>[z<sub>u</sub>]) &gt; "
            f"{ACTIVE_UNIT_THRESHOLD}, Burda et al. 2015): <b>{int(active.sum())} of "
            f"{len(active)}</b> (dimensions {esc(dims)}).</p>")


def section_reconstructions(c: Context) -> str:
    if not c.image:
        return note("Image data only: this run's data is tabular.")
    model, shape = c.run.model, c.run.model.input_shape
    seed = c.run.config.train.seed
    chosen, ncol = pictured_rows(len(c.x), RECONSTRUCTIONS, seed)
    x = c.x[chosen]
    recon = model.reconstruct(x).cpu()
    rows = []
    for i in range(0, len(x), ncol):  # an input row, then its reconstruction row
        rows += [images(x[i:i + ncol], shape), images(recon[i:i + ncol], shape)]
    pairs = torch.cat(rows)
    labels = ["input", "reconstruction"] * (len(rows) // 2)
    g = torch.Generator().manual_seed(seed)
    samples = images(model.sample(SAMPLES, generator=g).cpu(), shape)
    return (img(plots.image_grid(pairs, ncol, "Test inputs and their reconstructions "
                                 "(decoder mean of the posterior mean)", row_labels=labels),
                "reconstructions") +
            img(plots.image_grid(samples, 8, f"Prior samples: {model.prior.caption} through the "
                                 "decoder mean"), "prior samples"))


def section_traversals(c: Context) -> str:
    if not c.image:
        return note("Image data only: this run's data is tabular.")
    model = c.run.model
    dims = rank_dims(model, c.posterior)[:TRAVERSE_DIMS]
    pictures = traverse(model, c.mu[0].float(), dims, prior_values(model, dims, TRAVERSE_VALUES))
    kl = c.metrics.get("kl_per_dim") if kl_ranked(model) else None
    rows = [f"z{d} (KL {kl[d]:.2f} nats)" if kl else f"z{d}" for d in dims]
    cols = [f"{v:+.1f}" for v in TRAVERSE_VALUES.tolist()]
    standard = model.prior.isotropic
    what = ("value of the traversed dimension" if standard else
            "prior mean + this many prior sd of the traversed dimension")
    return img(plots.image_grid(images(pictures, model.input_shape), len(TRAVERSE_VALUES),
                                "Latent traversals of the most informative dimensions"
                                + ("" if kl else " (by code variance)"),
                                row_labels=rows, col_labels=cols,
                                xlabel=f"{what} (the others at the encoding of test example 0)"),
               "latent traversals")


def section_latent(c: Context) -> str:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    mu, y = c.mu[:MAX_POINTS].numpy(), None if c.y is None else np.asarray(c.y)[:MAX_POINTS]
    n, L = mu.shape
    own = c.run.manifest.get("data", {}).get("label_names") if c.source == c.run.config.data.data \
        else None
    names = class_names(c.source, y, own)
    what = f"{n} posterior means of {c.data_name}" + ("" if y is not None else " (no labels)")
    legend = ("" if not names else "<p>Classes: " + ", ".join(
        f"{esc(k)} {esc(v)}" for k, v in names.items()) + ".</p>")
    centres = getattr(c.run.model.prior.dist(), "component_means", None)
    centres = None if centres is None else centres.detach().double().cpu().numpy()
    if centres is not None:
        legend += (f"<p>Black crosses: the centres of the prior's {len(centres)} mixture "
                   "components (2-D and PCA maps).</p>")
    if L == 2:
        return img(plots.scatter_2d(mu, y, "Latent means (2-D latent space)", "z0", "z1", names,
                                    centres), "latent means") + \
            f"<p>{esc(what)}, drawn as they are: a 2-D latent space.</p>" + legend
    if L == 1:
        pts = np.column_stack([mu[:, 0], np.random.default_rng(0).uniform(-0.5, 0.5, n)])
        return img(plots.scatter_2d(pts, y, "Latent means (1-D latent; vertical jitter)", "z0",
                                    "jitter (no meaning)", names), "latent means") + legend
    pca = PCA(2).fit(mu)
    share = pca.explained_variance_ratio_ * 100
    out = '<div class="row">' + img(plots.scatter_2d(pca.transform(mu), y, "Latent means, PCA",
                               f"PC 1 ({share[0]:.0f}% of variance)",
                               f"PC 2 ({share[1]:.0f}% of variance)", names,
                               None if centres is None else pca.transform(centres)),
                               "latent means PCA")
    if n >= 10:
        idx = np.sort(np.random.default_rng(0).permutation(n)[:TSNE_POINTS])
        emb = TSNE(2, perplexity=min(30.0, (len(idx) - 1) / 3), init="pca",
                   random_state=0).fit_transform(mu[idx])
        out += img(plots.scatter_2d(emb, None if y is None else y[idx],
                                    f"Latent means, t-SNE ({len(idx)} points)", "t-SNE 1",
                                    "t-SNE 2", names), "latent means t-SNE")
    return out + f"</div><p>{esc(what)}.</p>" + legend


def read_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """scores CSV (index,method,score[,label][,flagged]) -> {method: (scores, labels or None)}."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise VaekitError(f"cannot read scores file {path} ({type(e).__name__}); give the CSV "
                          "that `vaekit score --out` wrote") from None
    if not rows or not {"method", "score"} <= set(rows[0]):
        raise VaekitError(f"{path} is not a scores CSV: it needs columns index,method,score "
                          "(and optionally label)")
    out: dict[str, tuple[list, list]] = {}
    try:
        for r in rows:
            s, labels = out.setdefault(r["method"], ([], []))
            s.append(float(r["score"]))
            labels.append(r.get("label") or None)
    except ValueError:
        raise VaekitError(f"{path}: a score is not a number; give the CSV that "
                          "`vaekit score --out` wrote") from None

    def label_array(labels: list) -> np.ndarray | None:
        if any(v is None for v in labels):
            return None
        try:
            return np.array([int(float(v)) for v in labels])
        except ValueError:
            return np.array(labels)

    return {m: (np.array(s), label_array(lab)) for m, (s, lab) in out.items()}


def section_scores(c: Context) -> str:
    from sklearn.metrics import roc_auc_score, roc_curve

    if c.scores_path is None:
        return note("No scores: run `vaekit score RUN --out RUN/scores.csv`, or give "
                    "--scores FILE.")
    scores = read_scores(c.scores_path)
    out = img(plots.score_histograms(scores), "score histograms")  # full width: up to 10 panels
    curves = {}
    for method, (s, y) in scores.items():
        if y is not None and set(np.unique(y).tolist()) == {0, 1}:
            pos = y == 1  # 1: anomaly, the positive class
            fpr, tpr, _ = roc_curve(pos, s)
            curves[method] = (fpr, tpr, float(roc_auc_score(pos, s)))
    if curves:
        out += '<div class="row">' + img(plots.roc_curves(curves), "ROC curve")
        out += table([(m, f"{v[2]:.4f}") for m, v in curves.items()], ("method", "AUROC")) + "</div>"
    else:
        out += note("No ROC curve: it needs a label column of 0 (normal) and 1 (anomaly) in "
                    "the scores file.")
    return out + f"<p>From {esc(c.scores_path)}.</p>"


Section = Callable[[Context], str]
SECTIONS: dict[str, tuple[str, Section]] = {
    "summary": ("Run summary", section_summary),
    "curves": ("Training curves", section_curves),
    "kl": ("KL per latent dimension and active units", section_kl),
    "reconstructions": ("Reconstructions and prior samples", section_reconstructions),
    "traversals": ("Latent traversals", section_traversals),
    "latent": ("Latent space in 2-D", section_latent),
    "scores": ("Anomaly scores", section_scores),
}

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.4em 0} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;font-size:.92em} img{max-width:100%;display:block;margin:.6em 0}
.note{color:#666;font-style:italic} .row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.row img{max-width:49%} nav a{margin-right:1em} .warnings li{color:#a33}
"""


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def final_metrics(run: Run, summary: dict[str, Any], x: Tensor | None) -> tuple[dict, str]:
    """Metrics of the data shown: eval-test.json (vaekit eval), summary.json, or evaluated now."""
    if x is not None:
        # the page shows no I(X;Z): skip its O(N^2) estimate (slow for an iaf posterior)
        return evaluate(run.model, x, information=False), "evaluated now on the data given with --data"
    path = run.dir / "eval-test.json"
    if path.is_file():
        return json.loads(path.read_text()), f"from {path.name} (vaekit eval, test split)"
    if "test" in summary:
        return summary["test"], "from summary.json (test split, best weights)"
    return {}, "no test metrics: the run did not finish"


def build_report(run_dir: str | Path | Run, data: str | None = None, out: str | Path | None = None,
                 scores: str | Path | None = None, **reading: Any) -> Path:
    """Write the HTML report of a run folder (or of a loaded Run) to out (default
    RUN_DIR/report.html); returns its path. reading: DataConfig fields saying where and how to read
    `data` (data_dir, label_column, ...), as for every command that reads data."""
    run = run_dir if isinstance(run_dir, Run) else load(run_dir)
    run_dir = run.dir
    x, y = load_for_model(run.model, run.config, data, "test", **reading)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    metrics, source = final_metrics(run, summary, x if data is not None else None)
    if metrics.get("kl_per_dim") is None and "test" in summary:
        metrics["kl_per_dim"] = summary["test"].get("kl_per_dim")
    scores_path = Path(scores) if scores else run_dir / "scores.csv"
    if scores and not scores_path.is_file():
        raise VaekitError(f"scores file {scores_path} not found; check the path given to --scores")
    c = Context(run, x, y, data or f"the test split of {run.config.data.data}",
                data or run.config.data.data, metrics, source,
                run.metrics, summary, scores_path if scores_path.is_file() else None)
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, (t, _) in SECTIONS.items())
    body = [f"<h1>vaekit report: {esc(run_dir.name)}</h1><p>{esc(run_dir.resolve())}</p>"
            f"<nav>{nav}</nav>"]
    for key, (title, make) in SECTIONS.items():
        body.append(f'<section id="{key}"><h2>{esc(title)}</h2>{make(c)}</section>')
    path = Path(out) if out else run_dir / "report.html"
    atomic_write(path, page(f"vaekit report: {run_dir.name}", "".join(body)))
    return path
