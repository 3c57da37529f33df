"""Exact oracle: Gaussian mixtures and their marginals under any linear-Gaussian SDE.

If p_0 = Σ_k w_k N(m_k, diag(s_k²)) and p_0t(x_t | x_0) = N(α(t) x_0, σ(t)² I), then every marginal is
again a mixture with the same weights (Song et al. 2021, Appendix; convolution of Gaussians):

    p_t = Σ_k w_k N(α(t) m_k, diag(α(t)² s_k² + σ(t)²)),

so its log-density and score ∇_x log p_t are known in closed form at every t. This module is public:
use :meth:`GaussianMixture.score_fn` as the exact ``score_fn`` of a sampler, loss or likelihood to test
it against the truth. Data of any shape ``(B, ...)`` is flattened to ``(B, D)`` internally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from scoresde._checks import check_generator, check_time
from scoresde.sde import SDE, ScoreFn

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances, in any dimension D.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, D)`` component means.
        stds: component standard deviations: ``(K, D)``, ``(K,)`` (isotropic per component) or a number.
    Parameters are kept in float64; computations run in the dtype and on the device of the input.
    """

    def __init__(self, weights: Tensor | Sequence[float], means: Tensor | Sequence[Sequence[float]],
                 stds: Tensor | Sequence | float):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not (weights > 0).all():
            raise ValueError(f"weights must be {K} positive numbers (one per mean), got {weights.tolist()}")
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 1 and stds.shape == (K,):
            stds = stds[:, None]
        stds = stds.expand(K, D).clone() if stds.ndim <= 2 else stds
        if stds.shape != (K, D) or not (stds > 0).all():
            raise ValueError(f"stds must be positive, broadcastable to (K, D)=({K}, {D}); got {tuple(stds.shape)}")
        self.weights = weights / weights.sum()
        self.means, self.stds = means, stds

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self):
        return f"GaussianMixture(K={self.num_components}, D={self.dim})"

    # ------------------------------------------------------------------ sampling and moments
    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float64, device=None,
               return_labels: bool = False):
        """Draw ``n`` samples ``(n, D)``; with ``return_labels`` also the component index of each."""
        check_generator(generator)
        gen_device = generator.device if generator is not None else device
        labels = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=gen_device)
        x = self.means.to(gen_device)[labels] + self.stds.to(gen_device)[labels] * z
        x = x.to(device=device, dtype=dtype)
        return (x, labels.to(device)) if return_labels else x

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Full covariance Σ_k w_k (diag(s_k²) + m_k m_kᵀ) − m mᵀ."""
        m = self.mean()
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return torch.diag(self.weights @ self.stds**2) + second - torch.outer(m, m)

    def at_time(self, sde: SDE, t: float) -> GaussianMixture:
        """The marginal p_t at one time ``t`` as a mixture (for sampling p_t exactly)."""
        tt = torch.tensor([float(t)], dtype=torch.float64)
        check_time(tt, sde.T)
        alpha, std = (float(v) for v in sde.marginal_coeffs(tt))
        return GaussianMixture(self.weights, alpha * self.means, torch.sqrt(alpha**2 * self.stds**2 + std**2))

    # ------------------------------------------------------------------ densities at t = 0
    def log_prob(self, x: Tensor) -> Tensor:
        """log p_0(x) per sample, ``(B,)``, in nats."""
        return self._log_prob(x, None, None)

    def score(self, x: Tensor) -> Tensor:
        """∇_x log p_0(x), shaped like ``x``."""
        return self._score(x, None, None)

    # ------------------------------------------------------------------ marginals p_t
    def log_prob_t(self, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
        """log p_t(x) per sample under ``sde``; ``t`` has shape ``(B,)``."""
        return self._log_prob(x, t, sde)

    def score_t(self, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
        """Exact score ∇_x log p_t(x) under ``sde``, shaped like ``x``."""
        return self._score(x, t, sde)

    def responsibilities(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """Posterior component probabilities p(k | x_t), ``(B, K)`` — the exact noisy-class posterior."""
        return torch.softmax(self._component_terms(x, t, sde)[0], dim=1)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """A ready ``score_fn(x, t)`` returning the exact score of p_t under ``sde``."""

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self._score(x, t, sde)

        return exact_score

    # ------------------------------------------------------------------ internals
    def _component_params(self, x: Tensor, t: Tensor | None, sde: SDE | None):
        """Means ``(B or 1, K, D)`` and variances of every component of p_t, in x's dtype/device."""
        means = self.means.to(x.device, x.dtype)[None]
        var = (self.stds**2).to(x.device, x.dtype)[None]
        if t is not None:
            check_time(t, sde.T, batch=x.shape[0])
            alpha, std = sde.marginal_coeffs(t.to(x.dtype))
            a = alpha[:, None, None]
            means, var = a * means, a**2 * var + std[:, None, None] ** 2
        return means, var

    def _component_terms(self, x: Tensor, t, sde):
        flat = self._flatten(x)
        means, var = self._component_params(x, t, sde)
        diff = flat[:, None, :] - means  # (B, K, D)
        log_n = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        logits = torch.log(self.weights.to(x.device, x.dtype)) + log_n  # (B, K)
        return logits, diff, var

    def _log_prob(self, x, t, sde):
        return torch.logsumexp(self._component_terms(x, t, sde)[0], dim=1)

    def _score(self, x, t, sde):
        logits, diff, var = self._component_terms(x, t, sde)
        r = torch.softmax(logits, dim=1)[..., None]  # (B, K, 1)
        return (-(r * diff / var).sum(1)).reshape(x.shape)

    def _flatten(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != self.dim:
            raise ValueError(f"x must have shape (B, ...) with {self.dim} values per sample, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

