"""Pieces of the ODDS benchmark scripts (benchmarks/odds_anomaly.py, odds_protocol.py) that the
figures in docs/anomaly.md rest on: the margin report, the protocol's fit keys, and the share rule
of odds_auto_variants.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts(request):
    sys.path.insert(0, str(BENCHMARKS))
    request.addfinalizer(lambda: sys.path.remove(str(BENCHMARKS)))
    import odds_anomaly
    import odds_protocol
    return odds_anomaly, odds_protocol


def test_the_margin_is_the_seeds_means_of_paired_differences(scripts):
    """Two tables, three seeds: seed s's margin is the mean over tables of vaekit - other on split
    s, written out here; the standard error is over the three seeds."""
    odds_anomaly, _ = scripts
    rows = {"a": {"auroc": {"vaekit": [0.9, 0.8, 0.7], "iforest": [0.8, 0.8, 0.8]}},
            "b": {"auroc": {"vaekit": [0.6, 0.6, 0.9], "iforest": [0.5, 0.7, 0.6]}}}
    want = [(0.1 + 0.1) / 2, (0.0 - 0.1) / 2, (-0.1 + 0.3) / 2]  # 0.1, -0.05, 0.1
    np.testing.assert_allclose(odds_anomaly.seed_margins(rows, "iforest"), want)
    se = np.std(want, ddof=1) / np.sqrt(3)
    line = odds_anomaly.margin_line(rows, "iforest")
    assert "+0.1000, -0.0500, +0.1000" in line
    assert f"mean {np.mean(want):+.4f}" in line and f"over the seeds {se:.4f}" in line


@pytest.mark.parametrize("options", [{}, {"warmup": 50}, {"trim": 0.2, "batch": "256",
                                                         "warmup": 25, "lr": 2e-3}])
def test_a_fit_key_reads_back_as_the_same_fit(scripts, options):
    """Results files are keyed by Fit.key(); --all reads candidates back with Fit.from_key. An
    option at its default stays out of the key, so files made before it existed keep theirs."""
    _, odds_protocol = scripts
    fit = odds_protocol.Fit(200, 0.7071, likelihood="laplace-fixed", **options)
    assert odds_protocol.Fit.from_key(fit.key()) == fit
    assert ("warmup" in fit.key()) == ("warmup" in options)
    assert odds_protocol.Fit.from_key("200|0.7071|laplace-fixed|trim 0.2").warmup == 0


def test_the_candidates_are_the_product_of_the_option_lists_in_fits_field_order(scripts):
    """Each of the command line's lists fills the Fit field of its place: 2 x 2 lists give 4 fits,
    the last list varying fastest."""
    _, odds_protocol = scripts
    args = odds_protocol.argparse.Namespace(
        all=False, steps=[100, 200], sigmas=[0.7071], dropouts=[0.0], likelihoods=["laplace-fixed"],
        trims=[0.2], weight_decays=[0.0], latents=["rule"], priors=["normal"], lrs=[1e-3],
        batch_sizes=["rule"], warmups=[0, 50])
    assert len(odds_protocol.OPTION_LISTS) == len(odds_protocol.Fit._fields)
    got = odds_protocol.fits(args)
    want = [odds_protocol.Fit(s, 0.7071, 0.0, "laplace-fixed", 0.2, warmup=w)
            for s in (100, 200) for w in (0, 50)]
    assert got == want


@pytest.fixture(scope="module")
def variants(request):
    sys.path.insert(0, str(BENCHMARKS))
    request.addfinalizer(lambda: sys.path.remove(str(BENCHMARKS)))
    import odds_auto_variants
    return odds_auto_variants


def test_the_share_rule_keeps_the_longer_tail_and_the_first_on_a_tie(variants):
    """Three candidates' fit-row scores: a bulk alone, the same bulk with 5% of its rows 10
    standard deviations out, and the bulk again: the second is kept. Between two equal bulks (equal
    shares) the first is."""
    rng = np.random.default_rng(0)
    bulk = rng.normal(size=400)
    tail = bulk.copy()
    tail[:20] += 10
    evals = [np.full(3, float(i)) for i in range(3)]
    assert variants.share_choice([bulk, tail, bulk], evals) is evals[1]
    assert variants.share_choice([bulk, bulk.copy()], evals[:2]) is evals[0]


def iris_with_a_few_of_the_third_species():
    """Rows off the structure of the rest (the -ELBO's kind of anomaly; the detector keeps it)."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return np.vstack([x[y != 0], x[y == 0][:12]]), np.r_[np.zeros(100), np.ones(12)]


def rows_in_the_gap_between_two_clouds():
    """Rows spread in the gap between two clouds (the distance's kind; the detector keeps it), and
    4 far out, which the -ELBO sets apart: the detector's reference is then smaller than the
    training rows, which the script's plain distance and LOF must not inherit."""
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(400, 4)) + np.where(rng.random((400, 1)) < 0.5, -4.0, 4.0)
    odd = np.vstack([rng.uniform(-1.5, 1.5, size=(20, 4)), 12 + rng.normal(size=(4, 4))])
    return np.vstack([normal, odd]), np.r_[np.zeros(400), np.ones(24)]


