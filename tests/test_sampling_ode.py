"""The probability-flow ODE against its closed form, encode∘decode, latent tools, annealed Langevin.

For data N(m, s² I) the PF ODE is affine: x_s = α_s m + (σ̃_s/σ̃_t)(x_t − α_t m), σ̃² = α² s² + σ²
(the flow transports N(α_t m, σ̃_t² I) to N(α_s m, σ̃_s² I) along straight scalings).
"""

import pytest
import torch

import scoresde as sd
from scoresde.sampling import (
    decode,
    encode,
    interpolate,
    sample_annealed_langevin,
    sample_ode,
    scale_temperature,
    slerp,
)
from tests.common import BUILTIN_SDES

M, S = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.7
GAUSS = sd.GaussianMixture([1.0], M[None], S)


def flow_map(sde, x, t_from, t_to):
    def coeffs(t):
        a, std = sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64))
        return a, torch.sqrt(a**2 * S**2 + std**2)

    (a0, s0), (a1, s1) = coeffs(t_from), coeffs(t_to)
    return a1 * M + s1 / s0 * (x - a0 * M)


@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_sample_ode_and_encode_match_the_analytic_flow(sde_name):
    """dopri5 at rtol = atol = 1e-7: measured max error ≤ 2e-7 of the state's scale (s for samples,
    σ_T for latents); we allow 1e-5. At the default 1e-5 the global error reaches 5e-3·s (sub-VP, whose
    σ(t) ≈ β_min t makes the flow stiff near t = 0): we allow 1e-2 there."""
    sde = BUILTIN_SDES[sde_name]()
    eps = 1e-5 if sde_name == "ve" else 1e-3
    score = GAUSS.score_fn(sde)
    z = sde.prior_sample((256, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = GAUSS.at_time(sde, eps).sample(256, generator=torch.Generator().manual_seed(1))
    for tol, allowed in ((1e-7, 1e-5), (1e-5, 1e-2)):
        res = sample_ode(score, sde, z=z, eps=eps, rtol=tol, atol=tol)
        assert (res.x - flow_map(sde, z, sde.T, eps)).abs().max() < allowed * S
        enc = encode(score, sde, x, eps=eps, rtol=tol, atol=tol)
        assert (enc.x - flow_map(sde, x, eps, sde.T)).abs().max() < allowed * sde.prior_std
        assert res.nfe > 10 and enc.nfe > 10


@pytest.mark.parametrize("method, kw, tol", [("rk45", {}, 1e-3), ("heun", {"steps": 200}, 2e-2)])
def test_other_ode_methods_match_the_flow(method, kw, tol):
    """scipy RK45 to solver tolerance; fixed-step Heun (2nd order) at 200 steps to ~1 % of s."""
    sde = sd.VPSDE()
    z = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = sample_ode(GAUSS.score_fn(sde), sde, z=z, method=method, **kw)
    assert torch.allclose(res.x, flow_map(sde, z, sde.T, 1e-3), atol=tol * S, rtol=0)
    if method == "heun":
        assert res.nfe == 2 * 200


@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_encode_decode_is_identity(sde_name):
    """On the three-mode mixture (nonlinear flow); round trip at rtol = atol = 1e-6 within 1e-3."""
    from tests.common import MIXTURE

    sde = BUILTIN_SDES[sde_name]()
    score = MIXTURE.score_fn(sde)
    x = MIXTURE.at_time(sde, 1e-3).sample(128, generator=torch.Generator().manual_seed(2))
    z = encode(score, sde, x, rtol=1e-6, atol=1e-6).x
    back = decode(score, sde, z, rtol=1e-6, atol=1e-6).x
    assert torch.allclose(back, x, atol=1e-3, rtol=0)


def test_slerp_interpolate_and_temperature():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 3, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    assert torch.allclose(slerp(z0, z1, 0.0), z0, atol=1e-6) and torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-5)
    # between unit latents: the midpoint makes equal angles with both ends and stays on the sphere
    cos = lambda a, b: (a * b).flatten(1).sum(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1))  # noqa: E731
    u0, u1 = z0 / z0.flatten(1).norm(dim=1)[:, None, None], z1 / z1.flatten(1).norm(dim=1)[:, None, None]
    mid = slerp(u0, u1, 0.5)
    assert torch.allclose(cos(mid, u0), cos(mid, u1), atol=1e-5)
    assert torch.allclose(slerp(u0, u1, 0.3).flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    path = interpolate(z0, z1, 5)
    assert path.shape == (5, 4, 3, 8) and torch.allclose(path[0], z0, atol=1e-6)
    assert torch.allclose(slerp(z0, 2 * z0, 0.5), 1.5 * z0, atol=1e-5)  # parallel: linear fallback
    assert torch.equal(scale_temperature(z0, 0.5), 0.5 * z0)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        scale_temperature(z0, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        slerp(z0, z1[:2], 0.5)


def test_annealed_langevin_recovers_weights_that_plain_langevin_misses():
    """Song & Ermon 2019, Sec. 3.2.2: modes at (5, 5) and (−5, −5) with weights 0.8/0.2. Langevin at the
    smallest σ cannot cross between modes, so it keeps the 50/50 split of its symmetric start (TV ≈ 0.3);
    annealing from σ = 20 sets the weights while the modes still overlap. 2000 samples: TV sd ≈ 0.009."""
    mix = sd.GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)
    sde = sd.VESDE(sigma_min=0.1, sigma_max=20.0)
    score = mix.score_fn(sde)
    kw = dict(eps=1e-5, step_lr=2e-3, generator=torch.Generator().manual_seed(0))

    def tv(x):
        frac = float((x.sum(1) > 0).double().mean())
        return abs(frac - 0.8)

    annealed = sample_annealed_langevin(score, sde, (2000, 2), levels=10, steps=100, **kw)
    plain = sample_annealed_langevin(score, sde, (2000, 2), levels=1, steps=1000, **kw)
    assert annealed.nfe == plain.nfe == 1000
    assert tv(annealed.x) < 0.04
    assert tv(plain.x) > 0.2

