"""Embeddings of the noise-conditioning input ``noise_cond`` (shape ``(B,)``).

* :func:`sinusoidal_embedding` — the Transformer position encoding used by DDPM (Ho et al. 2020, §4;
  Vaswani et al. 2017, §3.5): sines first, then cosines, frequencies exp(−ln(10000)·i/(half − 1)).
* :class:`GaussianFourierEmbedding` — random Fourier features (Tancik et al. 2020) of log σ used by
  NCSN++ (Song et al. 2021, App. H.1): [sin(2π log σ W), cos(2π log σ W)] with frozen W ~ N(0, s²).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "GaussianFourierEmbedding", "SinusoidalEmbedding"]


def sinusoidal_embedding(noise_cond: Tensor, dim: int, max_positions: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)``; odd ``dim`` gets a zero column at the end."""
    half = dim // 2
    if half < 2:
        raise ValueError(f"sinusoidal embedding needs dim >= 4, got dim={dim}")
    rate = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=noise_cond.device, dtype=torch.float32) * -rate)
    args = noise_cond.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalEmbedding(nn.Module):
    """Module form of :func:`sinusoidal_embedding` (no parameters); ``out_dim == dim``."""

    def __init__(self, dim: int, max_positions: float = 10000.0):
        super().__init__()
        self.dim, self.max_positions, self.out_dim = dim, max_positions, dim

    def forward(self, noise_cond: Tensor) -> Tensor:
        return sinusoidal_embedding(noise_cond, self.dim, self.max_positions)


class GaussianFourierEmbedding(nn.Module):
    """Gaussian Fourier features of ``log(noise_cond)`` (or of ``noise_cond`` with ``log_input=False``).

    ``W`` (``dim`` frequencies, N(0, scale²) at init) is a frozen parameter, as in the official
    NCSN++, so it is saved with the model but never trained. Output: ``(B, 2·dim)``.
    """

    def __init__(self, dim: int, scale: float = 16.0, log_input: bool = True):
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim) * scale, requires_grad=False)
        self.log_input, self.out_dim = log_input, 2 * dim

    def forward(self, noise_cond: Tensor) -> Tensor:
        v = torch.log(noise_cond) if self.log_input else noise_cond
        proj = v[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
