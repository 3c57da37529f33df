"""The continuous-time variational bound on −log p (Song, Durkan, Murray & Ermon 2021, "ScoreFlow", Theorem 2).

What is bounded. The model is the reverse-time SDE with score s_θ started from the prior π = N(0, prior_std² I)
at T and stopped at eps, whose marginal is p^θ_eps, followed by the Gaussian decoder
p(x_0 | x_eps) = N(x_0; x_eps/α(eps), (σ(eps)/α(eps))² I). Its density on data, p_θ(x_0) = ∫ p^θ_eps(x')
p(x_0 | x') dx', satisfies for every x_0

    −log p_θ(x_0) ≤ L(x_0) = E[−log π(x_T)]                                         (prior term)
                           + ½ ∫_eps^T g(t)² E‖s_θ(x_t, t) − ∇ log p_0t(x_t | x_0)‖² dt    (score term)
                           − D ln(σ(T)/σ(eps)) − D ln α(eps)                            (offset)

with x_t ~ p_0t(·|x_0) = N(α(t) x_0, σ(t)² I). Derivation: the ELBO with q(x_eps|x_0) = p_0eps gives
−log p_θ(x_0) ≤ E_q[−log p^θ_eps(x_eps) − log p(x_0|x_eps) + log q(x_eps|x_0)], whose last two terms average to
−D ln α(eps); ScoreFlow's Theorem 2 on [eps, T] bounds −log p^θ_eps, and its denoising form (eq. for L_DSM)
carries −½g²‖∇log p_0t‖² − ∇·f, whose expectation −½D(g²/σ² + 2f) = −½D d ln σ²/dt integrates to the offset
(dσ²/dt = 2fσ² + g² for a linear SDE with drift f(t)x). All score-independent terms are exact here (the prior
term in closed form, E‖x_T‖² = α(T)²‖x_0‖² + Dσ(T)²); only the score term is a Monte-Carlo estimate.

Relation to the training loss: the score term is (T − eps)·E[dsm_loss(..., weighting="likelihood")], so
L(x_0) = (T − eps)·dsm_loss_likelihood(x_0) + terms independent of the score model, and minimising the
likelihood-weighted DSM loss minimises this bound. With ``importance_sampling`` t is drawn with density
∝ g²/σ² (uniform in log-SNR, ScoreFlow Sec. 5.1), which removes the 1/t blow-up of the weight near eps.

For the exact score and data x_0 ~ p_0 one has exactly E[L] = H(p_eps) − D ln α(eps) + KL(p_T ‖ π), and a score
error adds ½ ∫ g² E_{p_t}‖s_θ − ∇log p_t‖² dt: the tests check both identities on the Gaussian-mixture oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import batch_dim, batch_sum, check_eps, check_generator, check_int, check_tensor
from scoresde.losses import dsm_loss
from scoresde.sde import SDE, ScoreFn

__all__ = ["NLLBound", "nll_bound", "nll_bound_terms", "prior_term", "bound_offset"]


@dataclass(frozen=True)
class NLLBound:
    """Per-sample terms of the bound, nats, each ``(B,)``: ``total = prior + score + offset`` ≥ −log p_θ(x_0)."""

    total: Tensor
    prior: Tensor
    score: Tensor
    offset: Tensor


def prior_term(sde: SDE, x0: Tensor) -> Tensor:
    """E_{x_T ~ p_0T(·|x_0)}[−log π(x_T)] for π = N(0, s² I), s = ``sde.prior_std``, in closed form:

    ½ D ln(2π s²) + (α(T)² ‖x_0‖² + D σ(T)²)/(2 s²).
    """
    B, D = x0.shape[0], batch_dim(x0)
    t_T = torch.full((B,), sde.T, device=x0.device, dtype=x0.dtype)
    alpha, std = sde.marginal_coeffs(t_T)
    s2 = sde.prior_std**2
    return 0.5 * D * math.log(2 * math.pi * s2) + (alpha**2 * batch_sum(x0**2) + D * std**2) / (2 * s2)


def bound_offset(sde: SDE, dim: int, *, eps: float = 1e-5, dtype=torch.float64, device=None) -> Tensor:
    """The score-independent offset −D ln(σ(T)/σ(eps)) − D ln α(eps) of the bound (a 0-dim tensor)."""
    ends = torch.tensor([eps, sde.T], dtype=torch.float64, device=device)
    std = sde.marginal_coeffs(ends)[1]
    log_alpha_eps = sde.log_mean_coeff(ends[:1])[0]
    return (-dim * (torch.log(std[1]) - torch.log(std[0]) + log_alpha_eps)).to(dtype)


def nll_bound_terms(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, eps: float = 1e-5, importance_sampling: bool = True,
                    samples: int = 1, generator: torch.Generator | None = None) -> NLLBound:
    """Per-sample upper bound on −log p_θ(x_0) (module docstring), with its terms.

    The score term averages ``samples`` draws of (t, noise) per data point. It is differentiable in the
    score model's parameters and in ``x0`` (so a variational dequantiser can be trained through it).
    """
    check_tensor("x0", x0, min_ndim=2, nonempty=True)
    check_generator(generator)
    eps = check_eps(eps, sde.T)
    check_int("samples", samples)
    B = x0.shape[0]
    rep = x0.repeat_interleave(samples, dim=0)
    dsm = dsm_loss(score_fn, sde, rep, weighting="likelihood", importance_sampling=importance_sampling, eps=eps,
                   generator=generator)
    score = (sde.T - eps) * dsm.reshape(B, samples).mean(1)
    prior = prior_term(sde, x0)
    offset = bound_offset(sde, batch_dim(x0), eps=eps, dtype=x0.dtype, device=x0.device).expand(B)
    return NLLBound(total=prior + score + offset, prior=prior, score=score, offset=offset)


def nll_bound(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, eps: float = 1e-5, importance_sampling: bool = True,
              samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample upper bound on −log p_θ(x_0) in nats, ``(B,)``: the negative continuous-time ELBO."""
    return nll_bound_terms(score_fn, sde, x0, eps=eps, importance_sampling=importance_sampling, samples=samples,
                           generator=generator).total
