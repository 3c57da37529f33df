"""Reverse kernel, exact KLs, discretised decoder and the variational bound of scoresde.discrete."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.discrete.bound import (
    discretized_gaussian_log_prob,
    gaussian_log_prob,
    normal_kl,
    prior_kl,
    term_from_kernel_output,
    vlb,
    vlb_term,
)
from scoresde.discrete.chain import DiscreteChain
from scoresde.discrete.kernel import GaussianReverseKernel
from scoresde.discrete.schedules import linear_betas
from tests.common import discrete_mixture as mixture
from tests.common import exact_eps_net, seeded


def toy_net(learned: bool):
    """A fixed nonlinear network; with ``learned`` it also returns a variance part along dim 1."""

    def net(x, i):
        mean_part = torch.tanh(x) * 0.5 + 0.01 * i.to(x.dtype)[:, None]
        if not learned:
            return mean_part
        return torch.cat([mean_part, torch.sin(3 * x)], dim=1)

    return net


# ------------------------------------------------------------------------------------------- kernel
def test_parameterisations_agree_and_variances_interpolate():
    gm, chain = mixture(), DiscreteChain(linear_betas(50, 1e-3, 0.2))
    eps_net = exact_eps_net(gm, chain)
    x, i = gm.sample(6, generator=seeded(0)), torch.tensor([1, 5, 10, 20, 30, 49])
    k_eps = GaussianReverseKernel(chain, eps_net)
    k_x0 = GaussianReverseKernel(chain, lambda x, i: chain.x0_from_eps(x, i, eps_net(x, i)), mean_type="x0")
    k_score = GaussianReverseKernel(
        chain, lambda x, i: -eps_net(x, i) / torch.sqrt(1 - chain.coeff("alpha_bar", i, x))[:, None],
        mean_type="score")
    m = k_eps(x, i).mean
    torch.testing.assert_close(k_x0(x, i).mean, m)
    torch.testing.assert_close(k_score(x, i).mean, m)
    # learned_range: v = +1 gives β_t, v = −1 gives β̃_t (Nichol & Dhariwal 2021, eq. 15)
    for v, want in ((1.0, chain.betas[i]), (-1.0, chain.posterior_var[i])):
        k = GaussianReverseKernel(chain, lambda x, i, v=v: torch.cat([eps_net(x, i), torch.full_like(x, v)], 1),
                                  var_type="learned_range")
        torch.testing.assert_close(k(x, i).var, want[:, None].expand_as(x))
    assert torch.allclose(GaussianReverseKernel(chain, eps_net, var_type="beta")(x, i).var.squeeze(1),
                          chain.betas[i])


def test_kernel_shape_and_argument_errors():
    chain = DiscreteChain(linear_betas(10, 1e-3, 0.1))
    x, i = torch.zeros(2, 3), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        GaussianReverseKernel(chain, lambda x, i: x, var_type="learned")(x, i)
    with pytest.raises(ValueError, match="x_t's shape"):
        GaussianReverseKernel(chain, lambda x, i: torch.cat([x, x], 1))(x, i)
    with pytest.raises(ValueError, match="unknown mean_type"):
        GaussianReverseKernel(chain, lambda x, i: x, mean_type="v")
    with pytest.raises(TypeError, match="DiscreteChain"):
        GaussianReverseKernel(linear_betas(10), lambda x, i: x)


# ------------------------------------------------------------------------------------------- KLs
def test_normal_kl_matches_monte_carlo():
    g, n = seeded(1), 200000
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = m1 + math.sqrt(0.5) * torch.randn(n, generator=g, dtype=torch.float64)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    log_ratio = gaussian_log_prob(x, t(m1), t(lv1)) - gaussian_log_prob(x, t(m2), t(lv2))
    kl = float(normal_kl(t(m1), t(lv1), t(m2), t(lv2)))
    assert kl == pytest.approx(float(log_ratio.mean()), abs=5 * float(log_ratio.std()) / math.sqrt(n))


@pytest.mark.parametrize("var_type", ["beta", "beta_tilde", "learned_range", "learned"])
def test_each_kl_term_equals_monte_carlo(var_type):
    """L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)) = E_q[log q − log p] for fixed x_0, x_t."""
    chain = DiscreteChain(linear_betas(20, 1e-3, 0.2))
    kernel = GaussianReverseKernel(chain, toy_net(var_type.startswith("learned")), var_type=var_type)
    g, n = seeded(2), 100000
    x0 = torch.tensor([[0.4, -1.1, 0.2]], dtype=torch.float64)
    for idx in (1, 7, 19):
        i = torch.tensor([idx])
        x_t = chain.q_sample(x0, i, generator=g)
        out = kernel(x_t, i)
        term = float(term_from_kernel_output(chain, x0, x_t, i, out.mean, out.log_var, decoder="gaussian"))
        q_mean, q_var = chain.posterior(x0, x_t, i)
        x_prev = q_mean + q_var.sqrt() * torch.randn(n, 3, generator=g, dtype=torch.float64)
        log_q = gaussian_log_prob(x_prev, q_mean, q_var.log()).sum(1)
        log_p = gaussian_log_prob(x_prev, out.mean, out.log_var.expand(1, 3)).sum(1)
        diff = log_q - log_p
        assert term == pytest.approx(float(diff.mean()), abs=5 * float(diff.std()) / math.sqrt(n) + 1e-12)


def test_prior_kl_matches_monte_carlo():
    chain = DiscreteChain(linear_betas(30, 1e-3, 0.1))
    g, n = seeded(3), 200000
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    i = torch.full((n,), chain.T - 1)
    mean, std = chain.marginal(x0.expand(n, 2), i)
    x_T = mean + std[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    diff = gaussian_log_prob(x_T, mean, 2 * std.log()[:, None]).sum(1) - gaussian_log_prob(
        x_T, torch.zeros(()), torch.zeros(())).sum(1)
    assert float(prior_kl(chain, x0)) == pytest.approx(float(diff.mean()), abs=5 * float(diff.std()) / math.sqrt(n))


# ------------------------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("levels", [256, 32])
def test_discretized_decoder_sums_to_one_over_all_bins(levels):
    grid = (2 * torch.arange(levels, dtype=torch.float64) / (levels - 1) - 1)[:, None]
    # centred, off-centre, very narrow, very wide and far-outside Gaussians
    for mean, log_var in ((0.0, -2.0), (0.37, -9.0), (-0.91, -14.0), (0.2, 3.0), (4.0, -6.0), (-1.0, -20.0)):
        lp = discretized_gaussian_log_prob(grid, torch.tensor(mean, dtype=torch.float64),
                                           torch.tensor(log_var, dtype=torch.float64), num_levels=levels)
        assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-9)
    # an interior bin equals Φ(b) − Φ(a) (Ho et al. 2020, eq. 13)
    x, m, s = grid[levels // 3], 0.05, 0.1
    d = 1 / (levels - 1)
    want = torch.special.ndtr((x - m + d) / s) - torch.special.ndtr((x - m - d) / s)
    got = discretized_gaussian_log_prob(x, torch.tensor(m, dtype=torch.float64),
                                        torch.tensor(2 * math.log(s), dtype=torch.float64), num_levels=levels)
    torch.testing.assert_close(got.exp(), want, rtol=1e-12, atol=1e-15)


def test_discretized_decoder_rejects_data_off_the_grid():
    with pytest.raises(ValueError, match="256-level data"):
        discretized_gaussian_log_prob(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="256-level data"):
        discretized_gaussian_log_prob(torch.tensor([[1.5]]), torch.zeros(1, 1), torch.zeros(1, 1))
    chain = DiscreteChain(linear_betas(5, 1e-3, 0.1))
    with pytest.raises(ValueError, match="levels k in"):
        vlb(GaussianReverseKernel(chain, lambda x, i: x), torch.full((2, 3), 0.3))


# ------------------------------------------------------------------------------------------- the bound
def bound_gap(T, n, seed):
    """Mean of (bound − exact NLL) over n mixture samples and its standard error (nats, Gaussian decoder)."""
    gm, sde = mixture(), sd.VPSDE()
    chain = DiscreteChain.from_sde(sde, T)
    g = seeded(seed)
    x0 = gm.sample(n, generator=g)
    with torch.no_grad():
        res = vlb(GaussianReverseKernel(chain, exact_eps_net(gm, chain)), x0, generator=g, decoder="gaussian")
    d = res.total + gm.log_prob(x0)
    return float(d.mean()), float(d.std()) / math.sqrt(n)


def test_bound_with_exact_score_lies_above_nll_and_tightens():
    """With the exact reverse mean E[x_{t−1}|x_t] = (x_t + β_t ∇log q_t)/sqrt(α_t) and Σ = β_t, the bound's mean
    over data is ≥ the entropy (cross-entropy ≥ entropy) and shrinks as T grows (0.38 nats at T = 50,
    0.05 at T = 1000, see the slow test). Tolerances: the standard error of the paired mean."""
    gap50, se50 = bound_gap(50, 3000, 0)
    gap200, se200 = bound_gap(200, 3000, 1)
    assert gap50 > 5 * se50
    assert gap200 > -3 * se200
    assert gap50 - gap200 > 3 * math.hypot(se50, se200)


@pytest.mark.slow
def test_bound_gap_at_100_and_1000_steps():
    gap100, se100 = bound_gap(100, 4000, 2)
    gap1000, se1000 = bound_gap(1000, 4000, 3)
    assert gap100 > 5 * se100 and gap1000 > -3 * se1000
    assert gap100 - gap1000 > 3 * math.hypot(se100, se1000)


def test_vlb_decomposition_shapes_and_discrete_bound_in_bits():
    """Image-shaped 8-bit data in float32: the bound's parts add up, and the bits/dim of a discrete bound are
    positive and below the uniform code's 8 bits for a kernel that predicts ε well enough (here exact for
    data concentrated at one grid value)."""
    chain = DiscreteChain(linear_betas(100, 1e-4, 0.1))
    x0 = torch.full((3, 2, 4, 4), 2 * 128 / 255 - 1)  # every pixel at level 128
    level = float(x0[0, 0, 0, 0])
    kernel = GaussianReverseKernel(chain, lambda x, i: chain.eps_from_x0(x, i, torch.full_like(x, level)))
    res = vlb(kernel, x0, generator=seeded(4))
    assert res.terms.shape == (3, 100) and res.total.dtype == torch.float32
    torch.testing.assert_close(res.total, res.prior + res.terms.sum(1))
    assert torch.all(res.terms[:, 1:] >= -1e-4)  # KLs are non-negative; the exact x0 makes them ≈ 0
    bpd = res.bits_per_dim(x0)
    assert torch.all(bpd > 0) and torch.all(bpd < 8)
    one = vlb_term(kernel, x0, torch.zeros(3, dtype=torch.long), generator=seeded(5))
    assert one.shape == (3,)
