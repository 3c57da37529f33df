"""Probability-flow ODE sampling (Song et al. 2021, eq. 13) and its inverse, the encoder.

    dx/dt = f(x, t) − ½ g(t)² ∇ log p_t(x),

taken from ``sde.reverse(score_fn, probability_flow=True).drift`` and integrated with
:func:`scoresde._ode.integrate`: torchdiffeq's dopri5 by default (on the device), scipy's ``"rk45"`` for
parity with the official code, or fixed-step ``"euler"``/``"heun"``/``"midpoint"``/``"rk4"`` with ``steps``.
The map is deterministic, so a latent z ~ p_T decodes to one sample and a sample encodes to one latent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import check_eps, check_tensor
from scoresde._ode import FIXED, METHODS, integrate
from scoresde.sampling._common import (
    CountedScore,
    batch_time,
    check_callback,
    check_finite,
    check_sde,
    initial_state,
    tweedie_denoise,
)
from scoresde.sampling.result import SampleResult

__all__ = ["sample_ode", "encode", "decode"]


def _flow(sde, score: CountedScore, x: Tensor, t0: float, t1: float, *, method, rtol, atol, steps, callback,
          caller: str):
    """Integrate the probability-flow ODE from t0 to t1 starting at x; returns the end state.

    ``score`` checks every result's shape and, on CPU, its values; on other devices a NaN that makes the
    adaptive solver give up is reported by :func:`~scoresde._ode.integrate` with its time."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if method in FIXED and steps is None:
        raise ValueError(f"method {method!r} takes a fixed number of steps: pass steps=<int >= 1>, got None")
    ode = sde.reverse(score, probability_flow=True)
    calls = [0]

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        tt = batch_time(t.to(y.dtype), y)
        dy = ode.drift(y, tt)
        if callback is not None:
            callback(calls[0], tt, y, y)
        calls[0] += 1
        return dy

    y, _ = integrate(rhs, x, t0, t1, method=method, rtol=rtol, atol=atol, steps=steps,
                     what=f"{caller}: the probability-flow drift (from score_fn)")
    check_finite(y, calls[0] - 1, torch.as_tensor(t1), last=True)
    return y


@torch.no_grad()
def sample_ode(score_fn, sde, shape=None, *, z: Tensor | None = None, method: str = "dopri5",
               rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None, eps: float = 1e-3,
               generator: torch.Generator | None = None, device=None, dtype=torch.float32, callback=None,
               progress: bool = False, denoise: bool = False) -> SampleResult:
    """Sample by integrating the probability-flow ODE from T to ``eps``, from the latent ``z`` or, when
    ``z`` is None, from fresh prior noise of ``shape``.

    ``method``: ``"dopri5"`` (default; adaptive, ``rtol``/``atol``), ``"rk45"`` (scipy; copies the state to
    the host at every evaluation), other torchdiffeq adaptive methods, or a fixed-step method with ``steps``.
    ``callback(i, t, x, x)`` is called at every ODE right-hand-side evaluation i (adaptive solvers also
    evaluate rejected trial steps). ``progress`` is accepted for the common signature; an adaptive solve
    has no step count to show. Returns the samples and the exact number of score evaluations (+1 with
    ``denoise``, a final Tweedie step E[x_0 | x_eps]). A score that returns NaN/inf raises
    :class:`FloatingPointError` naming the time (on CPU at that very call; elsewhere when the solver gives up).
    """
    del progress
    sde, callback = check_sde(sde), check_callback(callback)
    eps = check_eps(eps, sde.T)
    score = CountedScore(score_fn, finite="every")  # an ODE state is not checked per step: check each score
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    x = _flow(sde, score, x, sde.T, eps, method=method, rtol=rtol, atol=atol, steps=steps, callback=callback,
              caller="sample_ode")
    if denoise:
        x = tweedie_denoise(sde, score, x, batch_time(torch.as_tensor(eps, dtype=x.dtype, device=x.device), x))
    return SampleResult(x=x, nfe=score.nfe)


@torch.no_grad()
def encode(score_fn, sde, x: Tensor, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           steps: int | None = None, eps: float = 1e-3, callback=None) -> SampleResult:
    """Encode data into latents: integrate the probability-flow ODE forward from ``eps`` to T (the inverse
    of :func:`decode`; Song et al. 2021, Sec. 4.3). Returns ``SampleResult(x=z, nfe)``; ``x`` is taken as a
    sample of p_eps.
    """
    sde, callback = check_sde(sde), check_callback(callback)
    eps = check_eps(eps, sde.T)
    check_tensor("x", x, min_ndim=2)
    score = CountedScore(score_fn, finite="every")
    z = _flow(sde, score, x, eps, sde.T, method=method, rtol=rtol, atol=atol, steps=steps, callback=callback,
              caller="encode")
    return SampleResult(x=z, nfe=score.nfe)


def decode(score_fn, sde, z: Tensor, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           steps: int | None = None, eps: float = 1e-3, callback=None, denoise: bool = False) -> SampleResult:
    """Decode latents ``z`` (T) into samples (``eps``): :func:`sample_ode` from ``z``."""
    check_tensor("z", z, min_ndim=2)
    return sample_ode(score_fn, sde, z=z, method=method, rtol=rtol, atol=atol, steps=steps, eps=eps,
                      callback=callback, denoise=denoise)
