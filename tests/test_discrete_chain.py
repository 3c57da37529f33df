"""Forward chain, schedules and posterior of scoresde.discrete against closed forms and Monte Carlo."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.discrete.chain import DiscreteChain
from scoresde.discrete.schedules import check_betas, cosine_betas, linear_betas, sohl_dickstein_betas
from tests.common import seeded


def test_linear_and_sohl_dickstein_schedules():
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    sdb = sohl_dickstein_betas(5, beta_1=1e-3)
    torch.testing.assert_close(sdb, torch.tensor([1e-3, 1 / 4.25, 1 / 3.5, 1 / 2.75, 1 / 2], dtype=torch.float64))


def test_cosine_schedule_reproduces_its_alpha_bar():
    T, s = 200, 0.008
    chain = DiscreteChain(cosine_betas(T, s=s))
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    want = f(t) / f(torch.zeros(1, dtype=torch.float64))
    # all steps but the last (clipped at 0.999) reproduce ᾱ(t) = f(t)/f(0) to rounding
    torch.testing.assert_close(chain.alpha_bar[:-1], want[:-1], rtol=1e-10, atol=0)
    assert float(chain.betas[-1]) == pytest.approx(0.999)


def test_chain_from_vpsde_is_its_discretisation():
    sde = sd.VPSDE()
    chain = DiscreteChain.from_sde(sde, 500)
    torch.testing.assert_close(chain.betas, sde.discrete_betas(500))
    # Σ β_i = mean of β over the grid = ∫_0^1 β exactly (β is linear), and log ᾱ_T = Σ log(1 − β_i)
    # differs from −∫β by −Σ β_i²/2 − … = O(1/N): 0.137/10.05 ≈ 1.4% at N = 500, hence rel=0.02
    B1 = float(sde.integrated_beta(torch.tensor(1.0, dtype=torch.float64)))
    assert float(chain.betas.sum()) == pytest.approx(B1, rel=1e-12)
    assert float(torch.log(chain.alpha_bar[-1])) == pytest.approx(-B1, rel=0.02)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0.1, 1.0]), "open interval"),
    (torch.tensor([0.0, 0.1]), "open interval"),
    (torch.tensor([0.2, 0.1]), "non-decreasing"),
    (torch.tensor([[0.1]]), "1-D"),
    (torch.tensor([], dtype=torch.float64), "T >= 1"),
    (torch.tensor([0.1, float("nan")]), "open interval"),
])
def test_bad_schedules_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        DiscreteChain(bad)


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        linear_betas(0)
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        cosine_betas(0)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        linear_betas(10, 0.02, 1e-4)
    with pytest.raises(TypeError, match="floating point"):
        check_betas(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"open interval.*betas\[5\]"):  # VP with N = 10: β(t)/N > 1
        DiscreteChain.from_sde(sd.VPSDE(), 10)
    with pytest.raises(TypeError, match="discrete_betas"):
        DiscreteChain.from_sde(sd.VESDE(), 10)
    assert DiscreteChain(torch.tensor([0.2, 0.1]), monotone=False).T == 2


def test_index_errors():
    chain = DiscreteChain(linear_betas(10, 1e-3, 0.1))
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        chain.q_sample(x, torch.tensor([0, 5, 10]))
    with pytest.raises(TypeError, match="integer tensor"):
        chain.q_sample(x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        chain.q_sample(x, torch.tensor([0, 1]))


def test_marginal_matches_monte_carlo_of_the_chain():
    """Run q(x_t | x_{t-1}) step by step; compare mean and variance of x_t with sqrt(ᾱ) x0 and 1 − ᾱ."""
    chain = DiscreteChain(linear_betas(40, 1e-3, 0.1))
    g, n = seeded(0), 20000
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(n, 2)
    x = x0
    for idx in range(chain.T):
        x = chain.step(x, torch.full((n,), idx), generator=g)
        if idx in (0, 9, 39):
            i = torch.full((n,), idx)
            mean, std = chain.marginal(x0, i)
            var = float(std[0]) ** 2
            # 5 standard errors: SE(mean) = sqrt(var/n), SE(var) = var·sqrt(2/n) for Gaussian samples
            assert (x.mean(0) - mean[0]).abs().max() < 5 * math.sqrt(var / n)
            assert (x.var(0) - var).abs().max() < 5 * var * math.sqrt(2 / n)


def test_posterior_is_the_regression_of_x_prev_on_x0_and_xt():
    """(x0, x_{t-1}, x_t) are jointly Gaussian for Gaussian x0; least squares of x_{t-1} on (x0, x_t) recovers
    the posterior mean coefficients exactly in expectation and the residual variance is β̃_t."""
    chain = DiscreteChain(linear_betas(30, 1e-3, 0.2))
    g, n, idx = seeded(1), 40000, 12
    x0 = 0.7 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x_prev = chain.q_sample(x0, torch.full((n,), idx - 1), generator=g)
    x_t = chain.step(x_prev, torch.full((n,), idx), generator=g)
    A = torch.cat([x0, x_t], 1)
    coef = torch.linalg.lstsq(A, x_prev).solution.squeeze(1)
    resid_var = float((x_prev - A @ coef[:, None]).var())
    i = torch.full((1,), idx)
    c0, ct = float(chain.coeff("coef_x0", i, x0)), float(chain.coeff("coef_xt", i, x0))
    mean, var = chain.posterior(torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), i)
    assert float(mean) == pytest.approx(c0)
    # regression SEs are ~ sqrt(β̃ / (n var(regressor))) ≈ 1e-3 here; 0.01 is > 5 SE
    assert float(coef[0]) == pytest.approx(c0, abs=0.01) and float(coef[1]) == pytest.approx(ct, abs=0.01)
    assert resid_var == pytest.approx(float(var), rel=5 * math.sqrt(2 / n))


def test_parameterisation_identities_round_trip():
    chain = DiscreteChain(cosine_betas(50))
    g = seeded(2)
    x0, eps = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    i = torch.tensor([0, 7, 30, 49])
    x_t = chain.q_sample(x0, i, eps)
    torch.testing.assert_close(chain.x0_from_eps(x_t, i, eps), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chain.eps_from_x0(x_t, i, x0), eps, rtol=1e-4, atol=1e-4)
    # ε-form of the mean equals the posterior mean at x̂0(ε) (Ho et al. 2020, eq. 10 → 11)
    torch.testing.assert_close(chain.mean_from_eps(x_t, i, eps), chain.posterior(x0, x_t, i)[0],
                               rtol=1e-4, atol=1e-4)
    assert chain.marginal(x0, i)[0].dtype == torch.float32
