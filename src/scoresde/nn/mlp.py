"""A small residual MLP score network for low-dimensional data ``x`` of shape ``(B, D)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.nn.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding

__all__ = ["MLPScoreNet"]


class MLPScoreNet(nn.Module):
    """``(x, noise_cond) -> (B, D)``: h = W_in x + W_e emb(noise_cond); ``layers`` residual SiLU-linear layers
    each fed the embedding again; then a linear read-out.

    ``embedding``: ``"positional"`` (sinusoidal of noise_cond, e.g. 999 t) or ``"fourier"`` (Gaussian
    Fourier features of log noise_cond, for noise_cond = σ). The read-out starts at zero, so an untrained
    net outputs 0 (a neutral score / ε guess).
    """

    def __init__(self, dim: int, hidden: int = 128, layers: int = 3, embedding: str = "positional",
                 emb_dim: int = 64, fourier_scale: float = 16.0):
        super().__init__()
        for name, v in (("dim", dim), ("hidden", hidden), ("layers", layers), ("emb_dim", emb_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if embedding == "positional":
            self.embed = SinusoidalEmbedding(emb_dim)
        elif embedding == "fourier":
            self.embed = GaussianFourierEmbedding(emb_dim // 2, fourier_scale)
        else:
            raise ValueError(f"embedding must be 'positional' or 'fourier', got {embedding!r}")
        self.dim = dim
        self.emb = nn.Sequential(nn.Linear(self.embed.out_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.emb_projs = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, noise_cond: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if noise_cond.shape != (x.shape[0],):
            raise ValueError(f"noise_cond must have shape ({x.shape[0]},), got {tuple(noise_cond.shape)}")
        e = self.emb(self.embed(noise_cond).to(self.inp.weight.dtype))
        h = self.inp(x) + e
        for block, proj in zip(self.blocks, self.emb_projs, strict=True):
            h = h + block(F.silu(h + proj(e)))
        return self.out(F.silu(h))
