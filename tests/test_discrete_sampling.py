"""Objectives, importance sampling of t and ancestral sampling of scoresde.discrete."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.discrete.bound import vlb, vlb_term
from scoresde.discrete.chain import DiscreteChain
from scoresde.discrete.kernel import GaussianReverseKernel
from scoresde.discrete.objectives import (
    FixedProposal,
    LossSecondMomentSampler,
    bound_weight_proposal,
    bound_weights,
    hybrid_loss,
    simple_loss,
    vlb_estimate,
)
from scoresde.discrete.sampling import sample_chain
from scoresde.discrete.schedules import linear_betas
from tests.common import discrete_mixture as mixture
from tests.common import exact_eps_net, seeded


# ------------------------------------------------------------------------------------------- objectives
def test_simple_loss_is_zero_for_the_true_noise_and_positive_otherwise():
    chain = DiscreteChain(linear_betas(20, 1e-3, 0.2))
    x0 = torch.tensor([[0.3, -0.2]]).expand(64, 2)
    # x0 is known, so ε = (x_t − sqrt(ᾱ) x0)/sqrt(1 − ᾱ) exactly: L_simple = 0 up to rounding
    exact = GaussianReverseKernel(chain, lambda x, i: chain.eps_from_x0(x, i, x0))
    assert float(simple_loss(exact, x0, generator=seeded(0)).max()) < 1e-8
    zero = GaussianReverseKernel(chain, lambda x, i: torch.zeros_like(x))
    # ε̂ = 0: L_simple = mean of ε², a χ²_2/2 variable with mean 1; over 64 samples the SE is 1/8
    assert float(simple_loss(zero, x0, generator=seeded(1)).mean()) == pytest.approx(1.0, abs=0.5)


def test_importance_sampled_bound_is_unbiased():
    """E_{i~p}[L_T + L_i/p_i] = L for a strongly non-uniform proposal: compare with the full bound."""
    gm, chain = mixture(), DiscreteChain(linear_betas(12, 1e-2, 0.4))
    kernel = GaussianReverseKernel(chain, lambda x, i: 0.8 * exact_eps_net(gm, chain)(x, i))  # an imperfect net
    n = 60000
    x0 = gm.sample(1, generator=seeded(2)).expand(n, 2)
    proposal = FixedProposal(torch.linspace(1, 12, 12) ** 2)
    with torch.no_grad():
        est, i, term = vlb_estimate(kernel, x0, sampler=proposal, generator=seeded(3), decoder="gaussian")
        full = vlb(kernel, x0[:4000], generator=seeded(4), decoder="gaussian").total
    se = math.hypot(float(est.std()) / math.sqrt(n), float(full.std()) / math.sqrt(4000))
    assert float(est.mean()) == pytest.approx(float(full.mean()), abs=4 * se)
    counts = torch.bincount(i, minlength=12).double() / n  # i ~ p
    assert torch.allclose(counts, proposal.probs(), atol=5 * math.sqrt(0.2 / n))


@pytest.mark.parametrize("var_type", ["beta", "beta_tilde"])
def test_bound_weights_are_the_weight_of_the_eps_error_in_each_term(var_type):
    """L_i(ε̂_a) − L_i(ε̂_b) = w_i (‖ε − ε̂_a‖² − ‖ε − ε̂_b‖²) at every i, the decoder (i = 0) included."""
    chain = DiscreteChain(linear_betas(15, 1e-3, 0.3))
    n, g = 15, seeded(8)
    x0, noise = torch.randn(n, 3, dtype=torch.float64, generator=g), torch.randn(n, 3, dtype=torch.float64, generator=g)
    eps_a, eps_b = torch.randn(2, n, 3, dtype=torch.float64, generator=g)
    i = torch.arange(n)

    def term(eps_hat):
        kernel = GaussianReverseKernel(chain, lambda x, j: eps_hat, var_type=var_type)
        return vlb_term(kernel, x0, i, noise=noise, decoder="gaussian")

    w = bound_weights(GaussianReverseKernel(chain, torch.zeros_like, var_type=var_type))
    expected = w * (((noise - eps_a) ** 2).sum(1) - ((noise - eps_b) ** 2).sum(1))
    torch.testing.assert_close(term(eps_a) - term(eps_b), expected, rtol=1e-9, atol=1e-9)
    if var_type == "beta":  # σ² = β: w = β / (2 α (1 − ᾱ))
        torch.testing.assert_close(w, chain.betas / (2 * chain.alphas * (1 - chain.alpha_bar)))
    p = bound_weight_proposal(GaussianReverseKernel(chain, torch.zeros_like, var_type=var_type)).probs()
    torch.testing.assert_close(p, w / w.sum())


def test_bound_weights_reject_a_learned_variance():
    chain = DiscreteChain(linear_betas(5, 1e-3, 0.3))
    with pytest.raises(ValueError, match="var_type 'beta' or 'beta_tilde'.*'learned_range'"):
        bound_weights(GaussianReverseKernel(chain, torch.zeros_like, var_type="learned_range"))


def test_loss_second_moment_sampler():
    s = LossSecondMomentSampler(3, history=2, uniform_prob=0.1)
    torch.testing.assert_close(s.probs(), torch.full((3,), 1 / 3, dtype=torch.float64))  # uniform until warm
    s.update(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1.0, 1.0, 3.0, 4.0, 5.0]))
    assert not s.warmed_up
    s.update(torch.tensor([2, 2]), torch.tensor([6.0, 8.0]))  # index 2 keeps its last two: 6, 8
    w = torch.tensor([1.0, math.sqrt(12.5), math.sqrt(50.0)], dtype=torch.float64)
    torch.testing.assert_close(s.probs(), 0.9 * w / w.sum() + 0.1 / 3)
    i, p = s.sample(5, generator=seeded(5))
    assert i.shape == p.shape == (5,) and torch.allclose(p, s.probs()[i])
    with pytest.raises(ValueError, match="positive"):
        FixedProposal([0.5, 0.0])


def test_hybrid_loss_trains_only_the_variance_through_the_bound():
    chain = DiscreteChain(linear_betas(10, 1e-2, 0.3))
    a = torch.tensor(0.5, requires_grad=True)  # mean parameter
    b = torch.tensor(0.2, requires_grad=True)  # variance parameter
    kernel = GaussianReverseKernel(chain, lambda x, i: torch.cat([a * x, b * torch.ones_like(x)], 1),
                                   var_type="learned_range")
    x0 = torch.randn(32, 2, generator=seeded(6))

    def grads(lam):
        loss, _, _ = hybrid_loss(kernel, x0, lam=lam, generator=seeded(7), decoder="gaussian")
        return torch.autograd.grad(loss.mean(), (a, b))

    (ga1, gb1), (ga2, gb2) = grads(1e-3), grads(1.0)
    torch.testing.assert_close(ga1, ga2)  # λ L_vlb contributes nothing to the mean (stop-gradient)
    assert float((gb2 - gb1).abs()) > 0  # but it does train the variance
    with pytest.raises(ValueError, match="learned variance"):
        hybrid_loss(GaussianReverseKernel(chain, lambda x, i: x), x0)


# ------------------------------------------------------------------------------------------- sampling
def test_ancestral_sampling_with_exact_score_reproduces_the_mixture():
    gm, chain = mixture(), DiscreteChain.from_sde(sd.VPSDE(), 200)
    kernel = GaussianReverseKernel(chain, exact_eps_net(gm, chain))
    n, seen = 4000, []
    x = sample_chain(kernel, (n, 2), generator=seeded(8), dtype=torch.float64,
                     callback=lambda step: seen.append((step.i, int(step.t[0]))))
    assert seen == list(zip(range(200), range(199, -1, -1), strict=True))  # step i leads to x_{T-1-i}
    # tolerances: 5 SE of a mean (sqrt(var/n) ≤ 0.02), plus the O(1/T) discretisation bias of the chain
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.08, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.1, rtol=0)
    w = gm.responsibilities(x).mean(0)  # mode weights 0.3 / 0.7; SE sqrt(0.21/n) ≈ 0.007
    torch.testing.assert_close(w, gm.weights, atol=0.04, rtol=0)
    again = sample_chain(kernel, (n, 2), generator=seeded(8), dtype=torch.float64)
    assert torch.equal(x, again)


def test_sampler_shapes_and_errors():
    chain = DiscreteChain(linear_betas(5, 1e-3, 0.1))
    kernel = GaussianReverseKernel(chain, lambda x, i: torch.zeros_like(x))
    assert sample_chain(kernel, (2, 3, 4, 4), generator=seeded(9)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        sample_chain(kernel, (4,))
    with pytest.raises(ValueError, match="x_T must have shape"):
        sample_chain(kernel, (2, 3), x_T=torch.zeros(3, 3))
