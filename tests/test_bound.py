"""The continuous-time bound against exact identities on the Gaussian-mixture oracle.

For the exact score and x_0 ~ p_0 (see scoresde.likelihood.bound):   E[L] = H(p_eps) − D ln α(eps) + KL(p_T ‖ π),
and a score error e(x, t) adds ½ ∫ g² E_{p_t}‖e‖² dt. H and KL are Monte-Carlo averages of exact log-densities.
The DSM form of the bound has a per-sample std of 10–35 nats here (the ‖z‖²/σ² part that the offset cancels
only in expectation), hence the large sample sizes; tolerances are 4 standard errors of all estimates combined.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import scoresde as sd
from scoresde.likelihood.bound import bound_offset, nll_bound, nll_bound_terms, prior_term
from scoresde.losses import dsm_loss
from tests.common import seeded, two_mode_mixture

EPS = 1e-5
N = 200_000


def _entropy_and_kl(mix, sde, n, g):
    p_eps, p_T = mix.at_time(sde, EPS), mix.at_time(sde, sde.T)
    y = p_eps.sample(n, generator=g)
    xT = p_T.sample(n, generator=g)
    return -p_eps.log_prob(y), p_T.log_prob(xT) - sde.prior_logp(xT)


def _log_alpha_eps(sde):
    return float(sde.log_mean_coeff(torch.tensor([EPS], dtype=torch.float64)))


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(sigma_max=50.0), sd.VESDE(sigma_max=2.0),
                                 sd.VESDE(sigma_max=0.7)], ids=repr)
def test_bound_identity_exact_score(sde):
    g = seeded(10)
    mix = two_mode_mixture()
    x0 = mix.sample(N, generator=g)
    bound = nll_bound(mix.score_fn(sde), sde, x0, generator=g)
    H, KL = _entropy_and_kl(mix, sde, N, g)
    predicted = H.mean() - mix.dim * _log_alpha_eps(sde) + KL.mean()
    se = math.sqrt((bound.var() + H.var() + KL.var()) / N)
    assert abs(float(bound.mean() - predicted)) < 4 * se, (float(bound.mean()), float(predicted), se)
    # ... and so it lies above the exact NLL E[−log p_0(x_0)], by KL(p_T‖π) plus the tiny H(p_eps) − H(p_0).
    nll = -mix.log_prob(x0).mean()
    gap = float(bound.mean() - nll)
    assert gap > float(KL.mean()) - 4 * se - 0.01


def test_gap_shrinks_as_prior_matches():
    """VE with σ_max = 0.7, 2, 50 on data of scale ~2: KL(p_T‖π) falls from nats to ~1e-4; so does the gap."""
    g = seeded(11)
    mix = two_mode_mixture()
    x0 = mix.sample(N, generator=g)
    nll = float(-mix.log_prob(x0).mean())
    gaps, kls = [], []
    for sigma_max in (0.7, 2.0, 50.0):
        sde = sd.VESDE(sigma_max=sigma_max)
        gaps.append(float(nll_bound(mix.score_fn(sde), sde, x0, generator=g).mean()) - nll)
        kls.append(float(_entropy_and_kl(mix, sde, N, g)[1].mean()))
    assert kls[0] > 1.0 and kls[0] > kls[1] > kls[2]
    # se of each gap ≈ 13/sqrt(2e5) ≈ 0.03 nats: the gaps are ordered like the KLs, far beyond that.
    assert gaps[0] > gaps[1] + 0.3 and gaps[1] > gaps[2]
    assert abs(gaps[2]) < 0.15


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=repr)
def test_perturbed_score_gap_grows(sde):
    """s_θ = s + c adds exactly ½‖c‖² ∫_eps^T g² dt to the expected bound (∫ g² by quadrature)."""
    mix = two_mode_mixture()
    exact = mix.score_fn(sde)
    g2 = lambda t: float(sde.g2(torch.tensor([t], dtype=torch.float64)))  # noqa: E731
    int_g2 = integrate.quad(g2, EPS, sde.T, limit=200)[0]
    c = torch.tensor([1.0, -0.4], dtype=torch.float64) / math.sqrt(int_g2)  # a gap of 0.58 nats

    def shifted(x, t):
        return exact(x, t) + c

    x0 = mix.sample(50_000, generator=seeded(12))
    # Common random numbers: the same (t, z) for both models, so the difference has a small variance.
    diff = nll_bound(shifted, sde, x0, generator=seeded(13)) - nll_bound(exact, sde, x0, generator=seeded(13))
    expected = 0.5 * float(c @ c) * int_g2
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert abs(float(diff.mean()) - expected) < 4 * se, (float(diff.mean()), expected, se)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(),
                                 sd.LinearSDE(lambda t: -0.5 * (1 + t), lambda t: torch.sqrt(1 + t) + 0.5)],
                         ids=lambda s: type(s).__name__)
def test_offset_is_integral_of_score_independent_terms(sde):
    """−D ln(σ(T)/σ(eps)) − D ln α(eps) equals ½∫(−g²D/σ² − 2∇·f) dt − D ln α(eps) by quadrature."""
    D = 3

    def integrand(log_t):
        t = torch.tensor([math.exp(log_t)], dtype=torch.float64)
        std = sde.marginal_coeffs(t)[1]
        f = sde.drift(torch.ones(1, 1, dtype=torch.float64), t)[0, 0]  # linear drift f(t)·x
        return float(0.5 * (-sde.g2(t) * D / std**2 - 2 * D * f)) * math.exp(log_t)  # dt = t d(log t)

    quad = integrate.quad(integrand, math.log(EPS), math.log(sde.T), limit=200, epsabs=1e-10)[0]
    expected = quad - D * _log_alpha_eps(sde)
    assert float(bound_offset(sde, D, eps=EPS)) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_prior_term_closed_form_matches_monte_carlo():
    sde = sd.VESDE(sigma_max=3.0)
    x0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    g = seeded(14)
    mean, std = sde.marginal(x0.expand(100_000, 3), torch.ones(100_000, dtype=torch.float64))
    xT = mean + std[:, None] * torch.randn(100_000, 3, generator=g, dtype=torch.float64)
    mc = -sde.prior_logp(xT)
    # se = std/sqrt(n) ≈ 1.2/316 ≈ 0.004
    assert float(prior_term(sde, x0)[0]) == pytest.approx(float(mc.mean()), abs=4 * float(mc.std()) / 316)


def test_relation_to_dsm_loss_and_gradients():
    """L = (T − eps)·dsm_loss(likelihood, IS) + score-independent terms, sample by sample; differentiable."""
    sde = sd.VPSDE()
    mix = two_mode_mixture()
    x0 = mix.sample(64, generator=seeded(15)).requires_grad_(True)
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    score = lambda x, t: mix.score_fn(sde)(x, t) + theta  # noqa: E731
    terms = nll_bound_terms(score, sde, x0, generator=seeded(16))
    dsm = dsm_loss(score, sde, x0, weighting="likelihood", importance_sampling=True, generator=seeded(16))
    torch.testing.assert_close(terms.total - terms.prior - terms.offset, (sde.T - EPS) * dsm)
    torch.testing.assert_close(terms.prior, prior_term(sde, x0))
    terms.total.sum().backward()
    assert theta.grad is not None and x0.grad is not None and torch.isfinite(x0.grad).all()


def test_bad_inputs():
    sde = sd.VPSDE()
    mix = two_mode_mixture()
    x0 = mix.sample(4, generator=seeded(17))
    with pytest.raises(ValueError, match="eps"):
        nll_bound(mix.score_fn(sde), sde, x0, eps=2.0)
    with pytest.raises(ValueError, match="samples"):
        nll_bound(mix.score_fn(sde), sde, x0, samples=0)
    with pytest.raises(TypeError, match="floating"):
        nll_bound(mix.score_fn(sde), sde, x0.long())
    assert np.isfinite(float(bound_offset(sde, 2)))
