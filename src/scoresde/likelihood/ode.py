"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² ∇ log p_t(x) (eq. 13) transports p_eps to
p_T, and along a trajectory the instantaneous change of variables (Chen et al. 2018) gives

    d/dt log p_t(x(t)) = −∇·f̃(x(t), t),   so   log p_eps(x) = log p_T(x(T)) + ∫_eps^T ∇·f̃(x(t), t) dt   (eq. 39).

:func:`log_likelihood` integrates the pair (x, ∫∇·f̃) from eps to T in one ODE solve and adds the prior's
log-density at the latent z = x(T). The divergence is exact (one vector–Jacobian product per dimension,
batched with ``is_grads_batched``; for low dimensions) or the Hutchinson–Skilling estimate
E_v[vᵀ (∂f̃/∂x) v] with Gaussian or Rademacher probes v drawn once per solve (Song et al. 2021, App. D.2;
Grathwohl et al. 2019), averaged over ``probes`` of them (:mod:`scoresde.likelihood.divergence`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import (
    CheckedScore,
    ScoreNotFiniteError,
    check_choice,
    check_eps,
    check_generator,
    check_int,
    check_tensor,
    on_cpu,
)
from scoresde._ode import METHODS, integrate
from scoresde.likelihood.divergence import DIVERGENCES, draw_probes, exact_divergence, hutchinson_divergence
from scoresde.sde import SDE, ScoreFn

__all__ = ["LikelihoodResult", "log_likelihood"]


@dataclass(frozen=True)
class LikelihoodResult:
    """``logp``: log p_eps(x) per sample, nats, ``(B,)``; ``z``: the latent x(T), shaped like x;
    ``nfe``: number of score evaluations (ODE right-hand-side calls)."""

    logp: Tensor
    z: Tensor
    nfe: int


class _FlowWithDivergence:
    """Right-hand side of d(x, ℓ)/dt = (f̃(x, t), ∇·f̃(x, t)) on a flat state ``(B, D + 1)``.

    No host synchronisation on an accelerator: the finiteness check runs only for CPU states; on other
    devices the state is checked once, after the solve (and :func:`~scoresde._ode.integrate` names the time
    where a NaN right-hand side made the adaptive solver give up).
    """

    def __init__(self, drift: Callable[[Tensor, Tensor], Tensor], shape, divergence: str, probes: Tensor | None):
        self.drift, self.shape, self.divergence, self.probes = drift, tuple(shape), divergence, probes

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        B = self.shape[0]
        vec_t = t.reshape(1).expand(B).contiguous()
        with torch.enable_grad():
            x = y[:, :-1].reshape(self.shape).detach().requires_grad_(True)
            out = self.drift(x, vec_t)
            if out.shape != x.shape:  # the score's shape is checked on every call; this is the SDE's drift
                raise ValueError(f"the probability-flow drift must have the state's shape {tuple(x.shape)}, got "
                                 f"{tuple(out.shape)}: check the SDE's drift(x, t)")
            if self.divergence == "exact":
                div = exact_divergence(out, x)
            else:
                div = hutchinson_divergence(out, x, self.probes)
        dy = torch.cat([out.detach().reshape(B, -1), div.detach()[:, None]], dim=1)
        if on_cpu(dy) and not torch.isfinite(dy).all():
            raise ScoreNotFiniteError(f"log_likelihood: the probability-flow drift or its divergence is not finite at "
                             f"t={float(t):.6g} (check score_fn for NaN/inf near this time)")
        return dy


def log_likelihood(score_fn: ScoreFn, sde: SDE, x: Tensor, *, divergence: str = "rademacher", probes: int = 1,
                   eps: float = 1e-5, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   steps: int | None = None, generator: torch.Generator | None = None) -> LikelihoodResult:
    """log p_eps(x) per sample through the probability-flow ODE (Song et al. 2021, eq. 39).

    Args:
        score_fn: any ``score_fn(x, t)``; the drift is ``sde.reverse(score_fn, probability_flow=True).drift``.
            Every result must have x's shape exactly (checked on every call; broadcasting is refused).
        sde: any :class:`~scoresde.sde.SDE`; its ``prior_logp`` scores the latent.
        x: data in model space (already dequantised and scaled), ``(B, ...)`` with B >= 1, float32 or float64.
        divergence: ``"rademacher"`` or ``"gaussian"`` (Hutchinson–Skilling probes, drawn once per solve) or
            ``"exact"`` (D vector–Jacobian products per evaluation; low dimensions only).
        probes: Hutchinson probes per sample (their estimates are averaged; ignored for ``"exact"``).
        eps: start time of the ODE; the result is log p_eps, the density the paper reports.
        method: the ODE solver — ``"dopri5"`` (torchdiffeq, on x's device) by default; ``"rk45"`` is scipy's
            solver, as in the official code, for parity; any of ``scoresde._ode.METHODS`` (fixed-step ones
            take ``steps``).
        rtol: relative tolerance of an adaptive solver.
        atol: absolute tolerance of an adaptive solver.
        steps: number of steps of a fixed-step solver.
        generator: the only source of randomness (the probes).

    Returns:
        :class:`LikelihoodResult` with ``logp`` (nats per sample), the latent ``z`` and ``nfe``.
    The state, and hence the integral, is kept in x's dtype: pass float64 for reference-quality values.
    """
    if isinstance(x, Tensor) and not x.is_floating_point():
        raise TypeError(f"x must be floating-point model-space data, got dtype {x.dtype}: integer data must be "
                        "dequantised and scaled first (scoresde.likelihood.uniform_dequantize): it has no density")
    check_tensor("x", x, min_ndim=2, nonempty=True)
    check_generator(generator)
    check_choice("divergence", divergence, DIVERGENCES)
    check_int("probes", probes)
    check_choice("method", method, METHODS)
    eps = check_eps(eps, sde.T)
    v = None
    if divergence != "exact":
        v = draw_probes(divergence, x.shape, probes, generator=generator, device=x.device, dtype=x.dtype)
    # Every score is checked for x's shape (a broadcastable (B, 1), (1, D) or scalar one would give a finite,
    # wrong log-density); its values are checked through the drift and divergence in _FlowWithDivergence.
    score = CheckedScore(score_fn, finite="never")
    rhs = _FlowWithDivergence(sde.reverse(score, probability_flow=True).drift, x.shape, divergence, v)
    y0 = torch.cat([x.detach().reshape(x.shape[0], -1), x.new_zeros(x.shape[0], 1)], dim=1)
    # A solve that breaks down raises FloatingPointError (NaN/inf right-hand side) or RuntimeError, naming t.
    y1, nfe = integrate(rhs, y0, eps, sde.T, method=method, rtol=rtol, atol=atol, steps=steps,
                        what="log_likelihood: the probability-flow drift or its divergence (from score_fn)")
    if not torch.isfinite(y1).all():
        raise ValueError(f"log_likelihood: the ODE state at t=T={sde.T} is not finite (solved with {method} from "
                         f"t={eps}); check score_fn and the data range")
    z = y1[:, :-1].reshape(x.shape)
    return LikelihoodResult(logp=sde.prior_logp(z) + y1[:, -1], z=z, nfe=nfe)
