"""Fréchet distance, feature statistics and their cache, against closed forms."""

import numpy as np
import pytest
import scipy.linalg
import torch

from scoresde.metrics.frechet import frechet_distance, sqrtm_psd
from scoresde.metrics.stats import FeatureAccumulator, feature_stats, load_stats, save_stats


def _random_cov(d, gen, rank=None):
    a = torch.randn(d, rank or d, generator=gen, dtype=torch.float64)
    return a @ a.T / (rank or d)


def _scipy_fd(mu1, s1, mu2, s2):
    """Independent evaluation: the general (non-symmetric) matrix square root of Σ1 Σ2 by scipy."""
    mu1, s1, mu2, s2 = (np.asarray(v, dtype=np.float64) for v in (mu1, s1, mu2, s2))
    cross = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross).real)


@pytest.mark.parametrize("d", [1, 2, 5, 32, 128])
def test_fd_general_case_matches_scipy_sqrtm(d):
    gen = torch.Generator().manual_seed(d)
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    s1, s2 = _random_cov(d, gen), _random_cov(d, gen)
    got, want = frechet_distance(mu1, s1, mu2, s2), _scipy_fd(mu1, s1, mu2, s2)
    # both are float64 evaluations of one formula; sqrtm's Schur method is accurate to ~1e-10 relative here
    assert got == pytest.approx(want, rel=1e-8, abs=1e-9)


@pytest.mark.parametrize("d", [1, 3, 50])
def test_fd_diagonal_closed_form(d):
    # commuting (diagonal) covariances: d² = ‖μ1−μ2‖² + Σ_i (s1_i − s2_i)², computed by hand
    gen = torch.Generator().manual_seed(10 + d)
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    s1, s2 = torch.rand(d, generator=gen, dtype=torch.float64) + 0.1, torch.rand(d, generator=gen, dtype=torch.float64)
    want = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2)) == pytest.approx(want, rel=1e-10)


def test_fd_commuting_rotated_closed_form():
    # Σ1 = Q diag(a²) Qᵀ, Σ2 = Q diag(b²) Qᵀ commute: d² = ‖μ1−μ2‖² + Σ (a_i − b_i)² for any rotation Q
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    a, b = torch.rand(16, generator=gen, dtype=torch.float64) * 3, torch.rand(16, generator=gen, dtype=torch.float64)
    s1, s2 = q @ torch.diag(a**2) @ q.T, q @ torch.diag(b**2) @ q.T
    mu = torch.zeros(16, dtype=torch.float64)
    assert frechet_distance(mu, s1, mu + 1, s2) == pytest.approx(16 + float(((a - b) ** 2).sum()), rel=1e-9)


def test_fd_zero_for_identical_and_singular_ok():
    gen = torch.Generator().manual_seed(4)
    mu, s = torch.randn(64, generator=gen, dtype=torch.float64), _random_cov(64, gen, rank=10)  # rank 10 of 64
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9  # tr S = O(10); eigen round-off ~1e-13 each
    # singular vs singular: agrees with the exact commuting formula when both are projections of one basis
    p = torch.zeros(64, dtype=torch.float64)
    p[:5] = 1.0
    assert frechet_distance(mu, torch.diag(p), mu, torch.diag(4 * p)) == pytest.approx(5.0, rel=1e-10)


def test_fd_float32_input_and_errors():
    s = torch.eye(3)
    assert frechet_distance(torch.zeros(3), s, torch.ones(3), s) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="sigma2 has shape"):
        frechet_distance(torch.zeros(3), s, torch.zeros(3), torch.eye(4))
    with pytest.raises(ValueError, match="not positive semidefinite"):
        frechet_distance(torch.zeros(3), s, torch.zeros(3), -s)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(torch.zeros(3), s, torch.zeros(3), torch.triu(torch.ones(3, 3)))


def test_sqrtm_psd_squares_back():
    gen = torch.Generator().manual_seed(5)
    s = _random_cov(20, gen)
    r = sqrtm_psd(s)
    torch.testing.assert_close(r @ r, s, rtol=1e-10, atol=1e-12)


def test_accumulator_matches_batch_statistics_and_is_stable():
    gen = torch.Generator().manual_seed(6)
    # large offset (1e6) relative to unit spread: a naive E[xxᵀ] − μμᵀ loses ~12 digits here; Chan's merge does not
    x = torch.randn(1000, 7, generator=gen, dtype=torch.float64) + 1e6
    acc = FeatureAccumulator()
    for chunk in x.split(97):
        acc.update(chunk)
    stats = acc.finalize()
    torch.testing.assert_close(stats.mean, x.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(stats.cov, torch.cov(x.T), rtol=1e-9, atol=1e-9)
    assert stats.n == 1000


def test_accumulator_reservoir_is_uniform_subset():
    gen = torch.Generator().manual_seed(7)
    x = torch.arange(1000, dtype=torch.float32)[:, None].expand(1000, 2).contiguous()
    acc = FeatureAccumulator(keep=200, generator=gen)
    for chunk in x.split(64):  # sorted input: keeping the first rows would give mean 99.5
        acc.update(chunk)
    kept = acc.finalize().features[:, 0]
    assert kept.unique().numel() == 200  # without replacement
    # mean of a uniform 200-of-1000 subset: 499.5 ± 288.7·sqrt((1000−200)/(999·200)) = ±18.3; allow 4σ
    assert abs(float(kept.mean()) - 499.5) < 4 * 18.3


def test_too_few_samples_says_how_many():
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_stats(torch.randn(1, 5))


def test_stats_cache_roundtrip_and_mismatch(tmp_path):
    gen = torch.Generator().manual_seed(8)
    acc = FeatureAccumulator(keep=10, generator=gen)
    acc.update(torch.randn(50, 4, generator=gen))
    stats = acc.finalize(dataset_id="toy", resolution=(8, 8), feature_id="net/a")
    path = save_stats(stats, tmp_path / "sub" / "ref.npz")
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file
    back = load_stats(path, dataset_id="toy", resolution=(8, 8), feature_id="net/a")
    torch.testing.assert_close(back.cov, stats.cov, rtol=0, atol=0)
    torch.testing.assert_close(back.features, stats.features, rtol=0, atol=0)
    assert (back.n, back.dataset_id, back.resolution) == (50, "toy", (8, 8))
    assert back.frechet_distance(stats) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="data set 'toy', not 'cifar10'"):
        load_stats(path, dataset_id="cifar10")
    with pytest.raises(ValueError, match=r"resolution \(8, 8\)"):
        load_stats(path, resolution=(32, 32))
    with pytest.raises(ValueError, match="feature extractor 'net/a'"):
        load_stats(path, feature_id="net/b")
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "nope.npz")
