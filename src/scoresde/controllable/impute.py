"""Conditional sampling by imputation: inpainting, colourisation, linear measurements (Song et al. 2021,
Sec. 5 and App. I), for any predictor, any corrector and any SDE.

Given a measurement y = A x_0 (:mod:`scoresde.controllable.measurement`), predictor–corrector sampling of
the unconditional reverse SDE is interleaved with imputation: after every predictor step and every corrector
step at time t, the measured part of the state is replaced by a fresh draw of A x_t given A x_0 = y,

    x ← x + Aᵀ (y_t − A x),    y_t = α(t) y + σ(t) A z,   z ~ N(0, I)

(for a mask: x ← mask · (α(t) y + σ(t) z) + (1 − mask) · x). The final denoised output is Tweedie's
E[x_0 | x_eps] in the unmeasured part and y exactly in the measured part. (score_sde_pytorch's inpainting
returns the last predictor's x_mean, whose known region was never reset to y, so its output keeps noise
that this sampler removes.)

Imputation steers the unmeasured part by p_t(x_t | A x_t = y_t), not p_t(x_t | A x_0 = y): when the modes
differ in the measured part, y_t is a noisier copy of y at the times the unmeasured part commits to a mode,
so the output's mode weights lie between the prior's and the exact ones (a light mode that y alone decides
loses about a third of its samples on a 2-D mixture; docs/controllable.md).
:func:`~scoresde.controllable.smc.sample_conditional_smc` corrects this with importance weights and is
asymptotically exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde._checks import append_dims
from scoresde.controllable.measurement import GreyMeasurement, LinearMeasurement, MaskMeasurement
from scoresde.sampling._common import (
    CountedScore,
    batch_time,
    check_discretization,
    check_finite_denoised,
    check_sde,
    tweedie_denoise,
)
from scoresde.sampling.grids import time_grid
from scoresde.sampling.loops import OLD_CALLBACK, old_callback_args, pc_steps, predictor_corrector
from scoresde.sampling.result import SampleResult, step_callback
from scoresde.sde import SDE

__all__ = ["sample_conditional", "inpaint", "colorize", "imputation"]


def _renoised(sde, op: LinearMeasurement, y: Tensor, t: Tensor, generator) -> Tensor:
    """y_t = α(t) y + σ(t) A z: a draw of A x_t given A x_0 = y under the forward SDE."""
    alpha, std = sde.marginal_coeffs(t)
    return append_dims(alpha, y.ndim) * y + append_dims(std, y.ndim) * op.noise_like(y, generator)


def imputation(sde: SDE, op: LinearMeasurement, y: Tensor, generator: torch.Generator | None
               ) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The projection hook of :func:`~scoresde.sampling.loops.predictor_corrector` that imputes the
    measurement: ``(x, x_mean, t) -> (x + Aᵀ(y_t − A x), x_mean + Aᵀ(y_t − A x_mean))`` with one fresh
    y_t = α(t) y + σ(t) A z for both."""

    def project(x: Tensor, x_mean: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        y_t = _renoised(sde, op, y, t, generator)
        return op.replace(x, y_t), op.replace(x_mean, y_t)

    return project


@torch.no_grad()
def sample_conditional(score_fn, sde, measurement: LinearMeasurement, y: Tensor, shape, *,
                       predictor: str = "reverse_diffusion", corrector: str = "langevin", snr: float = 0.16,
                       corrector_steps: int = 1, steps: int = 1000, eps: float = 1e-3,
                       generator: torch.Generator | None = None, callback=None, progress: bool = False,
                       denoise: bool = True) -> SampleResult:
    """Sample x_0 given y = A x_0 with an unconditional ``score_fn``, by predictor–corrector imputation:

        x ~ p_T;  x ← impute(x, T)
        for i = 0 … N−1:  x ← impute(predictor(x, t_i, t_{i+1}), t_{i+1})
                          repeat ``corrector_steps``: x ← impute(corrector(x, t_{i+1}), t_{i+1})
        if ``denoise``: x ← replace(E[x_0 | x_eps], y)     (Tweedie in the unmeasured part, y exactly)
        else:           x ← replace(x_mean, y)

    ``measurement`` is a :class:`~scoresde.controllable.measurement.LinearMeasurement`, ``y`` its value for
    each sample (shape ``measurement.y_shape(shape)``); the state has ``shape`` and y's device and dtype.
    Predictors, correctors, ``snr``, ``steps``, ``eps``, the time grid and ``callback(step)`` are those of
    :func:`scoresde.sampling.sample_pc`; this is its loop,
    :func:`~scoresde.sampling.loops.predictor_corrector`, with :func:`imputation` as the projection hook.
    Score evaluations as there.
    """
    predict, correct, n_correct = pc_steps(predictor, corrector, snr, corrector_steps)
    sde = check_sde(sde)
    callback = step_callback(callback, old_callback_args, OLD_CALLBACK, "sample_conditional")
    if not isinstance(measurement, LinearMeasurement):
        raise TypeError(f"measurement must be a LinearMeasurement (e.g. MaskMeasurement), got "
                        f"{type(measurement).__name__}")
    shape = tuple(int(s) for s in shape)
    y = measurement.check(y, shape)
    score = CountedScore(score_fn)
    x = sde.prior_sample(shape, generator=generator, device=y.device, dtype=y.dtype)
    grid = time_grid(sde, steps, eps, device=x.device, dtype=x.dtype)
    if predictor == "reverse_diffusion":
        check_discretization(sde, grid, x)
    project = imputation(sde, measurement, y, generator)
    x, _ = project(x, x, batch_time(grid[0], x))
    x, x_mean = predictor_corrector(score, sde, x, grid, predictor=predict, corrector=correct,
                                    corrector_steps=n_correct, generator=generator, project=project,
                                    callback=callback, progress=progress, desc="conditional sampling")
    if denoise:
        out = tweedie_denoise(sde, score, x, batch_time(grid[-1], x))
        check_finite_denoised(out, grid[-1])
    else:
        out = x_mean
    return SampleResult(x=measurement.replace(out, y), nfe=score.nfe)


def inpaint(score_fn, sde, x_known: Tensor, mask: Tensor, **kwargs) -> SampleResult:
    """Inpainting: sample the pixels where ``mask == 0`` given ``x_known`` where ``mask == 1``.

    ``x_known`` ``(B, ...)`` (values outside the mask are ignored); ``mask`` 0/1, one sample's shape or the
    batch's. Keyword arguments go to :func:`sample_conditional`. The known pixels of the result equal
    ``x_known`` exactly.
    """
    op = MaskMeasurement(mask)
    if not isinstance(x_known, Tensor) or x_known.ndim < 2:
        raise ValueError(f"x_known must be a tensor of shape (B, ...), got "
                         f"{tuple(x_known.shape) if isinstance(x_known, Tensor) else type(x_known).__name__}")
    return sample_conditional(score_fn, sde, op, op.measure(x_known), x_known.shape, **kwargs)


def colorize(score_fn, sde, grey: Tensor, *, channel_dim: int = 1, **kwargs) -> SampleResult:
    """Colourisation: sample 3-channel images whose channel mean equals ``grey`` ``(B, 1, ...)``
    (Song et al. 2021, App. I; see :class:`~scoresde.controllable.measurement.GreyMeasurement`).
    Keyword arguments go to :func:`sample_conditional`.
    """
    op = GreyMeasurement(channel_dim)
    if not isinstance(grey, Tensor) or grey.ndim <= channel_dim or grey.shape[channel_dim] != 1:
        got = tuple(grey.shape) if isinstance(grey, Tensor) else type(grey).__name__
        raise ValueError(f"grey must have one channel on axis {channel_dim}, e.g. (B, 1, H, W); got {got}")
    shape = list(grey.shape)
    shape[channel_dim] = 3
    return sample_conditional(score_fn, sde, op, op.from_grey(grey), shape, **kwargs)
