"""The SDEs against their own definitions: Monte-Carlo marginals, normalised priors, consistent discretisation."""

import math

import pytest
import torch

import scoresde as sd
from tests.common import BUILTIN_SDES, OrnsteinUhlenbeck


def vp_as_linear():
    vp = sd.VPSDE()
    return sd.LinearSDE(lambda t: -0.5 * vp.beta(t), lambda t: torch.sqrt(vp.beta(t)), prior_std=1.0)


ALL_SDES = {**BUILTIN_SDES, "ou": OrnsteinUhlenbeck, "linear_vp": vp_as_linear}


def simulate_forward(sde, x0, t_end, steps, gen):
    """Euler–Maruyama on the SDE's own drift and diffusion, started from p_0 (σ(0) may be > 0, as for VE)."""
    t0 = torch.zeros(x0.shape[0], dtype=x0.dtype)
    _, std0 = sde.marginal_coeffs(t0)
    x = x0 + std0[:, None] * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    dt = t_end / steps
    for i in range(steps):
        t = torch.full((x0.shape[0],), i * dt, dtype=x0.dtype)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t)[:, None] * math.sqrt(dt) * torch.randn(
            x.shape, generator=gen, dtype=x.dtype)
    return x


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_marginal_matches_monte_carlo(name, gen):
    sde = ALL_SDES[name]()
    n, steps, t_end = 20000, 400, 0.6
    x0 = torch.tensor([1.5, -0.5], dtype=torch.float64).expand(n, 2)
    xt = simulate_forward(sde, x0, t_end, steps, gen)
    mean, std = sde.marginal(x0, torch.full((n,), t_end, dtype=torch.float64))
    # Sampling error: mean SE = std/sqrt(n), variance relative SE = sqrt(2/n) ≈ 1 %; EM bias O(dt) ≈ 0.15 %.
    se_mean = std[0] / math.sqrt(n)
    assert torch.allclose(xt.mean(0), mean[0], atol=float(5 * se_mean + 2e-3 * std[0]))
    rel_var = xt.var(0) / std[0] ** 2
    assert torch.allclose(rel_var, torch.ones(2, dtype=torch.float64), atol=5 * math.sqrt(2 / n) + 5e-3)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_linear_sde_reproduces_closed_forms(name):
    ref = BUILTIN_SDES[name]()
    lin = sd.LinearSDE(lambda t: -0.5 * ref.beta(t), ref.diffusion)
    t = torch.linspace(1e-5, 1, 101, dtype=torch.float64)
    for a, b in zip(lin.marginal_coeffs(t), ref.marginal_coeffs(t), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-12)
    x = torch.randn(101, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lin.drift(x, t), ref.drift(x, t))
    assert torch.allclose(lin.log_snr(t), ref.log_snr(t), rtol=1e-6)


def test_linear_sde_ve_with_std0():
    ve = sd.VESDE()
    lin = sd.LinearSDE(lambda t: torch.zeros_like(t), ve.diffusion, std0=ve.sigma_min)
    t = torch.linspace(0, 1, 51, dtype=torch.float64)
    assert torch.allclose(lin.marginal_coeffs(t)[1], ve.sigma(t), rtol=1e-9)
    assert lin.prior_std == pytest.approx(ve.sigma_max, rel=1e-9)


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_prior_logp_is_normalised(name):
    sde = ALL_SDES[name]()
    s = sde.prior_std
    grid = torch.linspace(-12 * s, 12 * s, 20001, dtype=torch.float64)
    dens = sde.prior_logp(grid[:, None]).exp()
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-8)
    z = torch.randn(5, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.distributions.Normal(0.0, s).log_prob(z).sum((1, 2))
    assert torch.allclose(sde.prior_logp(z), ref)


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_prior_sample_has_prior_std(name, gen):
    sde = ALL_SDES[name]()
    z = sde.prior_sample((40000, 2), generator=gen, dtype=torch.float64)
    assert z.std().item() == pytest.approx(sde.prior_std, rel=4 * math.sqrt(1 / 80000) + 1e-3)


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_discretize_converges_to_sde(name):
    """f/dt → drift and G²/dt → g² as dt → 0, at first order."""
    sde = ALL_SDES[name]()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-1.0, 2.0]], dtype=torch.float64)
    errors = []
    for dt in (1e-2, 1e-3, 1e-4):
        f, G = sde.discretize(x, t, dt)
        err_f = (f / dt - sde.drift(x, t)).abs().max() / sde.drift(x, t).abs().max().clamp_min(1)
        err_g = ((G**2 / dt) / sde.g2(t) - 1).abs().max()
        errors.append(max(float(err_f), float(err_g)))
    assert errors[-1] < 1e-2
    assert errors[2] <= errors[1] <= errors[0] or errors[0] < 1e-12


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_transition_composes_marginals(name):
    """x_t | x_s with (a, v): α_t = a α_s and σ_t² = a² σ_s² + v."""
    sde = ALL_SDES[name]()
    s = torch.tensor([0.05, 0.3, 0.7], dtype=torch.float64)
    t = s + 0.2
    a, v = sde.transition_coeffs(t, s)
    (al_t, sd_t), (al_s, sd_s) = sde.marginal_coeffs(t), sde.marginal_coeffs(s)
    assert torch.allclose(a * al_s, al_t, rtol=1e-10)
    assert torch.allclose(a**2 * sd_s**2 + v, sd_t**2, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(ALL_SDES))
