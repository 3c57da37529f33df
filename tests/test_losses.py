"""Losses against the exact oracle: minimal at the true score, unbiased importance sampling, SSM ≡ DSM."""

import math

import pytest
import scipy.integrate
import torch

import scoresde as sd
from scoresde._checks import append_dims
from scoresde.losses import WEIGHTINGS, ddpm_loss, dsm_loss, sample_time, smld_loss, ssm_loss
from tests.common import BUILTIN_SDES, OrnsteinUhlenbeck, two_mode_mixture

SDES = {**BUILTIN_SDES, "ou": OrnsteinUhlenbeck}


def paired_mean(diff):
    return diff.mean().item(), diff.std().item() / math.sqrt(diff.numel())


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none"])
def test_dsm_is_minimal_at_the_exact_score(name, weighting):
    """E[ℓ(s*+δ)] − E[ℓ(s*)] = ½ E[λ‖δ‖²] > 0 for any δ(x_t, t) (the cross term has zero mean because s* is the
    exact score). Checked per sample with common random numbers: the residual must have zero mean."""
    sde, mix, n = SDES[name](), two_mode_mixture(), 20000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(0))
    t, _ = sample_time(sde, n, eps=1e-5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=x0.dtype)
    mean, std = sde.marginal(x0, t)
    xt = mean + std[:, None] * noise
    exact = mix.score_fn(sde)
    lam = WEIGHTINGS[weighting](sde, t)
    perturbations = {
        "shift": lambda x, t: exact(x, t) + 0.3,
        "scale": lambda x, t: 1.2 * exact(x, t),
        "rotate": lambda x, t: exact(x, t) + 0.3 * exact(x, t).flip(1),
    }
    base = dsm_loss(exact, sde, x0, weighting=weighting, t=t, noise=noise)
    for wrong in perturbations.values():
        other = dsm_loss(wrong, sde, x0, weighting=weighting, t=t, noise=noise)
        gap = 0.5 * lam * ((wrong(xt, t) - exact(xt, t)) ** 2).sum(1)
        res_mean, res_se = paired_mean(other - base - gap)
        assert abs(res_mean) < 4 * res_se
        assert gap.mean() > 0


@pytest.mark.parametrize("name", sorted(SDES))
def test_importance_weights_are_unbiased(name):
    """E_q[w(t) h(t)] equals the uniform time-average of h, for a smooth h (checked against scipy quad)."""
    sde, eps, n = SDES[name](), 1e-5, 200000
    t, w = sample_time(sde, n, eps=eps, importance_sampling=True, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64)
    assert t.min() >= eps and t.max() <= sde.T
    h = lambda s: 1 + torch.cos(3 * s) + s**2  # noqa: E731
    exact = scipy.integrate.quad(lambda s: float(h(torch.tensor(s))), eps, sde.T)[0] / (sde.T - eps)
    est, se = paired_mean(w * h(t))
    assert abs(est - exact) < 4 * se + 1e-9
    assert paired_mean(w)[0] == pytest.approx(1.0, abs=4 * paired_mean(w)[1])


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_importance_sampling_reduces_variance_of_likelihood_weighting(name):
    sde, mix, n = SDES[name](), two_mode_mixture(), 40000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(4))
    exact = mix.score_fn(sde)
    uni = dsm_loss(exact, sde, x0, weighting="likelihood", generator=torch.Generator().manual_seed(5))
    imp = dsm_loss(exact, sde, x0, weighting="likelihood", importance_sampling=True,
                   generator=torch.Generator().manual_seed(5))
    assert imp.var() < 0.1 * uni.var()


@pytest.mark.parametrize("name", sorted(SDES))
def test_importance_sampling_keeps_the_mean(name):
    """σ² weighting: both estimators are light-tailed, so their means must agree within sampling error."""
    sde, mix, n = SDES[name](), two_mode_mixture(), 40000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(6))
    exact = mix.score_fn(sde)
    a = dsm_loss(exact, sde, x0, generator=torch.Generator().manual_seed(7))
    b = dsm_loss(exact, sde, x0, importance_sampling=True, generator=torch.Generator().manual_seed(8))
    se = math.sqrt(a.var() / n + b.var() / n)
    assert abs(a.mean() - b.mean()) < 4 * se


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("variance_reduction", [False, True])
def test_ssm_equals_dsm_up_to_the_known_constant(name, distribution, variance_reduction):
    """E[dsm] − E[ssm] = ½ D E[λ/σ²] = D/2 for λ = σ² (Vincent 2011), on the same t and x_t."""
    sde, mix, n = SDES[name](), two_mode_mixture(), 20000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(9))
    t, _ = sample_time(sde, n, eps=1e-3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11), dtype=x0.dtype)
    exact = mix.score_fn(sde)
    d = dsm_loss(exact, sde, x0, t=t, noise=noise)
    s = ssm_loss(exact, sde, x0, t=t, noise=noise, distribution=distribution, projections=2,
                 variance_reduction=variance_reduction, generator=torch.Generator().manual_seed(12))
    mean, se = paired_mean(d - s)
    assert abs(mean - 1.0) < 4 * se


