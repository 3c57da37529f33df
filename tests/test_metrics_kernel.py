"""MMD² (RBF) against its closed form between Gaussians, KID unbiasedness, sliced Wasserstein exactness."""

import math

import pytest
import torch
from scipy.stats import norm

from scoresde.metrics.kernel import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from scoresde.metrics.sliced import sliced_wasserstein, wasserstein_1d


def _gauss_rbf_expectation(mu, cov, h):
    """E exp(−‖Z‖²/(2h²)) for Z ~ N(mu, cov) = det(I + cov/h²)^(−½) exp(−½ muᵀ (cov + h²I)^(−1) mu)."""
    eye = torch.eye(mu.shape[0], dtype=torch.float64)
    return float(torch.linalg.det(eye + cov / h**2) ** -0.5
                 * torch.exp(-0.5 * mu @ torch.linalg.solve(cov + h**2 * eye, mu)))


def _exact_rbf_mmd2(m1, c1, m2, c2, bandwidths):
    zero = torch.zeros_like(m1)
    return sum(_gauss_rbf_expectation(zero, 2 * c1, h) + _gauss_rbf_expectation(zero, 2 * c2, h)
               - 2 * _gauss_rbf_expectation(m1 - m2, c1 + c2, h) for h in bandwidths)


def test_rbf_mmd2_matches_gaussian_closed_form():
    gen = torch.Generator().manual_seed(0)
    m1, m2 = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.8, -0.3], dtype=torch.float64)
    c1 = torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64))
    c2 = torch.tensor([[0.7, 0.3], [0.3, 1.2]], dtype=torch.float64)
    l1, l2 = torch.linalg.cholesky(c1), torch.linalg.cholesky(c2)
    bandwidths = [0.5, 2.0]
    exact = _exact_rbf_mmd2(m1, c1, m2, c2, bandwidths)
    reps = []
    for _ in range(12):
        x = m1 + torch.randn(300, 2, generator=gen, dtype=torch.float64) @ l1.T
        y = m2 + torch.randn(300, 2, generator=gen, dtype=torch.float64) @ l2.T
        reps.append(float(mmd2_unbiased(x, y, kernel="rbf", bandwidth=bandwidths)))
    r = torch.tensor(reps)
    stderr = float(r.std()) / math.sqrt(len(reps))
    # unbiased estimator: the mean of 12 independent repeats is within 4 standard errors of the exact value
    assert abs(float(r.mean()) - exact) < 4 * stderr, (float(r.mean()), exact, stderr)
    assert exact > 10 * stderr  # the test separates the distributions (it could fail)


def test_kid_is_unbiased_for_equal_distributions():
    gen = torch.Generator().manual_seed(1)
    u_vals, v_vals = [], []
    for _ in range(reps := 120):
        # non-negative, skewed "activations" (ReLU features), both samples from the same law
        x = torch.relu(torch.randn(30, 8, generator=gen, dtype=torch.float64) + 0.5)
        y = torch.relu(torch.randn(30, 8, generator=gen, dtype=torch.float64) + 0.5)
        u_vals.append(kernel_inception_distance(x, y, subsets=1, subset_size=None, generator=gen).mean)
        k = polynomial_kernel
        v_vals.append(float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()))  # biased V-statistic
    u, v = torch.tensor(u_vals), torch.tensor(v_vals)
    se_u, se_v = float(u.std()) / math.sqrt(reps), float(v.std()) / math.sqrt(reps)
    assert abs(float(u.mean())) < 3 * se_u  # E[MMD²_u] = 0 exactly when P = Q
    assert float(v.mean()) > 3 * se_v  # the biased form is detectably positive: the test has power