def test_log_snr_inverse(name):
    sde = ALL_SDES[name]()
    t = torch.linspace(1e-4, 1, 50, dtype=torch.float64)
    lam = sde.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()
    assert torch.allclose(sde.t_from_log_snr(lam), t, atol=1e-9)
    # The generic bisection agrees with each closed form.
    assert torch.allclose(sd.SDE.t_from_log_snr(sde, lam), t, atol=1e-9)


def test_reverse_sde_and_probability_flow_formulas(builtin_sde):
    sde = builtin_sde
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    score_fn = lambda x, t: -x  # noqa: E731
    g2 = sde.g2(t)[:, None]
    rev, ode = sde.reverse(score_fn), sde.reverse(score_fn, probability_flow=True)
    assert torch.allclose(rev.drift(x, t), sde.drift(x, t) + g2 * x)
    assert torch.allclose(ode.drift(x, t), sde.drift(x, t) + 0.5 * g2 * x)
    assert torch.equal(ode.diffusion(t), torch.zeros_like(t))
    assert torch.allclose(rev.diffusion(t), sde.diffusion(t))


def test_vp_discrete_forms_match_official_conventions():
    vp = sd.VPSDE()
    betas = vp.discrete_betas(1000)
    assert betas[0].item() == pytest.approx(0.1 / 1000)
    assert betas[-1].item() == pytest.approx(20 / 1000)
    ve = sd.VESDE()
    sig = ve.discrete_sigmas(10)
    assert sig[0].item() == pytest.approx(0.01) and sig[-1].item() == pytest.approx(50.0)
    ratios = sig[1:] / sig[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_any_rank(builtin_sde, dtype):
    sde = builtin_sde
    x = torch.randn(2, 3, 4, 5, dtype=dtype)
    t = torch.tensor([0.3, 0.9], dtype=dtype)
    mean, std = sde.marginal(x, t)
    assert mean.dtype == dtype and std.dtype == dtype and mean.shape == x.shape and std.shape == (2,)
    assert sde.drift(x, t).shape == x.shape
    f, G = sde.discretize(x, t, 1e-3)
    assert f.shape == x.shape and G.shape == (2,)


def test_bad_inputs_raise_clear_errors():
    vp = sd.VPSDE()
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        vp.marginal(x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"t must have shape"):
        vp.marginal(x, torch.zeros(3, 1))
    with pytest.raises(TypeError, match="t must be a float tensor"):
        vp.marginal(x, 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        vp.marginal(x, torch.tensor([0.1, 1.5, 0.2]))
    with pytest.raises(ValueError, match="t must lie"):
        vp.marginal(x, torch.tensor([0.1, float("nan"), 0.2]))
    with pytest.raises(ValueError, match="beta_min must be a positive"):
        sd.VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_max must exceed sigma_min"):
        sd.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sigma_min must be a positive"):
        sd.VESDE(sigma_min=0.0)
    with pytest.raises(TypeError, match="f and g must be callables"):
        sd.LinearSDE(1.0, lambda t: t)
