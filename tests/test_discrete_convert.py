"""The chain ε-network ↔ VP score conversion, and its agreement with ScoreModel's discrete-index rule.

Oracle: the ε-network of the exact mixture score (score_fn_to_eps_net of GaussianMixture.score_fn), and the
chain's own exact ε-network (exact_eps_net).
"""

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.discrete.chain import DiscreteChain
from scoresde.discrete.convert import STDS, eps_net_to_score_fn, score_fn_to_eps_net
from scoresde.score import ScoreModel, step_index
from tests.common import discrete_mixture as mixture
from tests.common import exact_eps_net, seeded


class _Net(nn.Module):
    """A parameter-free module around a callable ε-network, so that ScoreModel can wrap it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, label):
        return self.fn(x, label)


@pytest.mark.parametrize("std", STDS)
def test_conversion_round_trip_and_continuous_score(std):
    gm, sde, N = mixture(), sd.VPSDE(), 1000
    chain = DiscreteChain.from_sde(sde, N)
    exact_score = gm.score_fn(sde)
    eps_net = score_fn_to_eps_net(exact_score, sde, N, std=std)
    back = eps_net_to_score_fn(eps_net, sde, N, std=std)
    x, t = gm.sample(5, generator=seeded(10)), torch.tensor([0.001, 0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    torch.testing.assert_close(back(x, t), exact_score(x, t))  # the two maps are inverse
    # the chain's exact ε-network at the grid index, converted, gives the SDE's exact score up to O(1/N):
    # the chain's noise level at index i = t(N−1) differs from σ(t) by O(1/N) (away from t = 0)
    converted = eps_net_to_score_fn(exact_eps_net(gm, chain), sde, N, std=std, integer_index=True)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    torch.testing.assert_close(converted(x, t), exact_score(x, t), rtol=0.03, atol=0.03)


def test_converted_chain_model_has_the_ode_likelihood_of_the_mixture():
    """The exact chain ε-network through the VP conversion into the probability-flow ODE likelihood:
    log p_eps at eps = 1e-3 matches the mixture's exact log p_eps up to the O(1/N) chain/SDE mismatch."""
    from scoresde.likelihood import log_likelihood

    gm, sde, N = mixture(), sd.VPSDE(), 1000
    chain = DiscreteChain.from_sde(sde, N)
    base = exact_eps_net(gm, chain)

    def eps_net(x, index):  # evaluate the exact chain ε at the rounded index (a fractional one is off-grid)
        return base(x, index.round().long().clamp(0, N - 1))

    score_fn = eps_net_to_score_fn(eps_net, sde, N)
    x = gm.sample(16, generator=seeded(11))
    res = log_likelihood(score_fn, sde, x, divergence="exact", eps=1e-3, rtol=1e-5, atol=1e-5)
    exact = gm.log_prob_t(x, torch.full((16,), 1e-3, dtype=torch.float64), sde)
    # piecewise-constant index + O(1/N) noise-level mismatch; 0.05 nats per 2-D point
    assert float((res.logp - exact).abs().mean()) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_index_is_the_grid_step_at_grid_times_and_the_official_floor_between(dtype):
    """i = ⌊t(N − 1) + 10⁻³⌋: every grid time t_i of a linspace gets step i (the bare floor misses 8 % of a
    float32 1000-point grid), and off the grid it is score_sde_pytorch's floor (labels.long())."""
    for N in (10, 100, 1000, 2000):
        t = torch.linspace(0, 1, N, dtype=dtype)
        assert torch.equal(step_index(t, N), torch.arange(N))
    t = torch.tensor([0.1, 0.45, 0.4567, 1.0, 1e-5], dtype=dtype)
    assert step_index(t, 1000).tolist() == [99, 449, 456, 999, 0]  # 99.9, 449.55, 456.24, 999, 0.01
    bare = (torch.linspace(0, 1, 1000) * 999).long()
    assert int((bare != torch.arange(1000)).sum()) > 0  # the case the slack is for (guards the test above)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_model_and_eps_net_to_score_fn_are_the_same_score(dtype):
    """The two ε-network → score adapters share one index rule: identical scores on the oracle ε-network,
    on and off the grid, and both return the exact score at the grid times (the round trip)."""
    gm, sde, N = mixture(), sd.VPSDE(), 1000
    exact_score = gm.score_fn(sde)
    eps_net = score_fn_to_eps_net(exact_score, sde, N)
    model = ScoreModel(_Net(eps_net), sde, "eps", "discrete_index", discrete_steps=N)
    converted = eps_net_to_score_fn(eps_net, sde, N)
    g = seeded(12)
    x = gm.sample(N, generator=g).to(dtype)
    on_grid = torch.linspace(0, 1, N, dtype=dtype)
    off_grid = torch.rand(N, generator=g, dtype=torch.float64).to(dtype)
    for t in (on_grid, off_grid):
        assert torch.equal(model(x, t), converted(x, t))
    # at a grid time the ε-network's std and the division's std are the same σ_i: the exact score comes back,
    # up to rounding (float32: the mixture score of O(100) near t = 0 to a few ulps)
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}[dtype]
    torch.testing.assert_close(converted(x, on_grid), exact_score(x, on_grid).to(dtype), rtol=tol, atol=tol)


def test_integer_index_labels_are_the_step_of_the_std():
    """integer_index=True hands the network the same step i whose std divides its output."""
    sde, N = sd.VPSDE(), 50
    seen = []

    def net(x, label):
        seen.append(label)
        return torch.zeros_like(x)

    t = torch.linspace(0, 1, N)
    eps_net_to_score_fn(net, sde, N, integer_index=True)(torch.zeros(N, 2), t)
    assert seen[0].dtype == torch.int64 and torch.equal(seen[0], torch.arange(N))
    with pytest.raises(TypeError, match="discrete_betas"):
        eps_net_to_score_fn(net, sd.VESDE(), N)
    with pytest.raises(ValueError, match="unknown std"):
        eps_net_to_score_fn(net, sde, N, std="floor")
