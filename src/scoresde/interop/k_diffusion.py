"""k-diffusion denoisers ↔ scoresde score functions: :func:`to_k_diffusion` and :func:`from_k_diffusion`.

k-diffusion (Karras et al. 2022, "EDM") samples in σ-space: x̃ = x0 + σ̃ n with a denoiser D(x̃, σ̃) ≈ E[x0 | x̃]
and the probability-flow ODE dx̃/dσ̃ = (x̃ − D(x̃, σ̃)) / σ̃ (their eq. 3 with s = 1, σ(t) = t). Any scoresde
SDE with kernel N(α(t) x0, σ(t)² I) is that process after the change of variables (Karras et al. 2022,
eq. 4 and App. B.2; Kingma et al. 2021, VDM's invariance to the noise schedule):

    x̃ = x / α(t),      σ̃(t) = σ(t) / α(t) = exp(−λ(t)/2),    λ(t) = log(α²/σ²) the log-SNR,

and Tweedie's formula (Efron 2011) gives the denoiser from the score and back:

    D(x̃, σ̃) = (x + σ(t)² ∇_x log p_t(x)) / α(t),        ∇_x log p_t(x) = (α(t) D(x/α, σ̃) − x) / σ(t)²,

at x = α(t) x̃ and t = t(σ̃). The inverse time map t(σ̃) is ``sde.t_from_log_snr(−2 log σ̃)``: a closed form
for VE, VP, sub-VP and :class:`~scoresde.interop.TabulatedVPSDE`, the base class's bisection on
``sde.log_snr`` (built on ``sde.marginal_coeffs``) for a user's own SDE. σ̃ outside [σ̃(0), σ̃(T)] by more
than a relative :data:`SIGMA_RTOL` is refused; within it (float32 round-off: k-diffusion's Karras grid
computes σ_max as (σ_max^{1/ρ})^ρ) it is clamped, so t never leaves [0, T].

Euler steps in σ̃ with this denoiser are DDIM, i.e. DPM-Solver++ of order 1 on the matching time grid
(Lu et al. 2022b, eq. 8 with a constant x̂_0): ``sample_dpm_solver(..., order=1)`` lands on the same samples.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde._checks import append_dims, check_eps, check_time, on_cpu
from scoresde.sde import SDE

__all__ = ["KDiffusionDenoiser", "DenoiserScore", "to_k_diffusion", "from_k_diffusion", "SIGMA_RTOL"]

#: Relative slack on σ̃ at the ends of [σ̃(0), σ̃(T)] absorbed by clamping (float32 round-off and the
#: ρ-th power of k-diffusion's Karras grid reach a few 1e-7; a σ̃ off by more is an error).
SIGMA_RTOL = 1e-4


def _check_sde(sde) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an instance of scoresde.SDE, got {type(sde).__name__}")
    return sde


def _wide(t: Tensor) -> torch.dtype:
    return torch.float32 if t.device.type == "mps" else torch.float64


def _as_batch(v, x: Tensor, name: str) -> Tensor:
    """A per-sample tensor (B,) from a number, a 0-dim tensor or a (B,) tensor."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    if v.ndim != 1 or v.shape[0] != x.shape[0] or not v.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape ({x.shape[0]},) (one per sample), got "
                         f"{v.dtype} of shape {tuple(v.shape)}")
    return v


class _SigmaMap:
    """σ̃(t) = σ(t)/α(t) and its inverse for one SDE, in float64 (float32 on MPS, which has no float64)."""

    def __init__(self, sde: SDE):
        self.sde = sde
        ends = torch.tensor([0.0, float(sde.T)], dtype=torch.float64)
        lo, hi = self.sigma(ends).tolist()
        self.lo, self.hi = lo, hi

    def sigma(self, t: Tensor) -> Tensor:
        alpha, std = self.sde.marginal_coeffs(t.to(_wide(t)))
        return std / alpha

    def time(self, sigma: Tensor, name: str = "sigma") -> Tensor:
        s = sigma.to(_wide(sigma))
        if on_cpu(s) and s.numel() > 0:
            lo, hi = float(s.min()), float(s.max())
            if not (lo > 0 and math.isfinite(hi) and lo >= self.lo * (1 - SIGMA_RTOL)
                    and hi <= self.hi * (1 + SIGMA_RTOL)):
                raise ValueError(f"{name} must be positive and lie in [{self.lo:.6g}, {self.hi:.6g}] (σ/α over t in "
                                 f"[0, T={self.sde.T}] of {self.sde!r}), got values in [{lo:.6g}, {hi:.6g}]")
        s = s.clamp(self.lo, self.hi)
        t = self.sde.t_from_log_snr(-2 * torch.log(s)).clamp(0.0, float(self.sde.T))
        # the ends exactly (a numerical inverse can land a few ulps inside or outside [0, T])
        return torch.where(s >= self.hi, float(self.sde.T), torch.where(s <= self.lo, 0.0, t))