def test_kid_subsets_equal_full_mmd_when_subset_is_everything_and_separates():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(100, 6, generator=gen), torch.randn(80, 6, generator=gen) + 0.5
    res = kernel_inception_distance(x, y, subsets=5, subset_size=80, generator=gen)
    full = kernel_inception_distance(x[:80], y, subsets=3, subset_size=80, generator=gen)
    # a full subset is a permutation: the U-statistic is permutation invariant
    assert full.std == pytest.approx(0.0, abs=1e-12)
    assert full.mean == pytest.approx(float(mmd2_unbiased(x[:80], y, kernel="polynomial")), rel=1e-12)
    assert res.subsets == 5 and res.subset_size == 80 and res.mean > 10 * res.stderr > 0


def test_kernel_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2_unbiased(x[:1], x)
    with pytest.raises(ValueError, match="unknown kernel 'laplace'"):
        mmd2_unbiased(x, x, kernel="laplace")
    with pytest.raises(ValueError, match="bandwidth must be a positive"):
        mmd2_unbiased(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="same number of values"):
        mmd2_unbiased(x, torch.randn(10, 4))
    with pytest.raises(TypeError, match="floating-point"):
        kernel_inception_distance(torch.ones(10, 3, dtype=torch.int64), x)


def test_wasserstein_1d_unequal_sizes_by_hand():
    # F_x⁻¹ = 0 on (0,½], 1 on (½,1]; F_y⁻¹ = 0,1,2 on thirds: |Δ| = 1 on (1/3,1/2] and (2/3,1] -> W_p^p = 1/2
    a, b = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)
    assert float(wasserstein_1d(a, b, 2.0)) == pytest.approx(0.5, rel=1e-12)
    assert float(wasserstein_1d(a, b, 1.0)) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("n, m", [(4000, 4000), (3000, 5000)])
def test_w2_1d_quantile_grids_match_gaussian_closed_form(n, m):
    # deterministic "samples" at the normal quantiles (i − ½)/n: W2² = (m1−m2)² + (s1−s2)² up to the grids'
    # discretisation of ∫ z² dΦ, which is below 2e-3 relative at these sizes (∑ z_i²/n ≈ 1 − O(log n / n))
    z_n = torch.tensor(norm.ppf((torch.arange(n) + 0.5).numpy() / n))
    z_m = torch.tensor(norm.ppf((torch.arange(m) + 0.5).numpy() / m))
    x, y = (1.0 + 2.0 * z_n)[:, None], (-0.5 + 0.7 * z_m)[:, None]
    exact = math.sqrt(1.5**2 + 1.3**2)
    assert sliced_wasserstein(x, y, projections=torch.ones(1, 1)) == pytest.approx(exact, rel=2e-3)


def test_sliced_w2_gaussians_matches_per_projection_closed_form():
    gen = torch.Generator().manual_seed(3)
    d, n = 3, 10000
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    c1, c2 = torch.eye(d, dtype=torch.float64), a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    x = m1 + torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = m2 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c2).T
    theta = torch.randn(16, d, generator=gen, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    # θ#N(m, C) = N(θᵀm, θᵀCθ); 1-D W2² between Gaussians = (Δmean)² + (Δstd)²
    s1 = torch.einsum("pi,ij,pj->p", theta, c1, theta).sqrt()
    s2 = torch.einsum("pi,ij,pj->p", theta, c2, theta).sqrt()
    exact = float((((theta @ (m1 - m2)) ** 2 + (s1 - s2) ** 2).mean()).sqrt())
    got = sliced_wasserstein(x, y, projections=theta)
    # two samples of 10k: the empirical W2 has an O(n^-½) error; its relative spread over 10 seeds was
    # 0.95% (mean 0.002%), so 4% is a 4-sigma bound
    assert got == pytest.approx(exact, rel=4e-2)
    same = sliced_wasserstein(x, m1 + torch.randn(n, d, generator=gen, dtype=torch.float64), projections=theta)
    assert same < 0.05 < exact  # identical laws: only sampling noise remains
    # random directions with a generator are reproducible
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert sliced_wasserstein(x[:500], y[:500], generator=g1) == sliced_wasserstein(x[:500], y[:500], generator=g2)