@pytest.mark.parametrize("name", ["ve", "vp", "ou"])
def test_ssm_and_dsm_share_the_minimiser(name):
    """For s_θ = θ·s*, both gradients in θ vanish at θ = 1 and agree elsewhere (in expectation)."""
    sde, mix, n = SDES[name](), two_mode_mixture(), 20000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(13))
    exact = mix.score_fn(sde)
    t, _ = sample_time(sde, n, eps=1e-2, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(15), dtype=x0.dtype)
    for theta_value in (1.0, 1.3):
        theta = torch.full((n,), theta_value, dtype=torch.float64, requires_grad=True)
        model = lambda x, tt, th=theta: append_dims(th, x.ndim) * exact(x, tt)  # noqa: E731
        g_dsm = torch.autograd.grad(dsm_loss(model, sde, x0, t=t, noise=noise).sum(), theta)[0]
        g_ssm = torch.autograd.grad(ssm_loss(model, sde, x0, t=t, noise=noise, variance_reduction=True).sum(),
                                    theta)[0]
        mean, se = paired_mean(g_dsm - g_ssm)
        assert abs(mean) < 4 * se
        if theta_value == 1.0:
            assert abs(g_dsm.mean()) < 4 * g_dsm.std() / math.sqrt(n)
        else:
            assert g_ssm.mean() > 4 * g_ssm.std() / math.sqrt(n)


def test_discrete_losses_minimal_at_exact_score():
    mix, n = two_mode_mixture(), 20000
    x0 = mix.sample(n, generator=torch.Generator().manual_seed(16))
    for sde, fn, kw in [(sd.VESDE(), smld_loss, {"num_scales": 10}), (sd.VPSDE(), ddpm_loss, {"num_steps": 1000})]:
        exact = mix.score_fn(sde)
        base = fn(exact, sde, x0, generator=torch.Generator().manual_seed(17), **kw)
        other = fn(lambda x, t, e=exact: 1.1 * e(x, t), sde, x0, generator=torch.Generator().manual_seed(17), **kw)
        mean, se = paired_mean(other - base)
        assert mean > 3 * se


def test_ddpm_loss_is_epsilon_mse():
    """With ε̂ = 0 (score 0), L_simple = E‖ε‖² = D."""
    vp, x0 = sd.VPSDE(), torch.zeros(50000, 3, dtype=torch.float64)
    loss = ddpm_loss(lambda x, t: torch.zeros_like(x), vp, x0, generator=torch.Generator().manual_seed(0))
    assert loss.mean().item() == pytest.approx(3.0, abs=4 * math.sqrt(6 / 50000))


def test_losses_any_shape_and_float32(builtin_sde, gen):
    x0 = torch.randn(6, 2, 3, 3, generator=gen)
    score_fn = lambda x, t: -x  # noqa: E731
    for loss in (dsm_loss(score_fn, builtin_sde, x0, generator=gen),
                 dsm_loss(score_fn, builtin_sde, x0, weighting="likelihood", importance_sampling=True, generator=gen),
                 ssm_loss(score_fn, builtin_sde, x0, generator=gen)):
        assert loss.shape == (6,) and loss.dtype == torch.float32 and torch.isfinite(loss).all()


def test_custom_weighting_callable(gen):
    vp, x0 = sd.VPSDE(), torch.randn(8, 2, generator=gen)
    score_fn = lambda x, t: -x  # noqa: E731
    a = dsm_loss(score_fn, vp, x0, weighting=lambda sde, t: 2 * sde.g2(t), generator=torch.Generator().manual_seed(1))
    b = dsm_loss(score_fn, vp, x0, weighting="likelihood", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, 2 * b)


def test_loss_bad_inputs():
    vp, x0 = sd.VPSDE(), torch.zeros(4, 2)
    ok = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="unknown weighting 'lik'"):
        dsm_loss(ok, vp, x0, weighting="lik")
    with pytest.raises(ValueError, match="x0 contains NaN"):
        dsm_loss(ok, vp, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of the input's shape \(4, 2\)"):
        dsm_loss(lambda x, t: x[:, :1], vp, x0)
    with pytest.raises(ValueError, match="score_fn returned NaN"):
        dsm_loss(lambda x, t: x * float("nan"), vp, x0)
    with pytest.raises(ValueError, match=r"t must have shape \(4,\)"):
        dsm_loss(ok, vp, x0, t=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T=1.0\)"):
        dsm_loss(ok, vp, x0, eps=0.0)
    with pytest.raises(ValueError, match="distribution"):
        ssm_loss(ok, vp, x0, distribution="uniform")
    with pytest.raises(ValueError, match="projections must be an integer >= 1"):
        ssm_loss(ok, vp, x0, projections=0)
    with pytest.raises(ValueError, match="pass eps > 0"):
        smld_loss(ok, vp, x0)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        dsm_loss(ok, vp, torch.zeros(4, 2, dtype=torch.long))