class KDiffusionDenoiser(nn.Module):
    """k-diffusion-style denoiser ``D(x, sigma) = E[x0 | x]`` of a scoresde ``(score_fn, sde)`` pair.

    ``forward(x, sigma, **extra_args)`` takes x̃ = x/α in σ-space and σ̃ of shape ``(B,)`` (or a number);
    ``extra_args`` (k-diffusion's conditioning keywords) are passed on to ``score_fn``. Attributes as
    k-diffusion's wrappers: :attr:`sigma_min` (σ̃ at ``eps``), :attr:`sigma_max` (σ̃(T)), :meth:`sigma_to_t`,
    :meth:`t_to_sigma`. Sample with k-diffusion from ``randn * sigma_max``; the result at σ̃ = 0 is data.
    """

    def __init__(self, score_fn, sde: SDE, *, eps: float = 1e-3):
        super().__init__()
        if not callable(score_fn):
            raise TypeError(f"score_fn must be a callable (x, t) -> score, got {type(score_fn).__name__}")
        self.score_fn, self.sde = score_fn, _check_sde(sde)
        self._map = _SigmaMap(sde)
        self.eps = check_eps(eps, sde.T)
        self.sigma_min = float(self._map.sigma(torch.tensor([self.eps], dtype=torch.float64)))
        self.sigma_max = self._map.hi

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, sigma_min={self.sigma_min:.6g}, sigma_max={self.sigma_max:.6g}"

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """SDE time t(σ̃) (float64), clamped into [0, T] (see :data:`SIGMA_RTOL`)."""
        return self._map.time(torch.as_tensor(sigma))

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """σ̃(t) = σ(t)/α(t) (float64)."""
        return self._map.sigma(torch.as_tensor(t))

    def forward(self, x: Tensor, sigma, **extra_args) -> Tensor:
        sigma = _as_batch(sigma, x, "sigma")
        t = self._map.time(sigma)
        alpha, std = self.sde.marginal_coeffs(t)
        alpha, std = append_dims(alpha.to(x.dtype), x.ndim), append_dims(std.to(x.dtype), x.ndim)
        tt = t.to(x.dtype)
        score = self.score_fn(alpha * x, tt, **extra_args) if extra_args else self.score_fn(alpha * x, tt)
        return x + std**2 / alpha * score  # (x_t + σ² ∇ log p_t(x_t)) / α with x_t = α x̃


class DenoiserScore(nn.Module):
    """``score_fn(x, t)`` of a k-diffusion denoiser D(x̃, σ̃): (α D(x/α, σ/α) − x) / σ² (Tweedie)."""

    def __init__(self, denoiser, sde: SDE):
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"denoiser must be a callable (x, sigma) -> x0, got {type(denoiser).__name__}")
        self.denoiser, self.sde = denoiser, _check_sde(sde)

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}"

    def forward(self, x: Tensor, t: Tensor, **extra_args) -> Tensor:
        if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != x.shape[0]:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a tensor of shape ({x.shape[0]},) (one time per sample), got {got}")
        check_time(t, self.sde.T, batch=x.shape[0])
        alpha, std = self.sde.marginal_coeffs(t.to(_wide(t)))
        sigma = (std / alpha).to(x.dtype)
        alpha, std = append_dims(alpha.to(x.dtype), x.ndim), append_dims(std.to(x.dtype), x.ndim)
        x_tilde = x / alpha
        d = self.denoiser(x_tilde, sigma, **extra_args) if extra_args else self.denoiser(x_tilde, sigma)
        return (alpha * d - x) / std**2


def to_k_diffusion(score_fn, sde: SDE, *, eps: float = 1e-3) -> KDiffusionDenoiser:
    """A k-diffusion denoiser D(x̃, σ̃) of ``(score_fn, sde)`` (module docstring); ``eps`` sets ``sigma_min``."""
    return KDiffusionDenoiser(score_fn, sde, eps=eps)


def from_k_diffusion(denoiser, sde: SDE) -> DenoiserScore:
    """A scoresde ``score_fn(x, t)`` on ``sde`` from a k-diffusion denoiser ``D(x, sigma)`` (module docstring).

    The denoiser sees σ̃ = σ(t)/α(t) and x̃ = x/α(t): for a k-diffusion VP model (e.g. ``DiscreteEpsDDPMDenoiser``)
    pass the matching VP ``sde`` (:class:`~scoresde.interop.TabulatedVPSDE` of its ᾱ table); for an EDM/VE
    model any SDE whose σ̃ range covers the model's works, a ``VESDE`` with its σ range most simply.
    """
    return DenoiserScore(denoiser, sde)
