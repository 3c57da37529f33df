"""Controllable generation against the exact Gaussian-mixture oracle.

Statistical tolerances: with n samples, a mode weight w has standard error sqrt(w(1−w)/n) ≤ 0.5/sqrt(n), a
mean has standard error sd/sqrt(n) and a variance about var·sqrt(2/n); we allow ~4 standard errors plus a
discretisation allowance for the finite number of sampler steps (measured, stated per test).
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.controllable import (
    GreyMeasurement,
    MaskMeasurement,
    OrthogonalMeasurement,
    colorize,
    condition_mixture,
    decoupling_matrix,
    inpaint,
    mask_matrix,
    measurement_from_svd,
    sample_conditional,
)
from tests.common import seeded

N = 2000
F64 = torch.float64


def _component_weights(x: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose nearest mode (in units of the component std) is each component."""
    d2 = ((x[:, None, :] - means[None]) ** 2 / var[None]).sum(-1)
    return torch.bincount(d2.argmin(1), minlength=means.shape[0]).to(F64) / x.shape[0]


# ------------------------------------------------------------------------------------- the oracle itself
def test_condition_mixture_is_the_normalised_slice_of_the_joint():
    """On the slice {A x = y}, log p(x) − log p(x | y) must be the constant log p(y) (Bayes), for any x."""
    mix = sd.GaussianMixture([0.2, 0.5, 0.3], [[0.0, 1.0, -1.0], [1.0, -1.0, 0.5], [-1.0, 0.0, 1.0]],
                             [[0.5, 0.3, 0.8], [0.4, 0.6, 0.5], [0.7, 0.5, 0.3]])
    A = torch.linalg.qr(torch.randn(3, 3, generator=seeded(0), dtype=F64))[0][:2]  # 2 orthonormal rows
    y = torch.tensor([0.3, -0.4], dtype=F64)
    cond = condition_mixture(mix, A, y)
    null = torch.linalg.svd(A)[2][2]  # the direction orthogonal to A's rows
    x = y @ A + torch.linspace(-2, 2, 9, dtype=F64)[:, None] * null
    c_logp = torch.stack([_full_cov_logpdf(x, cond, k, null) for k in range(3)], 1)
    log_cond = torch.logsumexp(torch.log(cond.weights) + c_logp, 1)
    diff = mix.log_prob(x) - log_cond
    assert torch.allclose(diff, diff[0].expand_as(diff), atol=1e-10)
    assert torch.allclose(cond.means @ A.T, y.expand(3, 2), atol=1e-12)  # every mean lies on the slice


def _full_cov_logpdf(x, cond, k, null):
    """log density of component k on the 1-D slice, in the slice coordinate u = null·x."""
    var = null @ cond.covs[k] @ null
    u, m = x @ null, cond.means[k] @ null
    return -0.5 * ((u - m) ** 2 / var + torch.log(2 * math.pi * var))


# ------------------------------------------------------------------------------------- measurement algebra
def test_decoupling_matrix_is_orthogonal_with_grey_first_row():
    m = decoupling_matrix()
    assert torch.allclose(m @ m.T, torch.eye(3, dtype=F64), atol=1e-15)
    assert torch.allclose(m[0], torch.full((3,), 1 / math.sqrt(3), dtype=F64), atol=1e-15)


@pytest.mark.parametrize("op, shape", [
    (MaskMeasurement(torch.tensor([[1.0, 0.0], [0.0, 1.0]])), (4, 2, 2)),
    (GreyMeasurement(), (4, 3, 2, 2)),
    (OrthogonalMeasurement(torch.linalg.qr(torch.randn(6, 6, generator=seeded(1), dtype=F64))[0][:2]), (4, 3, 2)),
])
def test_replace_sets_the_measurement_and_keeps_the_rest(op, shape):
    x = torch.randn(shape, generator=seeded(2), dtype=F64)
    x_other = torch.randn(shape, generator=seeded(3), dtype=F64)
    y = op.measure(x_other)
    assert tuple(y.shape) == op.y_shape(shape)
    r = op.replace(x, y)
    assert torch.allclose(op.measure(r), y, atol=1e-12)  # measured part = y
    # unmeasured part unchanged: x − r lies in the range of Aᵀ (it equals Aᵀ A (x − r))
    assert torch.allclose(op.adjoint(op.measure(x - r)).reshape(shape), x - r, atol=1e-12)


def test_grey_measurement_fixes_the_channel_mean():
    op = GreyMeasurement()
    grey = torch.rand(2, 1, 3, 3, generator=seeded(4), dtype=F64)
    r = op.replace(torch.randn(2, 3, 3, 3, generator=seeded(5), dtype=F64), op.from_grey(grey))
    assert torch.allclose(r.mean(1, keepdim=True), grey, atol=1e-12)


