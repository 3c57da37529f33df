"""Time grids of the samplers: ``steps + 1`` decreasing times from T to ``eps``, one function for all.

With u_k = k/steps, k = 0 … steps (the same u for every kind), ``kind`` is

- ``"time_uniform"``: t_k = T + u_k (eps − T) (Song et al. 2021, the PC / EM / ancestral samplers);
- ``"time_quadratic"``: uniform in sqrt(t), t_k = (sqrt T + u_k (sqrt eps − sqrt T))² (DDIM's quadratic
  schedule, Song, Meng & Ermon 2021, App. D.2; DPM-Solver's default grid "time_quadratic", Lu et al. 2022);
- ``"logsnr"``: uniform in the log-SNR λ(t) = log(α²/σ²) of :meth:`~scoresde.sde.SDE.log_snr`,
  λ_k = λ(T) + u_k (λ(eps) − λ(T)), mapped back by :meth:`~scoresde.sde.SDE.t_from_log_snr`
  (Lu et al. 2022, "logSNR" grid);
- ``"edm"``: Karras et al. 2022, eq. (5), with ρ = 7 in the noise-to-signal ratio σ̃ = σ/α = e^{−λ/2} (the
  σ of the equivalent VE process x/α): σ̃_k^{1/ρ} = σ̃_max^{1/ρ} + u_k (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}), mapped
  back to t through ``sde.t_from_log_snr(−2 log σ̃_k)``.

The first and last times are exactly T and eps for every kind (the numerical inverse of the log-SNR is not
trusted at the ends). Only ``sde.T``, ``sde.log_snr`` and ``sde.t_from_log_snr`` are used, so every SDE
works. The uniform grid is built in the requested dtype directly (as the samplers always did); the others are
computed in float64 and then cast.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import check_choice, check_eps, check_int
from scoresde.sde import SDE

__all__ = ["time_grid", "GRIDS", "EDM_RHO"]

#: ρ of Karras et al. 2022, eq. (5).
EDM_RHO = 7.0


def _u(steps: int, like: Tensor) -> Tensor:
    return torch.linspace(0, 1, steps + 1, device=like.device, dtype=like.dtype)


def _time_quadratic(sde, T: Tensor, eps: Tensor, steps: int) -> Tensor:
    return (T.sqrt() + _u(steps, T) * (eps.sqrt() - T.sqrt())) ** 2


def _logsnr(sde, T: Tensor, eps: Tensor, steps: int) -> Tensor:
    lam_T, lam_eps = sde.log_snr(T.reshape(1)), sde.log_snr(eps.reshape(1))
    return sde.t_from_log_snr(lam_T + _u(steps, T) * (lam_eps - lam_T))


def _edm(sde, T: Tensor, eps: Tensor, steps: int) -> Tensor:
    s_max = torch.exp(-sde.log_snr(T.reshape(1)) / (2 * EDM_RHO))  # σ̃_max^{1/ρ}, σ̃ = e^{−λ/2}
    s_min = torch.exp(-sde.log_snr(eps.reshape(1)) / (2 * EDM_RHO))
    s = s_max + _u(steps, T) * (s_min - s_max)
    return sde.t_from_log_snr(-2 * EDM_RHO * torch.log(s))


#: ``kind`` → what is uniform on that grid.
GRIDS = {
    "time_uniform": "t",
    "time_quadratic": "sqrt(t)",
    "logsnr": "the log-SNR λ(t)",
    "edm": "(σ/α)^(1/ρ), ρ = 7 (Karras et al. 2022, eq. 5)",
}
_BUILDERS = {"time_quadratic": _time_quadratic, "logsnr": _logsnr, "edm": _edm}  # float64; uniform: linspace


def time_grid(sde: SDE, steps: int, eps: float, kind: str = "time_uniform", *,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """``steps + 1`` decreasing times ``(steps + 1,)`` from ``sde.T`` to ``eps`` spaced by ``kind``, one of
    :data:`GRIDS` (see the module docstring for each law), on ``device`` in ``dtype``."""
    check_choice("kind", kind, GRIDS)
    check_int("steps", steps)
    eps = check_eps(eps, sde.T)
    if kind == "time_uniform":
        return torch.linspace(sde.T, eps, steps + 1, device=device, dtype=dtype)
    T = torch.tensor(float(sde.T), device=device, dtype=torch.float64)
    t = _BUILDERS[kind](sde, T, torch.tensor(eps, device=device, dtype=torch.float64), steps)
    t[0], t[-1] = sde.T, eps  # exact ends despite the numerical inverse of the log-SNR
    return t.to(dtype)
