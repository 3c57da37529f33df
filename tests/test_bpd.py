"""bits_per_dim and uniform dequantisation against hand-computed cases and exact discrete probabilities."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.likelihood import (
    bits_per_dim,
    check_discrete,
    dequantized_log_prob,
    nll_to_bits_per_dim,
    to_model_space,
    uniform_dequantize,
)
from tests.common import discretized_mixture_log_prob, seeded


@pytest.mark.parametrize("scale,shift", [(1.0, 0.0), (2.0, -1.0), (0.5, 3.0)])
def test_uniform_model_gives_exactly_n_bits(scale, shift):
    """A uniform density on the image of the cube, p(y) = 1/|a|^D, gives bpd = n exactly for any scaler."""
    D = 6
    logp = torch.full((3,), -D * math.log(abs(scale)), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(logp, D, scale=scale), torch.full((3,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(bits_per_dim(logp, D, scale=scale, n_bits=5), torch.full((3,), 5.0,
                                                                                           dtype=torch.float64))
    # Per-dimension scale tensor: Σ ln|a_i| replaces D ln|a|.
    a = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.0, 3.0], dtype=torch.float64)
    logp_a = torch.full((3,), -float(torch.log(a).sum()), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(logp_a, D, scale=a), torch.full((3,), 8.0, dtype=torch.float64))
    # 17 levels (the digits data): + log2 17.
    assert float(bits_per_dim(torch.zeros(1), 1, levels=17)) == pytest.approx(math.log2(17))


def test_dequantized_bpd_bounds_exact_discrete_nll():
    """Smooth density (std ≫ bin): uniform-dequantised bpd ≥ exact discrete bpd, and within O(bin²) of it."""
    L, a, b, D = 256, 2.0, -1.0, 2
    mix = sd.GaussianMixture([0.4, 0.6], [[-0.3, 0.2], [0.4, -0.1]], [[0.1, 0.2], [0.15, 0.1]])
    g = seeded(20)
    y = mix.sample(20_000, generator=g)
    x = ((y - b) / a * L).floor().clamp(0, L - 1)
    yq = uniform_dequantize(x, scale=a, shift=b, generator=g, dtype=torch.float64)
    assert ((yq - b) / a * L).floor().equal(x)  # dequantised values stay in their own cell
    bpd = bits_per_dim(mix.log_prob(yq), D, scale=a)
    exact = -discretized_mixture_log_prob(mix, x, scale=a, shift=b, levels=L) / (D * math.log(2))
    gap = bpd - exact
    se = float(gap.std()) / math.sqrt(gap.numel())
    # Jensen: E[gap] ≥ 0; for bin width w = 2/256 and std ≥ 0.1, the gap is O(w²/s²) ≈ 1e-3 bits/dim.
    assert float(gap.mean()) > -4 * se
    assert float(gap.mean()) < 5e-3
    # The same through dequantized_log_prob (uniform u, no log q).
    u = (yq - b) / a * L - x
    lp = dequantized_log_prob(mix.log_prob, x, u, scale=a, shift=b)
    torch.testing.assert_close(-lp / (D * math.log(2)), bpd)


def test_errors_for_out_of_range_and_undequantised_data():
    with pytest.raises(ValueError, match="declared range 0..255"):
        uniform_dequantize(torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match="declared range 0..15"):
        uniform_dequantize(torch.tensor([[-1, 3]]), n_bits=4)
    with pytest.raises(ValueError, match="non-integer"):
        check_discrete(torch.tensor([[0.5, 0.25]]), 256)
    with pytest.raises(ValueError, match="not both"):
        uniform_dequantize(torch.tensor([[1]]), n_bits=8, levels=256)
    with pytest.raises(ValueError, match="scale"):
        bits_per_dim(torch.zeros(2), 3, scale=0.0)
    with pytest.raises(TypeError, match="logp"):
        bits_per_dim(torch.zeros(2, dtype=torch.long), 3)
    u = uniform_dequantize(torch.tensor([[0, 255]], dtype=torch.uint8), generator=seeded(21))
    assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()


def test_every_bits_per_dim_is_the_one_formula():
    """The discrete bound's and the data module's bits/dim are thin calls of the two functions here.

    A uniform categorical over L levels per dimension has −log P(x) = D ln L exactly: log2 L bits/dim through
    the unit conversion, and the same through the dequantised formula for its density 1/|a|^D on model space.
    """
    from scoresde import data
    from scoresde.discrete import bits_per_dim as discrete_bpd

    D, L, a = 6, 17, 2.0
    x = torch.zeros(3, D)
    nll = torch.full((3,), D * math.log(L), dtype=torch.float64)
    want = torch.full((3,), math.log2(L), dtype=torch.float64)
    torch.testing.assert_close(nll_to_bits_per_dim(nll, D), want)
    torch.testing.assert_close(discrete_bpd(nll, x), want)
    logp = torch.full((3,), -D * math.log(a), dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(logp, D, scale=a, levels=L), want)
    assert torch.equal(data.discrete_bits_per_dim(logp, D, levels=L, scale=a), bits_per_dim(logp, D, scale=a, levels=L))
    with pytest.raises(TypeError, match="nll"):
        nll_to_bits_per_dim(torch.zeros(2, dtype=torch.long), 3)


def test_unit_space_dequantize_is_uniform_dequantize_of_its_levels():
    """data.dequantize reads the level k of each u and dequantises k with the one map: same draws, same values,
    and each result stays in its level's bin [k, k + 1)/L."""
    from scoresde import data

    L = 17
    k = torch.randint(0, L, (64, 1, 2, 2), generator=seeded(30))
    for u in ((k + 0.5) / L, k / (L - 1)):  # bin centres and the torchvision convention k/(L − 1)
        got = data.dequantize(u.double(), L, generator=seeded(31))
        want = uniform_dequantize(k, levels=L, generator=seeded(31), dtype=torch.float64)
        assert torch.equal(got, want)
        assert torch.equal(torch.floor(got * L).long(), k)
    y = to_model_space(k, torch.full(k.shape, 0.5), levels=L, scale=2.0, shift=-1.0)
    torch.testing.assert_close(y, 2 * (k + 0.5) / L - 1)
