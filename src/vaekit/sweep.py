"""Rate-distortion sweep: one training run per beta, then a distortion-vs-rate plot, a CSV table
and an HTML page (Alemi et al. 2018, "Fixing a Broken ELBO": -ELBO = D + R at beta = 1).

SWEEP_DIR/
  beta-0.1/ ...   one ordinary run folder per beta (`vaekit report` works on each)
  sweep.csv       beta, rate, distortion, elbo, active_units (test split, best weights)
  rate-distortion.png, index.html
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import plots
from .config import Config
from .errors import VaekitError
from .report import esc, img, page
from .runs import atomic_write, holds_run, read_json
from .train import train

COLUMNS = ("beta", "rate", "distortion", "elbo", "active_units")


def parse_betas(text: str) -> list[float]:
    """'0.1,0.5,1' -> [0.1, 0.5, 1.0]: distinct, non-negative."""
    try:
        betas = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise VaekitError(f"--beta {text!r} is not a comma list of numbers, e.g. 0.1,0.5,1,2,4") from None
    if not betas or any(b < 0 for b in betas) or len(set(betas)) != len(betas):
        raise VaekitError(f"--beta {text!r}: give distinct non-negative values, e.g. 0.1,0.5,1,2,4")
    return betas


def run_dir(sweep_dir: Path, beta: float) -> Path:
    return sweep_dir / f"beta-{beta:g}"


def sweep(cfg: Config, betas: list[float], out: str | Path, resume: bool = False,
          quiet: bool = False) -> list[dict[str, Any]]:
    """Train one run per beta (cfg otherwise as given) into out/beta-B; write the table, plot and
    page; return the table rows. resume=True keeps finished runs and continues interrupted ones."""
    if cfg.model.model != "vae":
        raise VaekitError("a rate-distortion sweep varies the weight of the KL term, which "
                          "--model ae does not have; use --model vae")
    out = Path(out)
    taken = [run_dir(out, b) for b in betas if holds_run(run_dir(out, b))]
    if taken and not resume:
        raise VaekitError(f"{out} already holds runs ({taken[0].name}, ...); continue the sweep "
                          "with --resume or choose another --out")
    rows = []
    for beta in betas:
        folder = run_dir(out, beta)
        summary = folder / "summary.json"
        if not summary.is_file():
            one = Config(replace(cfg.data), replace(cfg.model), replace(cfg.train, beta=beta))
            if not quiet:
                print(f"sweep: beta = {beta:g} -> {folder}")
            train(one, out=folder, resume=holds_run(folder), quiet=quiet)
        test = read_json(summary)["test"]
        rows.append({"beta": beta, **{k: test[k] for k in COLUMNS[1:]}})
    write_outputs(out, rows)
    return rows


def write_outputs(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    buf.write(",".join(COLUMNS) + "\n")
    for r in rows:
        buf.write(",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k])
                           for k in COLUMNS) + "\n")
    atomic_write(out / "sweep.csv", buf.getvalue())
    figure = plots.rate_distortion(rows)
    atomic_write(out / "rate-distortion.png", figure)
    head = "".join(f"<th>{esc(c)}</th>" for c in ("beta", "rate R (nats)", "distortion D (nats)",
                                                  "ELBO (nats)", "active units", "run"))
    body = "".join(
        f"<tr><td>{r['beta']:g}</td><td>{r['rate']:.2f}</td><td>{r['distortion']:.2f}</td>"
        f"<td>{r['elbo']:.2f}</td><td>{r['active_units']}</td>"
        f'<td><a href="{esc(run_dir(Path("."), r["beta"]).name)}/">'
        f"{esc(run_dir(Path('.'), r['beta']).name)}</a></td></tr>" for r in rows)
    text = (f"<h1>Rate-distortion sweep: {esc(out.name)}</h1>"
            "<p>One run per beta, same options otherwise; figures are the test split with each "
            "run's best weights, nats per example. Dotted lines: constant ELBO (-ELBO = D + R), "
            "dashed green: the best run's; lower-left is better.</p>"
            f"{img(figure, 'distortion against rate')}<table><tr>{head}</tr>{body}</table>")
    atomic_write(out / "index.html", page(f"vaekit sweep: {out.name}", text))
