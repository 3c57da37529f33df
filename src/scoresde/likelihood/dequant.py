"""Variational dequantisation (Ho et al. 2019, Flow++, Sec. 3.1; used by Song et al. 2021b, ScoreFlow, Sec. 5).

Uniform noise gives the bound log P(x) ≥ E_U[log p_r(x + U)] (:mod:`scoresde.likelihood.bpd`). A conditional density
q(u | x) on the unit cell [0, 1)^D tightens it to

    log P(x) ≥ E_{u ~ q(·|x)}[log p_r(x + u) − log q(u | x)],

with equality when q(u | x) ∝ p_r(x + u). Here q is a small conditional flow: e ~ N(0, I_D), an elementwise
affine map with shift and log-scale predicted from x, ``couplings`` affine coupling layers (Dinh et al. 2017)
on alternating halves of the flattened dimensions, each conditioned on x as well, and a sigmoid onto (0, 1).
log q(u|x) = log N(e) − Σ log-scales − Σ log σ'(h). Any score model works with it: pass a log-density (or
a differentiable lower bound on it, such as −:func:`scoresde.likelihood.nll_bound`) to :func:`dequantized_log_prob`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde._checks import batch_dim, check_generator, check_int
from scoresde.likelihood.bpd import check_discrete, log_abs_scale, num_levels, to_model_space

__all__ = ["VariationalDequantizer", "dequantized_log_prob"]


def _mlp(d_in: int, d_out: int, hidden: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                        nn.Linear(hidden, d_out))
    nn.init.zeros_(net[-1].weight)  # each layer starts as the identity map: q starts at sigmoid(N(0, I))
    nn.init.zeros_(net[-1].bias)
    return net


class VariationalDequantizer(nn.Module):
    """q(u | x) on (0, 1)^D for discrete data x ∈ {0..L−1}^D of any shape ``(B, ...)`` with D values each.

    Args:
        dim: D. n_bits / levels: the data's bit depth n (L = 2ⁿ) or its number of levels L.
        hidden: width of the conditioner MLPs. couplings: number of affine coupling layers.
    """

    def __init__(self, dim: int, *, n_bits: int | None = None, levels: int | None = None, hidden: int = 64,
                 couplings: int = 4):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.levels = num_levels(n_bits, levels)
        check_int("hidden", hidden)
        check_int("couplings", couplings, minimum=0)
        J = math.ceil(math.log2(self.levels))
        self.register_buffer("periods", 2.0 ** torch.arange(1, J + 1))
        n_feat = dim * (1 + 2 * J)
        self.base = _mlp(n_feat, 2 * dim, hidden)  # elementwise affine: (shift, log-scale) from x
        self.couplings = nn.ModuleList(_mlp(dim + n_feat, 2 * dim, hidden) for _ in range(couplings))
        parity = torch.arange(dim) % 2
        self.register_buffer("masks", torch.stack([(parity == k % 2).float() for k in range(couplings)])
                             if couplings else torch.zeros(0, dim))

    def _features(self, x: Tensor) -> Tensor:
        """x scaled to [−1, 1] and sin/cos of 2πx/2^j, j = 1..⌈log2 L⌉: a smooth binary expansion of the level,
        so that q can change from one level to the next (a plain MLP of x/L cannot resolve single levels)."""
        flat = x.reshape(x.shape[0], -1).to(self.masks.dtype)
        angles = 2 * math.pi * flat[..., None] / self.periods  # (B, D, J)
        return torch.cat([flat * (2 / (self.levels - 1)) - 1, angles.sin().flatten(1), angles.cos().flatten(1)], 1)

    @staticmethod
    def _affine(params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params.chunk(2, dim=1)
        return shift, 3 * torch.tanh(raw / 3)  # log-scale bounded in (−3, 3) for stable training

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw u ~ q(·|x) (shaped like x, in the module's dtype) and log q(u|x) per sample, ``(B,)``.

        ``noise`` (``(B, D)``, standard normal) may be given to fix the randomness; u is then a deterministic,
        invertible function of it.
        """
        check_discrete(x, self.levels)
        check_generator(generator)
        if batch_dim(x) != self.dim:
            raise ValueError(f"x must have {self.dim} values per sample, got shape {tuple(x.shape)}")
        feat = self._features(x)
        B = feat.shape[0]
        if noise is None:
            gen_device = generator.device if generator is not None else feat.device
            e = torch.randn(B, self.dim, generator=generator, device=gen_device, dtype=feat.dtype).to(feat.device)
        elif noise.shape != (B, self.dim):
            raise ValueError(f"noise must have shape {(B, self.dim)}, got {tuple(noise.shape)}")
        else:
            e = noise
        log_q = -0.5 * (e**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
        shift, log_s = self._affine(self.base(feat))
        h = shift + torch.exp(log_s) * e
        log_q = log_q - log_s.sum(1)
        for mask, net in zip(self.masks, self.couplings, strict=True):
            shift, log_s = self._affine(net(torch.cat([h * mask, feat], dim=1)))
            shift, log_s = shift * (1 - mask), log_s * (1 - mask)  # only the unmasked half moves
            h = h * torch.exp(log_s) + shift
            log_q = log_q - log_s.sum(1)
        log_q = log_q + (F.softplus(-h) + F.softplus(h)).sum(1)  # −log σ'(h) for u = σ(h)
        return torch.sigmoid(h).reshape(x.shape), log_q


def dequantized_log_prob(log_prob_fn: Callable[[Tensor], Tensor], x: Tensor, u: Tensor, log_q: Tensor | None = None,
                         *, scale=1.0, shift=0.0, n_bits: int | None = None, levels: int | None = None) -> Tensor:
    """One-sample estimate of the lower bound on log P(x) in nats, ``(B,)``:

        log p(y) + D ln|a/L| − log q(u|x),   y = a·(x + u)/L + b,

    where ``log_prob_fn(y)`` is the model's log-density on model space (or a lower bound on it) and
    ``log_q`` is None for uniform u (log q = 0). Bits/dim: −result/(D ln 2). Differentiable in u and log_q.
    ``log_prob_fn`` must return one value per sample, ``(B,)``, as must ``log_q`` (checked: a (B, 1) result
    would broadcast into a (B, B) one).
    """
    L = num_levels(n_bits, levels)
    check_discrete(x, L)
    if u.shape != x.shape:
        raise ValueError(f"u must have the shape of x {tuple(x.shape)}, got {tuple(u.shape)}")
    D = batch_dim(x)
    y = to_model_space(x, u, levels=L, scale=scale, shift=shift)
    B = x.shape[0]
    if log_q is not None and (not isinstance(log_q, Tensor) or log_q.shape != (B,)):
        got = tuple(log_q.shape) if isinstance(log_q, Tensor) else type(log_q).__name__
        raise ValueError(f"log_q must have shape ({B},) (one value per sample), got {got}")
    log_p = log_prob_fn(y)
    if not isinstance(log_p, Tensor) or log_p.shape != (B,):
        got = tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p).__name__
        raise ValueError(f"log_prob_fn must return a tensor of shape ({B},) (one log-density per sample), got {got}")
    out = log_p + log_abs_scale(scale, D) - D * math.log(L)
    return out if log_q is None else out - log_q
