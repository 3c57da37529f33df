"""The Gaussian-mixture oracle against autograd and sampling."""

import math

import pytest
import torch

import scoresde as sd
from tests.common import two_mode_mixture


@pytest.mark.parametrize("t_value", [1e-5, 0.05, 0.4, 1.0])
def test_score_is_gradient_of_log_prob(builtin_sde, t_value, gen):
    mix = two_mode_mixture()
    x = 3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = torch.full((64,), t_value, dtype=torch.float64)
    x.requires_grad_(True)
    logp = mix.log_prob_t(x, t, builtin_sde)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(mix.score_t(x.detach(), t, builtin_sde), grad, rtol=1e-10, atol=1e-10)
    assert torch.allclose(mix.score_fn(builtin_sde)(x.detach(), t), grad, rtol=1e-10, atol=1e-10)


def test_score_at_time_zero_and_any_shape(gen):
    mix = sd.GaussianMixture([0.5, 0.5], torch.randn(2, 12, generator=gen), 0.7)
    x = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    assert grad.shape == x.shape
    assert torch.allclose(mix.score(x.detach()), grad)


def test_log_prob_is_normalised_in_1d():
    mix = sd.GaussianMixture([0.2, 0.8], [[-1.0], [2.0]], [0.3, 0.9])
    grid = torch.linspace(-12, 14, 40001, dtype=torch.float64)[:, None]
    assert torch.trapezoid(mix.log_prob(grid).exp(), grid[:, 0]).item() == pytest.approx(1.0, abs=1e-9)
    vp = sd.VPSDE()
    t = torch.full((grid.shape[0],), 0.3, dtype=torch.float64)
    assert torch.trapezoid(mix.log_prob_t(grid, t, vp).exp(), grid[:, 0]).item() == pytest.approx(1.0, abs=1e-9)


def test_sample_moments(gen):
    mix = two_mode_mixture()
    n = 200000
    x = mix.sample(n, generator=gen)
    cov = mix.covariance()
    se = torch.sqrt(torch.diag(cov) / n)
    assert torch.all((x.mean(0) - mix.mean()).abs() < 5 * se)
    assert torch.allclose(torch.cov(x.T), cov, rtol=0.02, atol=0.02)


def test_at_time_matches_forward_perturbation(builtin_sde, gen):
    """Sampling p_t exactly = perturbing samples of p_0 with the kernel."""
    mix, n, t = two_mode_mixture(), 100000, 0.2
    x0 = mix.sample(n, generator=gen)
    mean, std = builtin_sde.marginal(x0, torch.full((n,), t, dtype=torch.float64))
    xt = mean + std[:, None] * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    exact = mix.at_time(builtin_sde, t)
    se = torch.sqrt(torch.diag(exact.covariance()) / n)
    assert torch.all((xt.mean(0) - exact.mean()).abs() < 5 * se)
    assert torch.allclose(torch.cov(xt.T), exact.covariance(), rtol=0.03, atol=0.03 * std[0].item() ** 2)


def test_responsibilities_are_the_class_posterior(gen):
    mix = two_mode_mixture()
    vp = sd.VPSDE()
    x, labels = mix.sample(20000, generator=gen, return_labels=True)
    t = torch.full((20000,), 1e-5, dtype=torch.float64)
    r = mix.responsibilities(x, t, vp)
    assert torch.allclose(r.sum(1), torch.ones(20000, dtype=torch.float64))
    # Calibrated: mean posterior of component 0 equals its frequency (weights 0.3).
    assert r[:, 0].mean().item() == pytest.approx(0.3, abs=4 * math.sqrt(0.21 / 20000))
    assert (r.argmax(1) == labels).double().mean() > 0.99


def test_bad_mixture_arguments():
    with pytest.raises(ValueError, match="means must have shape"):
        sd.GaussianMixture([1.0], [0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="weights must be 2 positive"):
        sd.GaussianMixture([1.0, -1.0], [[0.0], [1.0]], 1.0)
    with pytest.raises(ValueError, match="stds must be positive"):
        sd.GaussianMixture([1.0, 1.0], [[0.0], [1.0]], [0.0, 1.0])
    mix = two_mode_mixture()
    with pytest.raises(ValueError, match="2 values per sample"):
        mix.log_prob(torch.zeros(4, 3))
