"""Every time grid of scoresde.sampling.grids: exact ends, strictly decreasing times, and its spacing law.

Each law is checked on the quantity that should be uniform: t, sqrt(t), the log-SNR λ(t), or
(σ/α)^{1/ρ} = e^{−λ/(2ρ)}. In float64 the increments of that quantity agree to 1e-12 relative to their
size: the closed-form grids round at ~1e-16, and the log-SNR inverse (closed form for VE and VP, 64
bisection halvings for sub-VP and the user SDE, i.e. to the last bit of t) moves λ by at most
|dλ/dt| · 1e-16 ≈ 1e-13 near t = eps.
"""

import math

import pytest
import torch

from scoresde.sampling import GRIDS, sample_dpm_solver, sample_pc, time_grid
from tests.common import BUILTIN_SDES, OrnsteinUhlenbeck

SDES = {**BUILTIN_SDES, "user_ou": OrnsteinUhlenbeck}
EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3, "user_ou": 1e-3}
RHO = 7.0

UNIFORM_IN = {  # kind -> the quantity that the grid spaces uniformly
    "time_uniform": lambda sde, t: t,
    "time_quadratic": lambda sde, t: t.sqrt(),
    "logsnr": lambda sde, t: sde.log_snr(t),
    "edm": lambda sde, t: torch.exp(-sde.log_snr(t) / (2 * RHO)),  # (σ/α)^{1/ρ}, σ/α = e^{−λ/2}
}


def test_every_grid_is_tested():
    assert set(UNIFORM_IN) == set(GRIDS)


@pytest.mark.parametrize("kind", sorted(GRIDS))
@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_ends_order_and_spacing_law(kind, sde_name, steps):
    sde, eps = SDES[sde_name](), EPS[sde_name]
    t = time_grid(sde, steps, eps, kind)
    assert t.shape == (steps + 1,) and t.dtype == torch.float64
    assert float(t[0]) == sde.T and float(t[-1]) == eps  # exact ends
    assert bool((t[1:] < t[:-1]).all())  # strictly decreasing
    u = UNIFORM_IN[kind](sde, t)
    du = u[1:] - u[:-1]
    torch.testing.assert_close(du, du.mean().expand_as(du), rtol=1e-12, atol=0)
    # ...and the uniform quantity runs between its values at T and eps
    want = UNIFORM_IN[kind](sde, torch.tensor([sde.T, eps], dtype=torch.float64))
    torch.testing.assert_close(u[[0, -1]], want, rtol=1e-12, atol=0)


def test_edm_grid_is_karras_rho_spacing_in_sigma_over_alpha():
    """Karras et al. 2022, eq. (5), written out: σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ."""
    sde, eps, n = BUILTIN_SDES["vp"](), 1e-3, 18
    t = time_grid(sde, n, eps, "edm")
    alpha, sigma = sde.marginal_coeffs(t)
    s_max, s_min = (sde.marginal_coeffs(torch.tensor([v], dtype=torch.float64)) for v in (1.0, eps))
    s_max, s_min = float(s_max[1] / s_max[0]), float(s_min[1] / s_min[0])
    i = torch.arange(n + 1, dtype=torch.float64)
    karras = (s_max ** (1 / RHO) + i / n * (s_min ** (1 / RHO) - s_max ** (1 / RHO))) ** RHO
    torch.testing.assert_close(sigma / alpha, karras, rtol=1e-10, atol=0)


def test_ve_logsnr_grid_is_the_uniform_one():
    """For VE, λ = −2 log σ(t) is linear in t, so uniform-in-λ is uniform-in-t."""
    sde = BUILTIN_SDES["ve"]()
    torch.testing.assert_close(time_grid(sde, 20, 1e-5, "logsnr"), time_grid(sde, 20, 1e-5), rtol=1e-12, atol=0)


def test_dtype_device_and_bad_arguments():
    sde = BUILTIN_SDES["vp"]()
    for kind in GRIDS:
        t = time_grid(sde, 4, 1e-3, kind, device="cpu", dtype=torch.float32)
        assert t.dtype == torch.float32 and t.device.type == "cpu" and math.isclose(float(t[-1]), 1e-3, rel_tol=1e-6)
    with pytest.raises(ValueError, match=r"unknown kind 'cosine'.*edm.*logsnr"):
        time_grid(sde, 4, 1e-3, "cosine")
    with pytest.raises(ValueError, match="steps"):
        time_grid(sde, 0, 1e-3)
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T=1.0\)"):
        time_grid(sde, 4, 1.5)


def test_samplers_step_on_the_grid():
    """sample_pc visits time_grid(..., "time_uniform") and sample_dpm_solver the grid it is given."""
    sde = BUILTIN_SDES["vp"]()
    score = lambda x, t: -x  # noqa: E731
    seen = []
    sample_pc(score, sde, (3, 2), steps=6, generator=torch.Generator().manual_seed(0), denoise=False,
              callback=lambda step: seen.append(float(step.t[0])))
    torch.testing.assert_close(torch.tensor(seen), time_grid(sde, 6, 1e-3, dtype=torch.float32)[1:], rtol=0, atol=0)
    for kind in GRIDS:
        steps = []
        sample_dpm_solver(score, sde, (3, 2), steps=6, grid=kind, generator=torch.Generator().manual_seed(0),
                          callback=steps.append)
        want = time_grid(sde, 6, 1e-3, kind).float()[1:]
        torch.testing.assert_close(torch.tensor([float(s.t[0]) for s in steps]), want, rtol=0, atol=0)
