"""The iaf posterior against independent oracles: autograd Jacobians (change of variables), the
diagonal Gaussian (identity flow), and log p(x) by quadrature for importance sampling."""

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.config import ModelConfig
from vaekit.distributions import POSTERIORS, DiagonalGaussian, StandardNormal, kl_terms
from vaekit.evaluate import log_likelihood
from vaekit.flows import IAF, MADE, IAFPosterior
from vaekit.model import VAE

F64 = torch.float64


def random_flow(latent: int, steps: int = 2, hidden: int = 8) -> IAF:
    flow = IAF(latent, steps, hidden).double()
    with torch.no_grad():  # far from the identity, so a wrong term shows
        for p in flow.parameters():
            p.normal_(0, 0.7)
    return flow


def test_made_outputs_depend_only_on_earlier_dimensions():
    torch.manual_seed(0)
    made = MADE(5, 5, 12).double()
    with torch.no_grad():
        for p in made.parameters():
            p.normal_()
    h = torch.randn(5, dtype=F64)
    for part in (0, 1):  # m, then s
        J = jacobian(lambda z, i=part: made(z[None], h[None])[i][0], torch.randn(5, dtype=F64))
        assert torch.equal(J.triu(), torch.zeros_like(J)), J  # d out_i / d z_j = 0 for j >= i


def test_iaf_log_q_is_the_change_of_variables_with_an_autograd_jacobian():
    torch.manual_seed(1)
    L = 3
    flow = random_flow(L)
    loc, logvar, ctx = (torch.randn(1, L, dtype=F64) for _ in range(3))
    q = IAFPosterior(loc, logvar, ctx, flow)
    eps = torch.randn(1, L, dtype=F64)
    z = q.from_noise(eps)
    J = jacobian(lambda e: IAFPosterior(loc, logvar, ctx, flow).from_noise(e[None])[0], eps[0])
    oracle = Independent(Normal(torch.zeros(L, dtype=F64), 1.0), 1).log_prob(eps[0]) \
        - torch.linalg.slogdet(J)[1]
    assert torch.allclose(q.log_prob(z)[0], oracle, rtol=0, atol=1e-10)  # kept from the draw
    assert torch.allclose(q.log_prob(z.clone())[0], oracle, rtol=0, atol=1e-8)  # by inversion
    assert float(torch.linalg.slogdet(J)[1] - logvar.sum() / 2).__abs__() > 0.1  # the flow acts


def test_iaf_inverse_recovers_the_base_draw_for_a_batch_of_draws():
    torch.manual_seed(2)
    flow = random_flow(4, steps=3)
    q = IAFPosterior(*(torch.randn(6, 4, dtype=F64) for _ in range(3)), flow)
    z = q.rsample((5,))  # (5, 6, 4)
    assert torch.allclose(q.log_prob(z.clone()), q.log_prob(z), rtol=0, atol=1e-8)


def test_iaf_with_no_steps_is_the_diagonal_gaussian():
    torch.manual_seed(3)
    loc, logvar = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    q = IAFPosterior(loc, logvar, torch.randn(4, 3, dtype=F64), IAF(3, 0, 8).double())
    gauss = DiagonalGaussian(loc, logvar)
    eps = torch.randn(7, 4, 3, dtype=F64)
    z = q.from_noise(eps)
    assert torch.equal(z, gauss.from_noise(eps))
    oracle = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1).log_prob(z)
    assert torch.allclose(q.log_prob(z), oracle, rtol=0, atol=1e-12)
    assert torch.allclose(q.log_prob(z.clone()), oracle, rtol=0, atol=1e-12)


def test_importance_sampled_log_px_with_an_iaf_proposal_matches_quadrature():
    torch.manual_seed(4)
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(8,), latent_dim=2, posterior="iaf",
                            flow_steps=2, flow_hidden=8), (6,)).double()
    with torch.no_grad():  # a flow far from the identity on a proposal wider than the posterior
        for made in model.posterior_head.steps:
            for p in made.parameters():
                p.normal_(0, 0.5)
            made.out.bias[2:].fill_(2.0)  # gates near 0.88: a wrong log-det shifts log q ~1 nat
        model.encoder[-1].bias[2:4] += 2.0  # the base's log-variance
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=F64))
    g = torch.linspace(-9, 9, 601, dtype=F64)  # log p(x) = log sum p(x|z) p(z) dz on a grid
    z = torch.cartesian_prod(g, g)
    log_joint = torch.distributions.Bernoulli(logits=model.decoder(z)[:, None, :]).log_prob(x).sum(-1) \
        + Normal(0.0, 1.0).log_prob(z).sum(-1)[:, None]
    exact = torch.logsumexp(log_joint, 0) + 2 * math.log(float(g[1] - g[0]))
    model.shift, model.scale = model.shift.double(), model.scale.double()
    torch.manual_seed(5)
    with torch.no_grad():
        log_w = model.log_weights(x, 20_000)  # (K, B)
    w = torch.exp(log_w - log_w.max(0).values)
    stderr = w.std(0) / w.mean(0) / math.sqrt(len(w))  # delta method: s.e. of log mean(w)
    est = torch.logsumexp(log_w, 0) - math.log(len(w))
    assert ((est - exact).abs() < 4 * stderr + 1e-3).all(), (est, exact, stderr)
    assert stderr.max() < 0.05
    torch.manual_seed(5)
    assert torch.allclose(log_likelihood(model, x, k=200), exact.detach(), atol=0.3)


