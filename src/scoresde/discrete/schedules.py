"""β schedules of the discrete forward chain q(x_t | x_{t-1}) = N(sqrt(1 − β_t) x_{t−1}, β_t I).

Every function returns a float64 tensor ``(T,)`` whose entry ``i`` is Ho's β_{i+1} (code indices run
0..T−1, the papers' t runs 1..T). :func:`check_betas` is the one validation used everywhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde._checks import check_int

__all__ = ["check_betas", "linear_betas", "cosine_betas", "sohl_dickstein_betas"]


def check_betas(betas, *, monotone: bool = True) -> Tensor:
    """Validate a schedule: a 1-D float tensor of T ≥ 1 finite values in (0, 1); returns it in float64 on CPU.

    With ``monotone`` the schedule must be non-decreasing. Every schedule of the papers is, and a
    decreasing one is almost always an index-order bug (a reversed array); pass ``monotone=False``
    to allow it on purpose.
    """
    if not isinstance(betas, Tensor):
        betas = torch.as_tensor(betas)
    if not betas.is_floating_point():
        raise TypeError(f"betas must be floating point, got dtype {betas.dtype}")
    if betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}")
    betas = betas.detach().to("cpu", torch.float64)
    bad = ~(torch.isfinite(betas) & (betas > 0) & (betas < 1))
    if bad.any():
        k = int(bad.nonzero()[0])
        raise ValueError(f"betas must lie in the open interval (0, 1); betas[{k}] = {float(betas[k])!r}")
    if monotone and betas.numel() > 1:
        drops = (betas[1:] < betas[:-1]).nonzero()
        if drops.numel():
            k = int(drops[0])
            raise ValueError(f"betas must be non-decreasing (monotone=True); betas[{k}] = {float(betas[k])!r} > "
                             f"betas[{k + 1}] = {float(betas[k + 1])!r}")
    return betas


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear schedule from ``beta_start`` to ``beta_end`` over T steps (Ho et al. 2020, §4).

    The defaults are the paper's values for T = 1000.
    """
    check_int("T", T)
    if not beta_start <= beta_end:
        raise ValueError(f"linear_betas needs beta_start <= beta_end, got {beta_start!r} > {beta_end!r}")
    return check_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2); β_t = 1 − ᾱ(t)/ᾱ(t−1), clipped at
    ``max_beta`` (the paper's 0.999) to avoid the singularity at t = T.
    """
    check_int("T", T)
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return check_betas((1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta))


def sohl_dickstein_betas(T: int, beta_1: float = 1e-4) -> Tensor:
    """Sohl-Dickstein et al. (2015) Gaussian-diffusion schedule, as initialised in that paper's experiments.

    The 2015 paper learns β_2..β_T by gradient ascent on the bound and fixes β_1 to a small value "to
    prevent overfitting" (§2.4.1, App. D). This function gives the fixed starting point: the
    reciprocal-linear schedule β_t = 1/(T − (t − 1)(T − 2)/(T − 1)), i.e. 1/T, …, 1/2, under which
    step t removes the same share of the signal left by step t−1; β_1 is replaced by ``beta_1``.
    For T = 1 the single step is β_1 = ``beta_1``.
    """
    check_int("T", T)
    if not 0 < beta_1 < 1:
        raise ValueError(f"beta_1 must lie in (0, 1), got {beta_1!r}")
    betas = 1.0 / torch.linspace(T, 2, T, dtype=torch.float64) if T > 1 else torch.ones(1, dtype=torch.float64)
    betas[0] = beta_1
    return check_betas(betas, monotone=False)
