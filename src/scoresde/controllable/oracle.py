"""Exact conditionals of a Gaussian mixture given a linear measurement — the oracle for conditional sampling.

For p(x) = Σ_k w_k N(m_k, S_k) and y = A x (any A, here with orthonormal rows or a 0/1 mask), each component
conditions in closed form (Gaussian conditioning, e.g. Bishop 2006, eqs. 2.81–2.82), and the weights follow
from Bayes' rule:

    p(x | y) = Σ_k w'_k N(m'_k, S'_k),   w'_k ∝ w_k N(y; A m_k, A S_k Aᵀ),
    m'_k = m_k + S_k Aᵀ (A S_k Aᵀ)⁻¹ (y − A m_k),   S'_k = S_k − S_k Aᵀ (A S_k Aᵀ)⁻¹ A S_k.

S'_k is singular (zero along the measured directions); it is returned in full ``(K, D, D)``, with an
orthonormal basis of the unmeasured directions (the null space of A) in which it is regular. In that basis
:meth:`ConditionalMixture.responsibilities` gives p(k | x, y) for points x on the slice {A x = y}, whose mean
over exact conditional samples is w'_k (E[p(k | x, y) | y] = p(k | y)): the mode weights of a sampler's
output are estimated by it without the misclassification of a nearest-mode count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde.analytic import GaussianMixture

__all__ = ["ConditionalMixture", "condition_mixture", "mask_matrix"]


@dataclass(frozen=True)
class ConditionalMixture:
    """p(x | y) = Σ_k weights[k] N(means[k], covs[k]) in float64: weights ``(K,)``, means ``(K, D)``,
    covs ``(K, D, D)``."""

    weights: Tensor
    means: Tensor
    covs: Tensor
    free_basis: Tensor | None = None

    def _basis(self) -> Tensor:
        if self.free_basis is None:
            raise ValueError("this ConditionalMixture has no free_basis (build it with condition_mixture)")
        return self.free_basis

    def free_coords(self, x: Tensor) -> Tensor:
        """Coordinates of x ``(n, D)`` along the unmeasured directions, ``(n, D − m)``."""
        return torch.as_tensor(x, dtype=torch.float64).reshape(x.shape[0], -1) @ self._basis().T

    def free_moments(self) -> tuple[Tensor, Tensor]:
        """Mean ``(D − m,)`` and covariance ``(D − m, D − m)`` of the conditional in :meth:`free_coords`."""
        basis = self._basis()
        return basis @ self.mean(), basis @ self.covariance() @ basis.T

    def responsibilities(self, x: Tensor) -> Tensor:
        """p(k | x, y) ``(n, K)`` for points x ``(n, D)`` on the slice {A x = y} (only their unmeasured
        coordinates are read): w'_k N(u; B m'_k, B S'_k Bᵀ) normalised over k, u = B x, B = free_basis."""
        basis = self._basis()
        u = self.free_coords(x)
        d = u[:, None, :] - (self.means @ basis.T)[None]  # (n, K, r)
        cov = basis @ self.covs @ basis.T  # (K, r, r)
        sol = torch.linalg.solve(cov[None], d[..., None])[..., 0]
        log_n = -0.5 * ((d * sol).sum(-1) + torch.logdet(cov)[None])
        return torch.softmax(torch.log(self.weights)[None] + log_n, dim=1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws ``(n, D)`` of p(x | y) (float64); they satisfy A x = y to rounding."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        evals, evecs = torch.linalg.eigh(self.covs)  # S'_k = V Λ Vᵀ, Λ ≥ 0 up to rounding
        root = evecs * evals.clamp_min(0).sqrt()[:, None, :]
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + (root[k] @ z[..., None])[..., 0]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Σ_k w_k (S_k + m_k m_kᵀ) − m mᵀ."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs)
        second = second + torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - torch.outer(m, m)


def mask_matrix(mask: Tensor) -> Tensor:
    """The selection matrix ``(m, D)`` (orthonormal rows) of the known entries of a 0/1 ``mask`` of D values."""
    idx = torch.nonzero(mask.reshape(-1) == 1).squeeze(1)
    return torch.eye(mask.numel(), dtype=torch.float64)[idx]


def condition_mixture(mixture: GaussianMixture, A: Tensor, y: Tensor) -> ConditionalMixture:
    """The exact p(x | A x = y) of ``mixture`` for one measurement ``y`` ``(m,)`` and A ``(m, D)``."""
    A = torch.as_tensor(A, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if A.ndim != 2 or A.shape[1] != mixture.dim or y.shape[0] != A.shape[0]:
        raise ValueError(f"need A (m, {mixture.dim}) and y (m,), got A {tuple(A.shape)} and y {tuple(y.shape)}")
    S = torch.diag_embed(mixture.stds**2)  # (K, D, D)
    AS = A @ S  # (K, m, D)
    C = AS @ A.T  # (K, m, m): cov of y under each component
    resid = y - mixture.means @ A.T  # (K, m)
    sol = torch.linalg.solve(C, resid[..., None])[..., 0]  # C⁻¹ (y − A m_k)
    means = mixture.means + (AS.transpose(1, 2) @ sol[..., None])[..., 0]
    covs = S - AS.transpose(1, 2) @ torch.linalg.solve(C, AS)
    log_n = -0.5 * ((resid * sol).sum(-1) + torch.logdet(C) + A.shape[0] * math.log(2 * math.pi))
    weights = torch.softmax(torch.log(mixture.weights) + log_n, dim=0)
    free_basis = torch.linalg.svd(A, full_matrices=True)[2][A.shape[0]:]  # orthonormal rows spanning null(A)
    return ConditionalMixture(weights, means, covs, free_basis)
