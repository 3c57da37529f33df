"""Noise-conditional classifiers p_t(y | x_t): ``classifier(x, t) -> logits (B, K)`` with SDE time ``t``.

Trained with :func:`scoresde.losses.classifier_loss` (cross-entropy on data perturbed by the SDE), they supply
∇_x log p_t(y | x) for guidance (:func:`scoresde.controllable.guided_score_fn`). Time enters through a
sinusoidal embedding of ``time_scale · t`` (999 t by default, as the VP score networks), added to the hidden
features of every block.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.nn.embeddings import SinusoidalEmbedding

__all__ = ["MLPClassifier", "ConvClassifier"]


def _check_ints(**kw) -> None:
    for name, v in kw.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_t(x: Tensor, t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.shape != (x.shape[0],):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must have shape ({x.shape[0]},) (one time per sample), got {got}")


class MLPClassifier(nn.Module):
    """A time-conditioned residual MLP classifier for data ``(B, dim)``."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, layers: int = 2, emb_dim: int = 64,
                 time_scale: float = 999.0):
        super().__init__()
        _check_ints(dim=dim, num_classes=num_classes, hidden=hidden, layers=layers, emb_dim=emb_dim)
        self.dim, self.num_classes, self.time_scale = dim, num_classes, float(time_scale)
        self.embed = SinusoidalEmbedding(emb_dim)
        self.emb = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        _check_t(x, t)
        e = self.emb(self.embed(self.time_scale * t).to(self.inp.weight.dtype))
        h = self.inp(x) + e
        for block in self.blocks:
            h = h + block(F.silu(h + e))
        return self.out(F.silu(h))


class ConvClassifier(nn.Module):
    """A small time-conditioned conv net for images ``(B, C, H, W)``: ``depth`` stride-2 3×3 conv blocks
    (GroupNorm, SiLU, time embedding added per block), global average pooling, a linear read-out."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, depth: int = 2, emb_dim: int = 64,
                 time_scale: float = 999.0):
        super().__init__()
        _check_ints(in_channels=in_channels, num_classes=num_classes, width=width, depth=depth, emb_dim=emb_dim)
        self.in_channels, self.num_classes, self.time_scale = in_channels, num_classes, float(time_scale)
        self.embed = SinusoidalEmbedding(emb_dim)
        self.emb = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU())
        self.inp = nn.Conv2d(in_channels, width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(depth))
        self.norms = nn.ModuleList(nn.GroupNorm(min(8, width), width) for _ in range(depth))
        self.emb_projs = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        _check_t(x, t)
        e = self.emb(self.embed(self.time_scale * t).to(self.inp.weight.dtype))
        h = self.inp(x)
        for conv, norm, proj in zip(self.convs, self.norms, self.emb_projs, strict=True):
            h = conv(F.silu(norm(h) + proj(e)[:, :, None, None]))
        return self.out(F.silu(h.mean(dim=(2, 3))))
