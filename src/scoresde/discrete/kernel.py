"""The learned Gaussian reverse kernel p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), Σ_θ(x_t, t)).

The mean comes from one of three network parameterisations (Ho et al. 2020, §3.2):

- ``"eps"``:   μ = (x_t − β_t/sqrt(1 − ᾱ_t) ε̂) / sqrt(α_t)                        (eq. 11)
- ``"x0"``:    μ = μ̃_t(x̂_0, x_t), the posterior mean at the predicted x_0          (eq. 7)
- ``"score"``: ε̂ = −sqrt(1 − ᾱ_t) ŝ, then as ``"eps"`` (ŝ ≈ ∇ log q(x_t))

and the variance is diagonal, one of:

- ``"beta"``:          Σ = β_t I (Ho et al. 2020, "σ_t² = β_t"; Sohl-Dickstein's upper limit)
- ``"beta_tilde"``:    Σ = β̃_t I, with β̃_1 := β̃_2 (Nichol & Dhariwal 2021, §3.1)
- ``"learned_range"``: log Σ = v log β_t + (1 − v) log β̃_t, v = (out + 1)/2 (Nichol & Dhariwal 2021, eq. 15)
- ``"learned"``:       log Σ = out (Sohl-Dickstein et al. 2015 learn the covariance directly)

For learned variances the network returns twice the data's channels along dim 1: the first half is the
mean part, the second the variance part. The network is called as ``net(x_t, i)`` with the integer
index ``i`` ``(B,)`` (t = i + 1); it never sees the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_choice, check_tensor
from scoresde.discrete.chain import DiscreteChain, check_index

__all__ = ["GaussianReverseKernel", "KernelOutput", "MEAN_TYPES", "VAR_TYPES"]

MEAN_TYPES = ("eps", "x0", "score")
VAR_TYPES = ("beta", "beta_tilde", "learned_range", "learned")


@dataclass(frozen=True)
class KernelOutput:
    """p_θ(x_i | x_{i+1}) for one batch: ``mean`` and ``log_var`` (broadcastable to x), plus ε̂ and x̂_0."""

    mean: Tensor
    log_var: Tensor
    eps: Tensor
    x0: Tensor

    @property
    def var(self) -> Tensor:
        return torch.exp(self.log_var)


class GaussianReverseKernel:
    """p_θ(x_{t−1} | x_t) built from ``net(x_t, i)`` on a :class:`DiscreteChain`.

    Args:
        chain: the forward chain whose reversal is learned.
        net: callable ``(x_t, i) -> Tensor``; output shaped like ``x_t`` or, for learned variances, with
            twice its size along dim 1.
        mean_type: ``"eps"`` (default, DDPM), ``"x0"`` or ``"score"``.
        var_type: ``"beta"`` (default), ``"beta_tilde"``, ``"learned_range"`` or ``"learned"``.
        clip_x0: clamp x̂_0 to [−1, 1] before forming the mean (sampling images only; the bound must be
            computed without it, so it is off by default).
    """

    def __init__(self, chain: DiscreteChain, net: Callable[[Tensor, Tensor], Tensor], *,
                 mean_type: str = "eps", var_type: str = "beta",
                 clip_x0: bool = False):
        if not isinstance(chain, DiscreteChain):
            raise TypeError(f"chain must be a DiscreteChain, got {type(chain).__name__}")
        if not callable(net):
            raise TypeError(f"net must be callable as net(x_t, i), got {type(net).__name__}")
        self.chain, self.net = chain, net
        self.mean_type = check_choice("mean_type", mean_type, MEAN_TYPES)
        self.var_type = check_choice("var_type", var_type, VAR_TYPES)
        self.clip_x0 = bool(clip_x0)

    @property
    def learned_variance(self) -> bool:
        return self.var_type.startswith("learned")

    def __repr__(self):
        return f"GaussianReverseKernel({self.chain!r}, mean_type={self.mean_type!r}, var_type={self.var_type!r})"

    def __call__(self, x_t: Tensor, i: Tensor) -> KernelOutput:
        """Mean and log-variance of p_θ(x_i | x_{i+1}) at the batch ``x_t`` and indices ``i``."""
        check_tensor("x_t", x_t, min_ndim=2)
        check_index(i, self.chain.T, batch=x_t.shape[0])
        out = self.net(x_t, i)
        mean_part, var_part = self._split(out, x_t)
        eps, x0 = self._eps_x0(mean_part, x_t, i)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = self.chain.eps_from_x0(x_t, i, x0)
        if self.mean_type == "x0" or self.clip_x0:
            mean = self.chain.posterior(x0, x_t, i)[0]
        else:  # eq. 11; algebraically the posterior mean at x̂_0(ε̂), without the division by sqrt(ᾱ)
            mean = self.chain.mean_from_eps(x_t, i, eps)
        return KernelOutput(mean=mean, log_var=self._log_var(var_part, x_t, i), eps=eps, x0=x0)

    # ------------------------------------------------------------------ pieces
    def _split(self, out, x_t: Tensor) -> tuple[Tensor, Tensor | None]:
        if not isinstance(out, Tensor):
            raise TypeError(f"net must return a Tensor, got {type(out).__name__}")
        if not self.learned_variance:
            if out.shape != x_t.shape:
                raise ValueError(f"net must return a tensor of x_t's shape {tuple(x_t.shape)} for "
                                 f"var_type={self.var_type!r}, got {tuple(out.shape)}")
            return out, None
        want = (x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:])
        if tuple(out.shape) != want:
            raise ValueError(f"for var_type={self.var_type!r} net must return {want} (mean and variance parts "
                             f"stacked along dim 1), got {tuple(out.shape)}")
        mean_part, var_part = torch.chunk(out, 2, dim=1)
        return mean_part, var_part

    def _eps_x0(self, mean_part: Tensor, x_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        c = self.chain
        if self.mean_type == "eps":
            return mean_part, c.x0_from_eps(x_t, i, mean_part)
        if self.mean_type == "x0":
            return c.eps_from_x0(x_t, i, mean_part), mean_part
        eps = c.eps_from_score(x_t, i, mean_part)
        return eps, c.x0_from_eps(x_t, i, eps)

    def _log_var(self, var_part: Tensor | None, x_t: Tensor, i: Tensor) -> Tensor:
        c = self.chain
        log_beta = torch.log(c.coeff("betas", i, x_t))
        log_tilde = c.coeff("log_posterior_var_clipped", i, x_t)
        if self.var_type == "beta":
            return append_dims(log_beta, x_t.ndim)
        if self.var_type == "beta_tilde":
            return append_dims(log_tilde, x_t.ndim)
        if self.var_type == "learned":
            return var_part
        v = (var_part + 1) / 2
        return v * append_dims(log_beta, x_t.ndim) + (1 - v) * append_dims(log_tilde, x_t.ndim)
