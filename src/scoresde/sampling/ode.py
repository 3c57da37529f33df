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
from scoresde.progress import NullBar, progress_bar
from scoresde.sampling._common import CountedScore, batch_time, check_finite, check_sde, initial_state, tweedie_denoise
from scoresde.sampling.result import SampleResult, SamplerStep, step_callback

__all__ = ["sample_ode", "encode", "decode"]


_BAR_UNITS = 1000  # the ODE bar shows the fraction of [eps, T] integrated, in thousandths


def _check_callback(callback, caller: str):
    return step_callback(callback, lambda s: (s.i, s.t, s.x, s.x), "(i, t, x, x)", caller)


def _flow(sde, score: CountedScore, x: Tensor, t0: float, t1: float, *, method, rtol, atol, steps, callback,
          caller: str, progress: bool = False):
    """Integrate the probability-flow ODE from t0 to t1 starting at x; returns the end state.

    ``callback`` (a function of one :class:`SamplerStep`) sees every right-hand-side evaluation; with
    ``progress`` a bar shows how much of the interval the solver has covered (an adaptive solver has no
    step count to show) and the evaluations so far.

    ``score`` checks every result's shape and, on CPU, its values; on other devices a NaN that makes the
    adaptive solver give up is reported by :func:`~scoresde._ode.integrate` with its time."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if method in FIXED and steps is None:
        raise ValueError(f"method {method!r} takes a fixed number of steps: pass steps=<int >= 1>, got None")
    ode = sde.reverse(score, probability_flow=True)
    calls = [0]
    bar = progress_bar(_BAR_UNITS, "probability-flow ODE", progress, bar_format="{l_bar}{bar}| {elapsed}{postfix}")
    showing = not isinstance(bar, NullBar)

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        tt = batch_time(t.to(y.dtype), y)
        dy = ode.drift(y, tt)
        if callback is not None:
            callback(SamplerStep(i=calls[0], t=tt, x=y, x_mean=y, nfe=score.nfe))
        calls[0] += 1
        if showing:
            done = min(_BAR_UNITS, max(0, int(_BAR_UNITS * abs(float(t) - t0) / abs(t1 - t0))))
            bar.set_postfix(t=f"{float(t):.4f}", nfe=score.nfe, refresh=False)
            bar.update(max(0, done - bar.n))
        return dy

    try:
        y, _ = integrate(rhs, x, t0, t1, method=method, rtol=rtol, atol=atol, steps=steps,
                         what=f"{caller}: the probability-flow drift (from score_fn)")
        bar.update(_BAR_UNITS - bar.n)  # the solve reached t1
    finally:
        bar.close()
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
    ``callback(step)`` receives a :class:`~scoresde.sampling.result.SamplerStep` at every ODE right-hand-side
    evaluation i (adaptive solvers also evaluate rejected trial steps; ``step.x_mean`` is ``step.x``; the old
    ``callback(i, t, x, x)`` still works, deprecated). ``progress`` shows a bar of the fraction of [eps, T]
    integrated so far (reading the time costs a host synchronisation per evaluation). Returns the samples and
    the exact number of score evaluations (+1 with ``denoise``, a final Tweedie step E[x_0 | x_eps]). A score
    that returns NaN/inf raises :class:`FloatingPointError` naming the time (on CPU at that very call;
    elsewhere when the solver gives up).
    """
    sde, callback = check_sde(sde), _check_callback(callback, "sample_ode")
    eps = check_eps(eps, sde.T)
    score = CountedScore(score_fn, finite="every")  # an ODE state is not checked per step: check each score
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    x = _flow(sde, score, x, sde.T, eps, method=method, rtol=rtol, atol=atol, steps=steps, callback=callback,
              caller="sample_ode", progress=progress)
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
    sde, callback = check_sde(sde), _check_callback(callback, "encode")
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