def test_measurement_from_svd_recovers_a_general_linear_measurement():
    A = torch.randn(2, 4, generator=seeded(6), dtype=F64) * torch.tensor([[3.0], [0.2]], dtype=F64)
    x = torch.randn(5, 4, generator=seeded(7), dtype=F64)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    op, y_r = measurement_from_svd(U, S, Vh, x @ A.T)
    r = op.replace(torch.randn(5, 4, generator=seeded(8), dtype=F64), y_r)
    assert torch.allclose(r @ A.T, x @ A.T, atol=1e-10)


# ------------------------------------------------------------------------------------- bad input
def test_bad_measurements_raise_clear_errors():
    with pytest.raises(ValueError, match="only 0 and 1"):
        MaskMeasurement(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="does not broadcast"):
        inpaint(lambda x, t: -x, sd.VPSDE(), torch.zeros(4, 3), torch.tensor([1.0, 0.0]), steps=2)
    with pytest.raises(ValueError, match="y must have shape"):
        sample_conditional(lambda x, t: -x, sd.VPSDE(), OrthogonalMeasurement(torch.eye(3)[:1]),
                           torch.zeros(4, 2), (4, 3), steps=2)
    with pytest.raises(ValueError, match="orthonormal rows"):
        OrthogonalMeasurement(torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="3 channels"):
        sample_conditional(lambda x, t: -x, sd.VPSDE(), GreyMeasurement(), torch.zeros(4, 1, 2, 2), (4, 4, 2, 2))
    with pytest.raises(ValueError, match="grey must have one channel"):
        colorize(lambda x, t: -x, sd.VPSDE(), torch.zeros(4, 3, 2, 2))
    with pytest.raises(TypeError, match="measurement must be"):
        sample_conditional(lambda x, t: -x, sd.VPSDE(), torch.eye(2), torch.zeros(4, 2), (4, 2))


def test_float32_images_keep_dtype_and_known_pixels():
    """(B, C, H, W) float32 input: output of the same shape and dtype, known pixels bit-exact."""
    x_known = torch.rand(3, 2, 4, 4, generator=seeded(20))
    mask = (torch.rand(2, 4, 4, generator=seeded(21)) > 0.5).float()
    res = inpaint(lambda x, t: -x, sd.VPSDE(), x_known, mask, steps=30, generator=seeded(22))
    assert res.x.shape == x_known.shape and res.x.dtype == torch.float32
    assert torch.equal(res.x[:, mask.bool()], x_known[:, mask.bool()])
    assert res.nfe == 30 + 30 + 1  # predictor + corrector per step + the final Tweedie step


# ------------------------------------------------------------------------------------- samplers vs the oracle
def _check_conditional(x_free, cond_means, cond_var, cond_weights, *, weight_tol, mean_tol, var_rtol):
    w = _component_weights(x_free, cond_means, cond_var)
    assert torch.allclose(w, cond_weights, atol=weight_tol), (w, cond_weights)
    m_true = cond_weights @ cond_means
    second = cond_weights @ (cond_var + cond_means**2)
    assert torch.allclose(x_free.mean(0), m_true, atol=mean_tol), (x_free.mean(0), m_true)
    assert torch.allclose(x_free.var(0), second - m_true**2, rtol=var_rtol), (x_free.var(0), second - m_true**2)


@pytest.mark.parametrize("sde, eps, predictor, corrector", [
    (sd.VPSDE(), 1e-3, "reverse_diffusion", "langevin"),
    (sd.VESDE(), 1e-5, "euler_maruyama", "none"),
    (sd.SubVPSDE(), 1e-3, "ancestral", "langevin"),
])
def test_inpainting_reproduces_the_exact_conditional_when_the_known_part_decides_the_mode(
        sde, eps, predictor, corrector):
    """Known coordinate x0 separates the modes (means ±3): given x0 = 2.6 the exact conditional puts weight
    ≈ 0.9998 on component 1, whose free coordinate is N(1.5, 0.4²); the sampler must land there.
    Tolerances: weight 0.02 (4·0.5/sqrt(2000) = 0.045 bounds any weight; the expected miss count is ~0),
    mean 0.05 (4·0.4/sqrt(2000) = 0.036 + 200-step discretisation), variance 20% (4·sqrt(2/2000) = 13% + steps)."""
    mix = sd.GaussianMixture([0.5, 0.5], [[-3.0, -1.0], [3.0, 1.5]], [[0.5, 0.4], [0.5, 0.4]])
    mask = torch.tensor([1.0, 0.0])
    cond = condition_mixture(mix, mask_matrix(mask), torch.tensor([2.6]))
    x_known = torch.tensor([[2.6, 0.0]], dtype=F64).expand(N, 2)
    res = inpaint(mix.score_fn(sde), sde, x_known, mask, steps=200, eps=eps, predictor=predictor,
                  corrector=corrector, generator=seeded(10))
    assert torch.equal(res.x[:, 0], x_known[:, 0])  # known pixels exactly
    _check_conditional(res.x[:, 1:], cond.means[:, 1:], cond.covs[:, 1, 1][:, None], cond.weights,
                       weight_tol=0.02, mean_tol=0.05, var_rtol=0.2)


