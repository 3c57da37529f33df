"""The ancestral step's noise variance (``variance="beta" | "beta_tilde" | "analytic"``) against exact truths.

Deterministic checks: each choice's formula, and that ``analytic`` (Bao et al. 2022) equals the exact
reverse-kernel variance v P_s / P_t for Gaussian data N(m, s² I) (P_t = α_t² s² + σ_t², the marginal
variance), where Γ_t = E‖∇ log p_t‖²/d = 1/P_t. Statistical checks on the oracle use mixtures that the
default was not chosen on (held out, see benchmarks/ancestral_variance.py).
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.sampling import sample_ancestral, sample_pc
from scoresde.sampling._common import tweedie_denoise
from scoresde.sampling.steps import ANCESTRAL_VARIANCES, ancestral_variance
from tests.common import BUILTIN_SDES

EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}

# Held out: 4 modes of unequal weights and widths (0.1 … 0.5), well separated (nearest-mode distance 4 =
# 8 of the widest stds: mislabelled fraction < 1e-4).
HELD_OUT = sd.GaussianMixture([0.1, 0.2, 0.3, 0.4], [[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]],
                              [0.1, 0.2, 0.3, 0.5])


def _times(sde_name):
    t = torch.tensor([0.9, 0.3, 0.02, 2e-3], dtype=torch.float64)
    return t, t - torch.tensor([0.05, 0.01, 1e-3, 1e-3], dtype=torch.float64)


@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_variance_formulas(sde_name):
    sde = BUILTIN_SDES[sde_name]()
    t, s = _times(sde_name)
    a, v = sde.transition_coeffs(t, s)
    var_t, var_s = sde.marginal_coeffs(t)[1] ** 2, sde.marginal_coeffs(s)[1] ** 2
    score = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(ancestral_variance(sde, t, s, score, "beta"), v, rtol=1e-12)
    assert torch.allclose(ancestral_variance(sde, t, s, score, "beta_tilde"), v * var_s / var_t, rtol=1e-12)
    # The clipped ends of "analytic": σ_t² Γ ≥ 1 (point-mass data) gives β̃; Γ = 0 gives v / a².
    huge = torch.full((4, 3), 1e6, dtype=torch.float64)
    assert torch.allclose(ancestral_variance(sde, t, s, huge, "analytic"), v * var_s / var_t, rtol=1e-12)
    assert torch.allclose(ancestral_variance(sde, t, s, torch.zeros(4, 3, dtype=torch.float64), "analytic"),
                          v / a**2, rtol=1e-12)


@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
@pytest.mark.parametrize("s2", [0.01, 0.25, 4.0])
def test_analytic_variance_is_exact_for_gaussian_data(sde_name, s2):
    """For x_0 ~ N(m, s² I) the reverse kernel q(x_s | x_t) is Gaussian with variance v P_s / P_t; the
    analytic formula with Γ_t = 1/P_t must equal it (to rounding) at every time, coarse or fine step."""
    sde = BUILTIN_SDES[sde_name]()
    t, s = _times(sde_name)
    (al_t, sd_t), (al_s, sd_s) = sde.marginal_coeffs(t), sde.marginal_coeffs(s)
    P_t, P_s = al_t**2 * s2 + sd_t**2, al_s**2 * s2 + sd_s**2
    v = sde.transition_coeffs(t, s)[1]
    for i in range(4):  # the batch estimate is shared by the batch: one time per call
        ti, si = t[i:i + 1].expand(5), s[i:i + 1].expand(5)
        score = torch.full((5, 2), float(P_t[i]) ** -0.5, dtype=torch.float64)  # ‖s‖²/d = 1/P_t exactly
        got = ancestral_variance(sde, ti, si, score, "analytic")
        assert torch.allclose(got, (v * P_s / P_t)[i].expand(5), rtol=1e-9), (i, got[0], (v * P_s / P_t)[i])


def test_analytic_matches_a_gaussian_target_by_sampling():
    """End to end on Gaussian data N(1, 0.1² I) in D = 4 under VP at only 50 steps, where β̃ gives 53 %
    too little variance (measured; the exact variance recursion predicts −52.8 %): the analytic choice
    reproduces the exact variance of p_eps. n·D = 16k squared deviations: relative sd of the variance estimate
    sqrt(2/(nD)) = 1.1 %, allowed 4 sd + 1 % for the batch estimate of Γ."""
    sde = sd.VPSDE()
    data = sd.GaussianMixture([1.0], [[1.0] * 4], 0.1)
    n = 4000
    res = sample_ancestral(data.score_fn(sde), sde, (n, 4), steps=50, denoise=False, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    alpha, std = (float(c) for c in sde.marginal_coeffs(torch.tensor([1e-3], dtype=torch.float64)))
    exact_var = alpha**2 * 0.01 + std**2
    rel = float(res.x.var(0).mean()) / exact_var - 1
    assert abs(rel) < 4 * math.sqrt(2 / (n * 4)) + 0.01, f"{rel:+.2%}"
    tilde = sample_ancestral(data.score_fn(sde), sde, (n, 4), steps=50, denoise=False, dtype=torch.float64,
                             variance="beta_tilde", generator=torch.Generator().manual_seed(0))
    assert float(tilde.x.var(0).mean()) / exact_var - 1 < -0.4  # the defect this option fixes


def _spread_error(mix, sde, eps, x, denoise, n_ref=100_000):
    ref = mix.at_time(sde, eps).sample(n_ref, generator=torch.Generator().manual_seed(99))
    if denoise:
        ref = tweedie_denoise(sde, mix.score_fn(sde), ref, torch.full((n_ref,), eps, dtype=torch.float64))

    def stats(y):
        d2, k = (torch.cdist(y.double(), mix.means) ** 2).min(1)
        return d2, torch.bincount(k, minlength=mix.num_components).double() / y.shape[0]

    (d2, f), (d2_ref, f_ref) = stats(x), stats(ref)
    se = math.sqrt(float(d2.var()) / len(d2) + float(d2_ref.var()) / n_ref) / float(d2_ref.mean())
    tv_sd = 0.5 * float(torch.sqrt(f_ref * (1 - f_ref) * (1 / len(d2) + 1 / n_ref)).sum())
    return float(d2.mean() / d2_ref.mean()) - 1, se, 0.5 * float((f - f_ref).abs().sum()), tv_sd


@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_default_variance_on_held_out_mixture_at_100_steps(sde_name):
    """4000 samples, 100 steps, held-out mixture. Predicted biases at 100 steps (exact per-mode variance
    recursion, benchmarks/ancestral_variance.py measures them): analytic ≈ −2 %, β̃ −8 … −14 %. Allowed:
    4 Monte-Carlo sd (≈ 5 %) + 2.5 % for analytic; β̃ must be measurably worse with the same noise."""
    sde, eps = BUILTIN_SDES[sde_name](), EPS[sde_name]
    n = 4000
    runs = {v: sample_ancestral(HELD_OUT.score_fn(sde), sde, (n, 2), steps=100, eps=eps, variance=v,
                                generator=torch.Generator().manual_seed(4)) for v in ("analytic", "beta_tilde")}
    rel, se, tv, tv_sd = _spread_error(HELD_OUT, sde, eps, runs["analytic"].x, True)
    assert abs(rel) < 4 * se + 0.025, f"analytic on {sde_name}: {rel:+.2%} ± {se:.2%}"
    assert tv < 4 * tv_sd
    rel_tilde = _spread_error(HELD_OUT, sde, eps, runs["beta_tilde"].x, True)[0]
    assert rel_tilde < rel - 0.04, (rel_tilde, rel)  # same noise: the difference is systematic


def test_variance_reaches_sample_pc_and_is_checked():
    sde = sd.VPSDE()
    score = HELD_OUT.score_fn(sde)
    for v in ANCESTRAL_VARIANCES:
        a = sample_ancestral(score, sde, (16, 2), steps=10, variance=v, generator=torch.Generator().manual_seed(1))
        b = sample_pc(score, sde, (16, 2), steps=10, predictor="ancestral", corrector="none",
                      predictor_kwargs={"variance": v}, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a.x, b.x)
    default = sample_ancestral(score, sde, (16, 2), steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(default.x, sample_ancestral(score, sde, (16, 2), steps=10, variance="analytic",
                                                   generator=torch.Generator().manual_seed(1)).x)
    with pytest.raises(ValueError, match=r"unknown variance 'beta_hat'; choose one of \['analytic', 'beta', "):
        sample_ancestral(score, sde, (4, 2), steps=3, variance="beta_hat")
    with pytest.raises(ValueError, match=r"unknown variance 'x'"):
        sample_pc(score, sde, (4, 2), steps=3, predictor="ancestral", predictor_kwargs={"variance": "x"})
    with pytest.raises(ValueError, match=r"predictor_kwargs has unknown keys \['variance'\] for the predictor "
                                         r"'reverse_diffusion'; it accepts \[\]"):
        sample_pc(score, sde, (4, 2), steps=3, predictor_kwargs={"variance": "beta"})
    with pytest.raises(TypeError, match="predictor_kwargs must be a dict or None, got list"):
        sample_pc(score, sde, (4, 2), steps=3, predictor="ancestral", predictor_kwargs=["beta"])


@pytest.mark.slow  # ~1-2 min CPU per SDE on 2 shared cores
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_default_variance_within_2_percent_at_1000_steps(sde_name):
    """The issue's target, |spread error| ≤ 2 % at 1000 steps, on two held-out mixtures: the 2-D one above
    (40k samples: SE ≈ 0.6 %) and an 8-D one (20k samples: SE ≈ 0.4 %); predicted bias ≤ 0.2 %. Mode
    weights within 4 sd of the exact frequencies."""
    sde, eps = BUILTIN_SDES[sde_name](), EPS[sde_name]
    g = torch.Generator().manual_seed(1)
    means8 = torch.randn(3, 8, generator=g, dtype=torch.float64)
    eight = sd.GaussianMixture([0.6, 0.3, 0.1], 4.0 * means8 / means8.norm(dim=1, keepdim=True), [0.3, 0.2, 0.4])
    for mix, n in ((HELD_OUT, 40_000), (eight, 20_000)):
        res = sample_ancestral(mix.score_fn(sde), sde, (n, mix.dim), steps=1000, eps=eps,
                               generator=torch.Generator().manual_seed(7))
        rel, se, tv, tv_sd = _spread_error(mix, sde, eps, res.x, True)
        assert abs(rel) < 0.02, f"{sde_name}, D={mix.dim}: {rel:+.2%} ± {se:.2%}"
        assert tv < 4 * tv_sd
