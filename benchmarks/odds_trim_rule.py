"""A trim that follows the data, measured by the protocol of docs/anomaly.md (issue 12): instead of
leaving the fixed fraction TRIM of each batch with the lowest ELBO out of the loss, leave out the
rows whose ELBO lies below the batch's median - K x 1.4826 x MAD (its median absolute deviation,
scaled to a normal's standard deviation), at most half the batch: a batch with few outliers loses
few rows, one with many loses more.

The rule replaces vaekit.objectives.trimmed_mean for this process only; `--ks` lists the K values.
Each runs as one candidate of benchmarks/odds_protocol.py (the same splits, inner and test fits),
with the default's other options (400 steps, Laplace of scale 1/sqrt(2), `elbo`, one model); in
the results file and the tables a K shows as the trim 0.2 + K/100 (K = 2 -> "trim 0.22"), a code
for the rule, not a fraction.

    python benchmarks/odds_trim_rule.py --out odds-trim-rule.json --ks 2,3   # 20 tables, 2 seeds
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import odds_protocol  # noqa: E402

import vaekit.objectives as objectives  # noqa: E402

fixed_fraction = objectives.trimmed_mean
RULES: dict[float, float] = {}  # the code passed as trim -> K


def trimmed_by_mad(values: Tensor, trim: float) -> Tensor:
    """The mean of values without those below median - K * 1.4826 * MAD (at most half dropped)."""
    k = RULES.get(round(trim, 4))
    if k is None:
        return fixed_fraction(values, trim)
    v = values.detach()
    med = v.median()
    keep = v >= med - k * 1.4826 * (v - med).abs().median()
    if keep.sum() < math.ceil(len(v) / 2):
        keep = v >= v.sort().values[len(v) // 2]
    return values[keep].mean()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results JSON (continued if it exists)")
    p.add_argument("--ks", type=odds_protocol.comma(float), default=[2.0, 3.0],
                   help="K of the rule (median - K x scaled MAD), comma list")
    p.add_argument("--seeds", default="2")
    p.add_argument("--tables", default=None)
    p.add_argument("--threads", default="1")
    args = p.parse_args()
    for k in args.ks:
        RULES[round(0.2 + k / 100, 4)] = k
    objectives.trimmed_mean = trimmed_by_mad
    odds_protocol.main(["--out", str(args.out), "--steps", "400", "--sigmas", "0.7071",
                        "--likelihoods", "laplace-fixed", "--trims", ",".join(f"{c:g}" for c in RULES),
                        "--methods", "elbo", "--members", "1", "--seeds", args.seeds,
                        "--threads", args.threads, *(["--tables", args.tables] if args.tables else [])])


if __name__ == "__main__":
    main()
