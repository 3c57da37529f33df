"""Sliced Wasserstein distance between two samples (Rabin et al. 2011; Bonneel et al. 2015).

    SW_p(P, Q)^p = E_θ [ W_p(θ#P, θ#Q)^p ],   θ uniform on the unit sphere,

estimated with a finite set of directions. In one dimension W_p between two empirical measures is exact
through their quantile functions: W_p^p = ∫₀¹ |F_x⁻¹(u) − F_y⁻¹(u)|^p du. Both quantile functions are
piecewise constant with breaks at multiples of 1/m and 1/n, so the integral is a finite sum over the
merged breakpoints, exact for any two sample sizes (no interpolation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import check_generator, check_int, check_positive

__all__ = ["sliced_wasserstein", "random_directions", "wasserstein_1d"]


def random_directions(num: int, dim: int, *, generator: torch.Generator | None = None, dtype=torch.float64,
                      device=None) -> Tensor:
    """``(num, dim)`` directions uniform on the unit sphere (normalised Gaussian draws)."""
    check_int("num", num)
    check_generator(generator)
    gen_device = generator.device if generator is not None else device
    theta = torch.randn(num, dim, generator=generator, dtype=dtype, device=gen_device).to(device)
    return theta / theta.norm(dim=1, keepdim=True)


def _quantile_grid(m: int, n: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Interval widths and the order-statistic index of each sample on the merged breakpoints of 1/m, 1/n."""
    breaks = torch.cat([torch.arange(1, m + 1, device=device, dtype=torch.float64) / m,
                        torch.arange(1, n + 1, device=device, dtype=torch.float64) / n]).sort().values
    lower = torch.cat([breaks.new_zeros(1), breaks[:-1]])
    widths = breaks - lower
    mid = 0.5 * (breaks + lower)
    ix = (mid * m).floor().long().clamp(max=m - 1)
    iy = (mid * n).floor().long().clamp(max=n - 1)
    return widths, ix, iy


def wasserstein_1d(a: Tensor, b: Tensor, p: float = 2.0) -> Tensor:
    """Exact W_p^p between the empirical measures of the rows' entries: ``(P, m)`` and ``(P, n)`` -> ``(P,)``."""
    widths, ia, ib = _quantile_grid(a.shape[-1], b.shape[-1], a.device)
    qa = a.sort(dim=-1).values[..., ia]
    qb = b.sort(dim=-1).values[..., ib]
    return ((qa - qb).abs() ** p * widths).sum(-1)


def sliced_wasserstein(x: Tensor, y: Tensor, *, projections: int | Tensor = 128, p: float = 2.0,
                       generator: torch.Generator | None = None) -> float:
    """Sliced p-Wasserstein distance SW_p between samples ``x`` (m, ...) and ``y`` (n, ...).

    Args:
        projections: a number of random directions (drawn with ``generator``) or a ``(P, D)`` tensor of
            directions (rows are normalised here), e.g. to compare against a closed form.
        p: the order p ≥ 1.
    Returns:
        SW_p = (mean over directions of W_p^p)^(1/p), a Python float (computed in float64).
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim < 2 or t.shape[0] < 1:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating tensor of shape (N, ...) with N >= 1, got {got}")
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    yf = y.reshape(y.shape[0], -1).to(xf.device, torch.float64)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same number of values per sample, got {xf.shape[1]} and {yf.shape[1]}")
    if check_positive("p", p) < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    if isinstance(projections, Tensor):
        if projections.ndim != 2 or projections.shape[1] != xf.shape[1]:
            raise ValueError(f"projections must have shape (P, {xf.shape[1]}), got {tuple(projections.shape)}")
        theta = projections.to(xf.device, torch.float64)
        theta = theta / theta.norm(dim=1, keepdim=True)
    else:
        theta = random_directions(projections, xf.shape[1], generator=generator, device=xf.device)
    wp = wasserstein_1d(theta @ xf.T, theta @ yf.T, p)
    return float(wp.mean() ** (1.0 / p))
