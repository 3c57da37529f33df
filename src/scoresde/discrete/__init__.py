"""Discrete-time diffusion: the Sohl-Dickstein et al. (2015) chain and DDPM (Ho et al. 2020).

- :mod:`~scoresde.discrete.schedules`: β schedules (linear, cosine, 2015) and their validation
- :mod:`~scoresde.discrete.chain`: the forward chain, q(x_t | x_0), the posterior q(x_{t−1} | x_t, x_0)
- :mod:`~scoresde.discrete.kernel`: the Gaussian reverse kernel from an ε / x0 / score network
- :mod:`~scoresde.discrete.bound`: the variational bound with exact KLs and the discretised decoder
- :mod:`~scoresde.discrete.objectives`: L_simple, the hybrid loss, importance sampling of t
- :mod:`~scoresde.discrete.sampling`: ancestral sampling
- :mod:`~scoresde.discrete.convert`: chain ε-network ↔ continuous VP ``score_fn``
"""

from scoresde.discrete.bound import (
    VLBResult,
    bits_per_dim,
    discretized_gaussian_log_prob,
    gaussian_log_prob,
    normal_kl,
    prior_kl,
    vlb,
    vlb_term,
)
from scoresde.discrete.chain import DiscreteChain
from scoresde.discrete.convert import eps_net_to_score_fn, score_fn_to_eps_net
from scoresde.discrete.kernel import GaussianReverseKernel, KernelOutput
from scoresde.discrete.objectives import (
    FixedProposal,
    LossSecondMomentSampler,
    UniformSampler,
    bound_weight_proposal,
    bound_weights,
    hybrid_loss,
    simple_loss,
    vlb_estimate,
)
from scoresde.discrete.sampling import sample_chain
from scoresde.discrete.schedules import check_betas, cosine_betas, linear_betas, sohl_dickstein_betas

__all__ = [
    "DiscreteChain", "GaussianReverseKernel", "KernelOutput", "VLBResult",
    "linear_betas", "cosine_betas", "sohl_dickstein_betas", "check_betas",
    "normal_kl", "gaussian_log_prob", "discretized_gaussian_log_prob", "prior_kl", "vlb_term", "vlb",
    "bits_per_dim", "simple_loss", "hybrid_loss", "vlb_estimate", "UniformSampler", "FixedProposal",
    "bound_weights", "bound_weight_proposal",
    "LossSecondMomentSampler", "sample_chain", "eps_net_to_score_fn", "score_fn_to_eps_net",
]
