"""Latent-space tools for the probability-flow ODE (Song et al. 2021, Sec. 4.3): interpolation and temperature.

Latents of :func:`~scoresde.sampling.encode` follow the Gaussian prior N(0, σ_T² I). In high dimension
such vectors concentrate on a sphere of radius σ_T sqrt(D), and a straight line between two of them
passes through atypically short vectors; spherical interpolation (Shoemake 1985) keeps the norm.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_int, check_positive, check_tensor

__all__ = ["slerp", "interpolate", "scale_temperature"]


def slerp(z0: Tensor, z1: Tensor, w) -> Tensor:
    """Spherical interpolation per sample: sin((1−w)θ)/sin θ · z0 + sin(wθ)/sin θ · z1, θ = ∠(z0, z1).

    ``w`` is a number or a ``(B,)`` tensor in [0, 1]; w = 0 gives z0, w = 1 gives z1. Falls back to linear
    interpolation where the two latents are (nearly) parallel.
    """
    check_tensor("z0", z0, min_ndim=2)
    check_tensor("z1", z1, min_ndim=2)
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    w = torch.as_tensor(w, dtype=z0.dtype, device=z0.device).expand(z0.shape[0])
    a, b = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(torch.finfo(z0.dtype).tiny)
    theta = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(theta)
    parallel = sin < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    c0 = torch.where(parallel, 1 - w, torch.sin((1 - w) * theta) / safe)
    c1 = torch.where(parallel, w, torch.sin(w * theta) / safe)
    return append_dims(c0, z0.ndim) * z0 + append_dims(c1, z0.ndim) * z1


def interpolate(z0: Tensor, z1: Tensor, num: int, *, spherical: bool = True) -> Tensor:
    """``num`` evenly spaced points from z0 to z1 (both ends included) for each sample: ``(num, B, ...)``."""
    check_int("num", num, minimum=2)
    ws = torch.linspace(0, 1, num, dtype=z0.dtype, device=z0.device)
    if spherical:
        return torch.stack([slerp(z0, z1, w) for w in ws])
    check_tensor("z0", z0, min_ndim=2)
    return torch.stack([(1 - w) * z0 + w * z1 for w in ws])


def scale_temperature(z: Tensor, temperature: float) -> Tensor:
    """Temperature scaling of Gaussian latents: z · τ samples N(0, τ² σ_T² I), a tempered prior
    (τ < 1 trades diversity for typicality, as in Kingma & Dhariwal 2018)."""
    check_tensor("z", z, min_ndim=2)
    return z * check_positive("temperature", temperature)
