"""Plumbing shared by the samplers: argument checks, the counted score, NaN checks, Tweedie's formula.

NaN checks read tensor values, which forces a host synchronisation on a GPU. On CPU the state is checked
after every step; on other devices every :data:`CHECK_EVERY` steps and after the last one, and the error
names the window of steps in which the NaN appeared.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde._checks import CheckedScore, append_dims, check_generator, on_cpu
from scoresde.sde import SDE, ScoreFn

CHECK_EVERY = 64


class CountedScore(CheckedScore):
    """Wraps a ``score_fn`` for a sampler: counts its calls (``nfe``) and checks the shape of every result and
    the values of the first (the sampler checks its state for NaN after every step, see :func:`check_finite`).
    """

    def __init__(self, score_fn: ScoreFn, *, finite: str = "first"):
        super().__init__(score_fn, finite=finite)


def check_sde(sde) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an instance of scoresde.SDE, got {type(sde).__name__}")
    return sde


def check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints (B, ...), got {shape!r}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with at least 2 positive dims, got {shape}")
    return shape


def check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def initial_state(sde: SDE, shape, z: Tensor | None, *, generator, device, dtype) -> Tensor:
    """x_T: the given latent ``z`` (its device and dtype win) or a fresh draw from the prior."""
    check_generator(generator)
    if z is not None:
        if not isinstance(z, Tensor) or not z.is_floating_point() or z.ndim < 2:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a floating tensor of shape (B, ...), got {got}")
        if shape is not None and tuple(shape) != tuple(z.shape):
            raise ValueError(f"shape {tuple(shape)} does not match z's shape {tuple(z.shape)}")
        return z.clone()
    shape = check_shape(shape)
    return sde.prior_sample(shape, generator=generator, device=device, dtype=check_dtype(dtype))


def batch_time(t: Tensor, x: Tensor) -> Tensor:
    """A 0-dim time broadcast to the ``(B,)`` vector a ``score_fn`` expects."""
    return t.expand(x.shape[0])


def check_finite(x: Tensor, i: int, t: Tensor, last: bool) -> None:
    """Raise if the state holds NaN/inf after step ``i`` (every step on CPU, else every CHECK_EVERY)."""
    if not (on_cpu(x) or last or (i + 1) % CHECK_EVERY == 0):
        return
    if not torch.isfinite(x).all():
        first = i if on_cpu(x) else max(0, i + 1 - CHECK_EVERY)
        where = f"at step {i}" if first == i else f"between steps {first} and {i}"
        raise FloatingPointError(f"sampling produced NaN or inf {where} (t = {float(t):.6g}); "
                                 "check the score_fn, the step size or the snr")


def check_finite_denoised(x: Tensor, t: Tensor) -> None:
    """Raise if the final Tweedie denoising step returned NaN/inf (checked once, on every device)."""
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"sampling produced NaN or inf in the final denoising step (Tweedie's formula "
                                 f"at t = {float(t):.6g}); check the score_fn at the last time, or pass "
                                 "denoise=False")


def check_discretization(sde: SDE, grid: Tensor, x: Tensor) -> None:
    """Refuse, before sampling, a grid on which ``sde.discretize`` is not finite (the reverse-diffusion
    predictor inverts it). Probes every step at once on a (steps, 1, …) state of ones: no score call."""
    t, dt = grid[:-1], grid[:-1] - grid[1:]
    probe = x.new_ones((t.shape[0],) + (1,) * (x.ndim - 1))
    f, G = sde.discretize(probe, t, dt)
    bad = ~(torch.isfinite(f).reshape(t.shape[0], -1).all(1) & torch.isfinite(G))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"steps={t.shape[0]} is too few for the reverse_diffusion predictor with {sde!r}: its "
                         f"discretisation sde.discretize is not finite at step {i} (t = {float(t[i]):.6g}, "
                         f"dt = {float(dt[i]):.6g}); use more steps or another predictor")


def bind_step_kwargs(kind: str, name: str, step: Callable, kwargs: dict | None) -> Callable:
    """``step`` with the extra keywords ``kwargs`` bound, after checking them against its signature."""
    if kwargs is None:
        return step
    if not isinstance(kwargs, dict):
        raise TypeError(f"{kind}_kwargs must be a dict or None, got {type(kwargs).__name__}")
    allowed = {p.name for p in inspect.signature(step).parameters.values() if p.kind is p.KEYWORD_ONLY}
    allowed -= {"rsde", "generator"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"{kind}_kwargs has unknown keys {unknown} for the {kind} {name!r}; "
                         f"it accepts {sorted(allowed)}")
    return functools.partial(step, **kwargs)


def tweedie_denoise(sde: SDE, score_fn, x: Tensor, t: Tensor) -> Tensor:
    """E[x_0 | x_t] = (x_t + σ(t)² ∇ log p_t(x_t)) / α(t) (Tweedie's formula; Efron 2011)."""
    alpha, std = sde.marginal_coeffs(t)
    return (x + append_dims(std**2, x.ndim) * score_fn(x, t)) / append_dims(alpha, x.ndim)
