"""One small wrapper over the ODE solvers that sampling and likelihood share.

``integrate(fn, y0, t0, t1, method=...)`` solves dy/dt = fn(t, y) from ``t0`` to ``t1`` (either direction)
and returns the final state with the exact number of evaluations of ``fn``. ``fn`` receives ``t`` as a
0-dim tensor on ``y``'s device and dtype. The adaptive default runs on the device (torchdiffeq); scipy's
RK45 is offered for parity with the official implementation and copies the state to the host at every
evaluation, which is why it is not the default.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from scoresde._checks import check_choice, check_int, check_positive

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "rk45")
FIXED = ("euler", "heun", "midpoint", "rk4")
METHODS = ADAPTIVE + FIXED


class _Counted:
    """Counts the evaluations of ``fn`` and records, on the device and without a host synchronisation, the
    first time at which ``fn`` returned NaN/inf, so that a failed solve can say where ``fn`` broke down."""

    def __init__(self, fn):
        self.fn, self.nfe, self.last_t, self.first_bad_t = fn, 0, None, None

    def __call__(self, t, y):
        self.nfe += 1
        self.last_t = t
        out = self.fn(t, y)
        if isinstance(out, Tensor) and out.is_floating_point():
            tt = torch.as_tensor(t, dtype=torch.float64).to(out.device)
            if self.first_bad_t is None:
                self.first_bad_t = torch.full_like(tt, float("nan"))
            bad = ~torch.isfinite(out).all() & torch.isnan(self.first_bad_t)
            self.first_bad_t = torch.where(bad, tt, self.first_bad_t)
        return out


def _solver_failure(counted: _Counted, method: str, what: str, err: AssertionError) -> Exception:
    """The error for torchdiffeq's ``AssertionError`` (its step size underflowed). A NaN/inf right-hand side is
    the usual cause: the error estimate is NaN, every step is rejected and the step shrinks to nothing. One host
    read, on failure only, tells which it was."""
    if counted.first_bad_t is not None and not torch.isnan(counted.first_bad_t):
        return FloatingPointError(f"{what} returned NaN or inf at t = {float(counted.first_bad_t):.6g} (first "
                                  f"such evaluation); the {method} solver cannot step past it")
    t = "unknown" if counted.last_t is None else f"{float(counted.last_t):.6g}"
    return RuntimeError(f"the {method} solver failed near t = {t} ({err}); {what} is probably not smooth there")


def integrate(fn: Callable[[Tensor, Tensor], Tensor], y0: Tensor, t0: float, t1: float, *,
              method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
              steps: int | None = None, what: str = "the ODE right-hand side") -> tuple[Tensor, int]:
    """Integrate dy/dt = fn(t, y) from t0 to t1; returns (y(t1), number of fn evaluations).

    Adaptive methods use ``rtol``/``atol``; fixed-step ones (``euler``, ``heun``, ``midpoint``, ``rk4``)
    take ``steps`` uniform steps. When an adaptive solve breaks down (torchdiffeq's step-size underflow) it
    raises :class:`FloatingPointError` if ``fn`` (named ``what`` in the message) had just returned NaN/inf,
    else :class:`RuntimeError`; both name the time.
    """
    check_choice("method", method, METHODS)
    counted = _Counted(fn)
    if method == "rk45":
        return _scipy_rk45(counted, y0, t0, t1, rtol, atol), counted.nfe
    import torchdiffeq  # a core dependency, imported on first use to keep `import scoresde` light

    times = torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)
    if method in FIXED:
        check_int("steps", steps)
        opts = {"step_size": abs(t1 - t0) / steps}
        ys = torchdiffeq.odeint(counted, y0, times, method=_FIXED_NAMES[method], options=opts)
    else:
        check_positive("rtol", rtol)
        check_positive("atol", atol)
        # Keep every evaluation of fn inside [t0, t1]: step_t ends the last step exactly at t1 (torchdiffeq
        # otherwise steps past t1 and interpolates back, e.g. to t < 0 where no score exists), and a first
        # step of 1 % of the interval replaces torchdiffeq's initial-step heuristic, whose trial evaluation
        # can land far beyond t1 when fn is small at t0 (VE near t = 0). The step size adapts from there.
        opts = {"step_t": times[1:], "first_step": abs(t1 - t0) * 1e-2}
        try:
            ys = torchdiffeq.odeint(counted, y0, times, rtol=rtol, atol=atol, method=method, options=opts)
        except AssertionError as err:  # torchdiffeq signals a collapsing step size with an AssertionError
            raise _solver_failure(counted, method, what, err) from err
    return ys[-1], counted.nfe


_FIXED_NAMES = {"euler": "euler", "heun": "heun2", "midpoint": "midpoint", "rk4": "rk4"}


def _scipy_rk45(fn, y0: Tensor, t0: float, t1: float, rtol: float, atol: float) -> Tensor:
    from scipy import integrate as sp_integrate

    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def rhs(t, y_np):
        y = torch.from_numpy(y_np).to(device=device, dtype=dtype).reshape(shape)
        tt = torch.tensor(t, dtype=dtype, device=device)
        return fn(tt, y).detach().reshape(-1).cpu().numpy().astype(np.float64)

    sol = sp_integrate.solve_ivp(rhs, (t0, t1), y0.detach().reshape(-1).cpu().numpy().astype(np.float64),
                                 rtol=rtol, atol=atol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"scipy RK45 failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype).reshape(shape)