@pytest.mark.parametrize("data", ["tiny_images", "tiny_table"])
def test_train_and_evaluate_an_iaf_posterior(data, request, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", request.getfixturevalue(data), "--posterior",
                           "iaf", "--flow-steps", "2", "--flow-hidden", "16", "--epochs", "2",
                           "--hidden", "16", "--latent-dim", "3", "--out", run, "--threads", "1")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", run, "--iw-samples", "10", "--json", "--limit", "50")
    assert code == 0, err
    result = json.loads(out)  # KL by draws: its standard error; no O(N^2 L) pairwise inversions
    assert result["rate_stderr"] > 0 and result["mutual_information"] is None
    code, out, err = run_cli(capsys, "eval", run, "--limit", "50")  # the text table says so
    assert code == 0 and "None" not in out, out
    assert re.search(r"mutual_information +n/a for this model", out), out
    code, _, err = run_cli(capsys, "sample", run, "-n", "4", "--out", tmp_path / "s.npy")
    assert code == 0, err
    for method in ("elbo", "iw-nll", "kl"):  # anomaly scores: the prior's own density
        code, _, err = run_cli(capsys, "score", run, "--method", method, "--samples", "4",
                               "--out", tmp_path / f"{method}.csv")
        assert code == 0, (method, err)
        scores = np.genfromtxt(tmp_path / f"{method}.csv", delimiter=",", names=True)["score"]
        assert np.isfinite(scores).all()
    code, _, err = run_cli(capsys, "encode", run, "--with-logvar", "--out", tmp_path / "e.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "variance" in err


def test_iaf_kl_estimate_stays_tame_where_the_elbo_cannot_pin_the_base_scale():
    """A dimension the decoder ignores can sit where sigma_0 is large and the gates nearly 0
    (sigma_0 * g fixed): the ELBO is the same there, but the Monte Carlo KL's spread grows as
    sigma_0^2. mnist-nll-iaf drifted there (base log-variance 5.7 by epoch 10, 20+ at the blow-up
    in epoch 12): the encoder's raw log-variance must not set sigma_0 above the prior's 1."""
    torch.manual_seed(7)
    L = 3
    flow = IAF(L, 2, 8).double()
    with torch.no_grad():
        for made in flow.steps:
            made.out.bias[L:].fill_(-5.0)  # gates sigmoid(-5) = 0.007: z_T barely sees z_0
    raw = torch.cat([torch.randn(4, L), torch.full((4, L), 9.0), torch.randn(4, L)], -1).double()
    q = POSTERIORS["iaf"].build(raw, L, flow)
    assert (q.logvar <= 0).all()
    p = StandardNormal(L, dtype=F64)
    draws = torch.stack([kl_terms(q, p, q.rsample()).total for _ in range(400)])  # (400, 4)
    assert draws.std(0).max() < 5.0, draws.std(0)  # unbounded: about 8000 nats


def test_iaf_kl_to_the_standard_normal_is_unbiased_and_exact_for_an_identity_flow():
    torch.manual_seed(6)
    loc, logvar, ctx = (torch.randn(4, 3, dtype=F64) for _ in range(3))
    p = StandardNormal(3, dtype=F64)
    q0 = IAFPosterior(loc, logvar, ctx, IAF(3, 0, 8).double())
    closed = kl_divergence(Independent(Normal(loc, torch.exp(0.5 * logvar)), 1),
                           Independent(Normal(torch.zeros(3, dtype=F64), 1.0), 1))
    assert torch.allclose(kl_terms(q0, p, q0.rsample((3,))).total, closed, rtol=0, atol=1e-12)
    q = IAFPosterior(loc, logvar, ctx, random_flow(3))
    S = 40_000
    std_normal = Independent(Normal(torch.zeros(3, dtype=F64), 1.0), 1)
    zr = q.rsample((S,))
    kl = kl_terms(q, p, zr)  # the control-variate estimate, from these draws
    z0, logdet = q.base_of(zr)
    spread_cv = (std_normal.log_prob(z0) - std_normal.log_prob(zr) - logdet).std(0)
    z = q.rsample((S,)).clone()  # independent draws, log q by inversion: the plain estimate
    plain = q.log_prob(z) - std_normal.log_prob(z)
    stderr = (plain.var(0) + spread_cv.square()).sqrt() / math.sqrt(S)
    assert not kl.analytic
    assert ((kl.total - plain.mean(0)).abs() < 4 * stderr).all(), (kl.total, plain.mean(0), stderr)
