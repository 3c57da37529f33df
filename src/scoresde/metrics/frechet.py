"""The Fréchet distance between two Gaussians, implemented once for every feature space.

For N(μ₁, Σ₁) and N(μ₂, Σ₂) the squared 2-Wasserstein (Fréchet) distance is (Dowson & Landau 1982;
Heusel et al. 2017, eq. (6), where it defines FID):

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½ .

The cross term is evaluated in its symmetric form: Σ₁^½ comes from the eigendecomposition of the symmetric
Σ₁ (eigenvalues clipped at 0), and tr (Σ₁^½ Σ₂ Σ₁^½)^½ is the sum of the square roots of the eigenvalues of
that symmetric positive-semidefinite matrix (clipped at 0). No non-symmetric matrix square root is taken, so
no imaginary parts arise and singular covariances (fewer samples than features) need no ε-regularisation.
Everything runs in float64 on the device of the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["frechet_distance", "sqrtm_psd"]

# Eigenvalues of a covariance below -_PSD_RTOL * (largest eigenvalue) mean the matrix is not a covariance.
_PSD_RTOL = 1e-6


def _as_float64(name: str, value, ndim: int) -> Tensor:
    t = torch.as_tensor(value)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real floating-point array, got dtype {t.dtype}")
    if t.ndim != ndim:
        want = "(F,)" if ndim == 1 else "(F, F)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _psd_eigh(name: str, cov: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a symmetric PSD matrix, rounding errors clipped to 0 (clear error otherwise)."""
    asym = (cov - cov.T).abs().max()
    scale = cov.abs().max().clamp_min(1e-300)
    if asym > 1e-6 * scale:
        raise ValueError(f"{name} must be symmetric, got max |C - C^T| = {float(asym):.3g} "
                         f"(max |C| = {float(scale):.3g})")
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
    top = evals.abs().max().clamp_min(1e-300)
    if evals.min() < -_PSD_RTOL * top:
        raise ValueError(
            f"{name} is not positive semidefinite: smallest eigenvalue {float(evals.min()):.3g} "
            f"(largest {float(evals.max()):.3g}); pass a covariance matrix"
        )
    return evals.clamp_min(0.0), evecs


def sqrtm_psd(cov: Tensor) -> Tensor:
    """Symmetric square root S^½ of a symmetric positive-semidefinite matrix, by eigendecomposition (float64)."""
    evals, evecs = _psd_eigh("cov", _as_float64("cov", cov, 2))
    return (evecs * evals.sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared Fréchet distance d² between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

    Args:
        mu1: mean of the first Gaussian, shape ``(F,)``.
        sigma1: its covariance, ``(F, F)``, symmetric positive-semidefinite (singular is fine).
        mu2: mean of the second Gaussian, ``(F,)``.
        sigma2: its covariance, ``(F, F)``.
    Returns:
        d² ≥ 0 as a Python float (FID reports d², not d).
    """
    mu1, mu2 = _as_float64("mu1", mu1, 1), _as_float64("mu2", mu2, 1)
    sigma1, sigma2 = _as_float64("sigma1", sigma1, 2), _as_float64("sigma2", sigma2, 2)
    F = mu1.shape[0]
    for name, t in (("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if t.shape[0] != F or (t.ndim == 2 and t.shape[1] != F):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, inconsistent with mu1 of shape ({F},)")
    sigma2 = sigma2.to(mu1.device)
    mu2 = mu2.to(mu1.device)
    sigma1 = sigma1.to(mu1.device)
    evals1, evecs1 = _psd_eigh("sigma1", sigma1)
    _psd_eigh("sigma2", sigma2)  # validation only
    root1 = (evecs1 * evals1.sqrt()) @ evecs1.T
    middle = root1 @ sigma2 @ root1
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0.0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * cross
    return max(float(d2), 0.0)