def test_linear_measurement_reproduces_a_multimodal_exact_conditional():
    """3-D mixture whose components differ only orthogonally to the measured direction a: the exact
    conditional keeps the prior weights (0.3, 0.7) and is bimodal. Weight tolerance 0.045 (4 standard
    errors at n = 2000), mean 0.15 (4·sd/sqrt(n) with sd ≈ 1.4 is 0.13), variance 20%."""
    Q = torch.linalg.qr(torch.randn(3, 3, generator=seeded(11), dtype=F64))[0]
    a, b1, b2 = Q[:, 0], Q[:, 1], Q[:, 2]
    means = torch.stack([0.5 * a + 1.5 * b1, 0.5 * a - 1.5 * b1 + 0.5 * b2])
    mix = sd.GaussianMixture([0.3, 0.7], means, 0.4)
    y = torch.tensor([0.8], dtype=F64)
    cond = condition_mixture(mix, a[None], y)
    sde = sd.VPSDE()
    res = sample_conditional(mix.score_fn(sde), sde, OrthogonalMeasurement(a[None]), y.expand(N, 1), (N, 3),
                             steps=200, generator=seeded(12))
    assert torch.allclose(res.x @ a, y.expand(N), atol=1e-12)
    free = res.x @ Q[:, 1:]  # coordinates in the unmeasured plane
    cmeans = cond.means @ Q[:, 1:]
    _check_conditional(free, cmeans, torch.full_like(cmeans, 0.16), cond.weights, weight_tol=0.045,
                       mean_tol=0.15, var_rtol=0.2)


def test_colourisation_of_a_three_channel_mixture():
    """Pixels (B, 3, 1, 1) from a mixture whose colours share one grey level: given the grey image the exact
    conditional is the chroma mixture with the prior weights (0.4, 0.6). Tolerances as above."""
    M = decoupling_matrix()
    chroma = torch.tensor([[1.2, 0.5], [-1.0, -0.6]], dtype=F64)
    means = torch.cat([torch.full((2, 1), 0.3), chroma], 1) @ M  # Mᵀ u: back to RGB
    mix = sd.GaussianMixture([0.4, 0.6], means, 0.3)
    grey = torch.full((N, 1, 1, 1), 0.3 / math.sqrt(3) + 0.05, dtype=F64)
    sde = sd.VESDE()
    res = colorize(lambda x, t: mix.score_t(x, t, sde), sde, grey, steps=200, eps=1e-5, generator=seeded(13))
    assert res.x.shape == (N, 3, 1, 1)
    assert torch.allclose(res.x.mean(1, keepdim=True), grey, atol=1e-12)
    cond = condition_mixture(mix, M[:1], math.sqrt(3) * grey[:1].reshape(1))
    free = res.x.reshape(N, 3) @ M[1:].T
    cmeans = cond.means @ M[1:].T
    _check_conditional(free, cmeans, torch.full_like(cmeans, 0.09), cond.weights, weight_tol=0.045,
                       mean_tol=0.1, var_rtol=0.2)


@pytest.mark.parametrize("sde, eps", [(sd.VPSDE(), 1e-3), (sd.VESDE(), 1e-5)])
def test_denoised_inpainting_has_no_residual_noise(sde, eps):
    """Components with std 1e-4: the denoised output's free coordinates must sit on a conditional mode to
    within ≪ σ(eps) ≈ 0.01 (the noise a non-denoised output keeps), and the known ones must equal y."""
    mix = sd.GaussianMixture([0.5, 0.5], [[0.0, -1.0, 1.0], [0.0, 1.0, 0.5]], 1e-4)
    mask = torch.tensor([1.0, 0.0, 0.0])
    x_known = torch.zeros(500, 3, dtype=F64)
    kw = dict(steps=100, eps=eps, generator=seeded(14))
    res = inpaint(mix.score_fn(sde), sde, x_known, mask, **kw)
    noisy = inpaint(mix.score_fn(sde), sde, x_known, mask, denoise=False, **kw)
    sigma_eps = float(sde.marginal_coeffs(torch.tensor([eps], dtype=F64))[1])
    dist = (res.x[:, None, 1:] - mix.means[None, :, 1:]).norm(dim=-1).min(1).values
    dist_noisy = (noisy.x[:, None, 1:] - mix.means[None, :, 1:]).norm(dim=-1).min(1).values
    assert torch.equal(res.x[:, 0], x_known[:, 0])
    assert float(dist.max()) < 0.05 * sigma_eps, (float(dist.max()), sigma_eps)
    assert float(dist_noisy.median()) > 0.3 * sigma_eps  # the non-denoised state still carries noise
