"""The typed result every sampler returns, and the one payload every sampler's callback receives."""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["SampleResult", "SamplerStep", "step_callback"]


@dataclass(frozen=True)
class SampleResult:
    """Samples and their cost.

    Attributes:
        x: the final samples ``(B, ...)`` (for :func:`~scoresde.sampling.encode`: the latents z).
        nfe: the number of calls to ``score_fn`` actually made (one call evaluates the whole batch).
    """

    x: Tensor
    nfe: int


@dataclass(frozen=True)
class SamplerStep:
    """What a sampler passes to ``callback(step)`` after each of its steps.

    Attributes:
        i: the step just taken, counting from 0 in the order the sampler runs (for the ODE samplers: the
            index of the right-hand-side evaluation; adaptive solvers also evaluate rejected trial steps).
        t: the time of the new state, a ``(B,)`` tensor (SDE time; for the discrete chain of
            :func:`~scoresde.discrete.sampling.sample_chain` the integer index of the new state x_t).
        x: the new state ``(B, ...)``.
        x_mean: the new state before the step's noise was added (``x`` itself for deterministic steps).
        nfe: the score (or network) evaluations made so far.
        extra: the sampler's own quantity, or None: DPM-Solver++ the denoised estimate x̂_0 of this step;
            SMC the log-weights ``(B, particles)``; the discrete chain the kernel's
            :class:`~scoresde.discrete.kernel.KernelOutput`.
    """

    i: int
    t: Tensor
    x: Tensor
    x_mean: Tensor
    nfe: int
    extra: Any = None


def _positional_arity(fn) -> tuple[int, int, bool] | None:
    """(required, maximum, takes *args) positional parameters of ``fn``; None where there is no signature."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in pos)
    return required, len(pos), any(p.kind is p.VAR_POSITIONAL for p in params)


_INTERNAL = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.join("torch", "utils"))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside scoresde (and torch's ``no_grad`` wrapper): the user's
    call, so that a deprecation warning names the line to change."""
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in os.path.abspath(frame.f_code.co_filename) for part in _INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def step_callback(callback: Callable | None, legacy: Callable[[SamplerStep], tuple], old_form: str, sampler: str
                  ) -> Callable[[SamplerStep], None] | None:
    """``callback`` as a function of one :class:`SamplerStep` (None stays None).

    A callable taking exactly one positional argument receives the step. A callable of the form used before
    0.2, ``old_form`` (e.g. ``"(i, t, x, x_mean)"``, the arguments ``legacy(step)`` returns), keeps working
    for one release with a :class:`DeprecationWarning` (decided once, from its signature); anything else is
    refused with a ``TypeError``.
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be None or a callable taking one SamplerStep, got "
                        f"{type(callback).__name__}")
    arity = _positional_arity(callback)
    if arity is None:  # no signature to read (some builtins): assume the current form
        return callback
    required, maximum, var = arity
    if not var and required <= 1 and maximum >= 1:
        return callback  # callback(step)
    n_old = len(old_form.strip("()").split(","))
    if required <= n_old and (maximum >= n_old or var):
        warnings.warn(f"{sampler}: callback{old_form} is deprecated and will stop working in the next release; "
                      "write callback(step) and read step.i, step.t, step.x, step.x_mean, step.nfe, step.extra "
                      "(scoresde.sampling.SamplerStep)", DeprecationWarning, stacklevel=_caller_level())
        return lambda step: callback(*legacy(step))
    raise TypeError(f"{sampler}: callback must take one argument, a scoresde.sampling.SamplerStep (or, deprecated, "
                    f"the old form {old_form}); got a callable with {required} required positional arguments")
