"""The divergence estimators against exact traces: linear maps, whose divergence is tr A."""

import pytest
import torch

from scoresde.likelihood import draw_probes, exact_divergence, hutchinson_divergence
from tests.common import seeded


def test_divergence_estimators_on_linear_map():
    """For F(x) = x Aᵀ the divergence is tr A exactly; Hutchinson with many probes averages to it."""
    g = seeded(4)
    D = 5
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    x = torch.randn(3, D, generator=g, dtype=torch.float64, requires_grad=True)
    out = x @ A.T
    torch.testing.assert_close(exact_divergence(out, x), torch.full((3,), float(A.trace()), dtype=torch.float64))
    v = draw_probes("rademacher", x.shape, 4000, generator=g, dtype=torch.float64)
    est = hutchinson_divergence(out, x, v)
    # Rademacher variance per probe is 2 Σ_{i≠j} A_ij² ... ≈ 2·20 = 40 here; se over 4000 probes ≈ 0.1.
    assert (est - A.trace()).abs().max() < 0.6
    # Images: shape (B, C, H, W) is handled by flattening.
    xi = torch.randn(2, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(exact_divergence(3 * xi, xi), torch.full((2,), 24.0, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_probes_have_identity_second_moment(kind):
    """E[v vᵀ] = I is what makes vᵀ A v unbiased for tr A; Rademacher entries are ±1 exactly."""
    v = draw_probes(kind, (2, 3), 20000, generator=seeded(5), dtype=torch.float64).reshape(20000, 6)
    # each entry of the empirical second moment has std ≤ sqrt(2/20000) = 0.01 (Gaussian diagonal); 0.05 = 5 SE
    torch.testing.assert_close(v.T @ v / 20000, torch.eye(6, dtype=torch.float64), atol=0.05, rtol=0)
    if kind == "rademacher":
        assert set(v.unique().tolist()) == {-1.0, 1.0}
    again = draw_probes(kind, (2, 3), 20000, generator=seeded(5), dtype=torch.float64).reshape(20000, 6)
    assert torch.equal(v, again)
    with pytest.raises(ValueError, match="probe kind"):
        draw_probes("uniform", (2, 3), 1)