@pytest.mark.parametrize("data, kept", [(iris_with_a_few_of_the_third_species, "elbo"),
                                        (rows_in_the_gap_between_two_clouds, "neighbours")])
def test_the_share_rule_over_the_elbo_alone_is_the_detectors_auto(variants, monkeypatch, data,
                                                                   kept):
    """With the weight 1 alone (the -ELBO and the distance r to all the reference rows) the
    script's rule must reproduce the detector's own choice, on data where it keeps either score:
    the detector scores with the -ELBO or the vouched distance, `auto (plain r)` with the -ELBO or
    r."""
    x, y = data()
    x, y = x.astype(np.float32), y.astype(int)
    monkeypatch.setattr(variants, "RULES", {"auto w 1": (1,)})
    got = variants.aurocs(x[::2], x[1::2], y[1::2], seed=0)
    other = {"elbo": "neighbours", "neighbours": "elbo"}[kept]
    assert got["auto (plain r)"] == got[kept] != got[other]  # the detector kept `kept`
    assert got["auto"] == got["elbo" if kept == "elbo" else "vouched r"]
    assert got["auto w 1"] == got["auto (plain r)"]


def test_the_log_distance_floors_copies_at_the_smallest_positive_distance(variants):
    """A row whose nearest rows are all copies of it has r = 0; log r would be -inf and break the
    median and MAD of the share, so it is floored at the fit rows' smallest positive r."""
    fit_r = np.array([0.0, 0.5, 2.0, 0.0])
    np.testing.assert_allclose(variants.log_distance(np.array([0.0, 0.25, 4.0]), fit_r),
                               np.log([0.5, 0.5, 4.0]))
    assert np.all(variants.log_distance(np.zeros(3), np.zeros(3)) == 0.0)  # nothing positive: 1


def test_the_scripts_distances_and_lof_count_every_training_row(variants):
    """Where the detector keeps the distance and the -ELBO sets rows apart, its own reference is
    smaller than the training rows; the script's plain distance r and LOF are over all of them
    (scikit-learn and numpy here), and its vouched distance is the detector's own score."""
    from sklearn.neighbors import LocalOutlierFactor

    from vaekit import VAEAnomalyDetector

    x, _ = rows_in_the_gap_between_two_clouds()
    x_fit, x_eval = x[::2].astype(np.float32), x[1::2].astype(np.float32)
    det = VAEAnomalyDetector(random_state=0).fit(x_fit)
    assert det.method_ == "neighbours" and len(det.reference_) < len(x_fit)  # the premise
    got = variants.fitted_scores(det, x_fit, x_eval)
    fit = x_fit.astype(np.float64)
    center, scale = fit.mean(0), fit.std(0)
    u_fit, u_eval = (fit - center) / scale, (x_eval - center) / scale
    lof = LocalOutlierFactor(n_neighbors=20, metric="manhattan", novelty=True).fit(u_fit)
    np.testing.assert_allclose(got["fit"]["lof"], -lof.negative_outlier_factor_, rtol=1e-9)
    np.testing.assert_allclose(got["eval"]["lof"], -lof.score_samples(u_eval), rtol=1e-9)
    d = np.sort(np.abs(u_eval[:, None, :] - u_fit[None, :, :]).sum(-1), axis=1)
    plain = np.where(d[:, 0] == 0, d[:, 1:4].mean(1), d[:, :3].mean(1))
    np.testing.assert_allclose(got["eval"]["r"], plain, rtol=1e-9)
    np.testing.assert_allclose(got["eval"]["vouched r"], -det.score_samples(x_eval), rtol=1e-9)
