"""Unbiased kernel two-sample statistics: MMD² with a Gaussian RBF kernel, and KID.

The unbiased estimate of the squared maximum mean discrepancy between samples x (m rows) and y (n rows)
is (Gretton et al. 2012, JMLR, Lemma 6, eq. (3))

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j),

whose expectation is exactly MMD²(P, Q) (0 when P = Q), so it may be negative on a given draw.

Kernels (``kernel=``):
  * ``"rbf"``: k(x, y) = Σ_h exp(−‖x − y‖² / (2h²)) summed over the given bandwidth(s) h;
  * ``"polynomial"``: k(x, y) = (γ xᵀy + c)^d, by default d = 3, γ = 1/F, c = 1 — the kernel of the Kernel
    Inception Distance (Bińkowski et al. 2018, Sec. 3.2 / eq. after (5)).
KID is MMD²_u with the cubic polynomial kernel on features, averaged over random subsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import check_int, check_positive

__all__ = ["mmd2_unbiased", "rbf_kernel", "polynomial_kernel", "kernel_inception_distance", "KIDResult"]

Kernel = Callable[[Tensor, Tensor], Tensor]


def _flat64(name: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, ...) with a batch dimension, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def rbf_kernel(x: Tensor, y: Tensor, bandwidth: float | Sequence[float] = 1.0) -> Tensor:
    """Gram matrix Σ_h exp(−‖x_i − y_j‖² / (2h²)) of ``(m, D)`` and ``(n, D)`` rows -> ``(m, n)``."""
    hs = [bandwidth] if isinstance(bandwidth, (int, float)) else list(bandwidth)
    if not hs:
        raise ValueError("bandwidth must be a positive number or a non-empty sequence of them, got []")
    hs = [check_positive("bandwidth", h) for h in hs]
    d2 = (x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    return sum(torch.exp(-d2 / (2.0 * h * h)) for h in hs)


def polynomial_kernel(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> Tensor:
    """Gram matrix (γ xᵀy + c)^d; γ defaults to 1/D (KID's kernel with d = 3, c = 1)."""
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return (g * (x @ y.T) + coef0) ** check_int("degree", degree)


def _resolve_kernel(kernel, kernel_kwargs) -> Kernel:
    table = {"rbf": rbf_kernel, "polynomial": polynomial_kernel}
    if callable(kernel):
        fn = kernel
    elif kernel in table:
        fn = table[kernel]
    else:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(table)} or pass a callable (x, y) -> Gram")
    return lambda a, b: fn(a, b, **kernel_kwargs)


def _mmd2_from_grams(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    m, n = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2.0 * kxy.mean()


def mmd2_unbiased(x: Tensor, y: Tensor, *, kernel: str | Kernel = "rbf", **kernel_kwargs) -> Tensor:
    """Unbiased MMD² between samples ``x`` (m, ...) and ``y`` (n, ...) (Gretton et al. 2012, eq. (3)).

    Args:
        kernel: ``"rbf"`` (keyword ``bandwidth``: a number or a list, kernels summed), ``"polynomial"``
            (keywords ``degree``, ``gamma``, ``coef0``), or any callable ``(x, y) -> (m, n)`` Gram matrix.
    Returns:
        a float64 scalar tensor on the inputs' device (may be slightly negative: the estimate is unbiased).
    """
    xf, yf = _flat64("x", x), _flat64("y", y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same number of values per sample, got {xf.shape[1]} and {yf.shape[1]}")
    for name, t in (("x", xf), ("y", yf)):
        if t.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 samples for the unbiased MMD², got {t.shape[0]}")
    k = _resolve_kernel(kernel, kernel_kwargs)
    return _mmd2_from_grams(k(xf, xf), k(yf, yf), k(xf, yf))


@dataclass(frozen=True)
class KIDResult:
    """KID over ``subsets`` random subsets of ``subset_size`` rows of each feature set.

    ``std`` is the spread over subsets; ``stderr = std / sqrt(subsets)`` treats subsets as independent,
    which they are not when subsets overlap, so it is a lower bound on the true standard error.
    """

    mean: float
    std: float
    stderr: float
    subsets: int
    subset_size: int


def kernel_inception_distance(x: Tensor, y: Tensor, *, subsets: int = 100, subset_size: int | None = 1000,
                              generator: torch.Generator | None = None, degree: int = 3,
                              gamma: float | None = None, coef0: float = 1.0) -> KIDResult:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel, over random subsets.

    Each subset draws ``subset_size`` rows of ``x`` and of ``y`` without replacement (with ``generator``);
    ``subset_size=None`` or one larger than a feature set uses ``min(len(x), len(y))`` rows.
    """
    xf, yf = _flat64("x", x), _flat64("y", y)
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension, got {xf.shape[1]} and {yf.shape[1]}")
    subsets = check_int("subsets", subsets)
    size = min(xf.shape[0], yf.shape[0]) if subset_size is None else check_int("subset_size", subset_size, minimum=2)
    size = min(size, xf.shape[0], yf.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature rows in each set, got {xf.shape[0]} and {yf.shape[0]}")
    gen_device = generator.device if generator is not None else xf.device
    values = []
    for _ in range(subsets):
        ix = torch.randperm(xf.shape[0], generator=generator, device=gen_device)[:size].to(xf.device)
        iy = torch.randperm(yf.shape[0], generator=generator, device=gen_device)[:size].to(yf.device)
        values.append(mmd2_unbiased(xf[ix], yf[iy], kernel="polynomial", degree=degree, gamma=gamma, coef0=coef0))
    v = torch.stack(values)
    std = float(v.std()) if subsets > 1 else float("nan")
    return KIDResult(float(v.mean()), std, std / math.sqrt(subsets), subsets, size)
