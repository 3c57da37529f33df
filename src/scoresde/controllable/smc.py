"""Asymptotically exact conditional sampling: imputation corrected by sequential Monte Carlo (particles).

Imputation (:mod:`scoresde.controllable.impute`) moves the unmeasured part with the score of p_t(x_t) at a
re-noised measurement y_t, i.e. towards p_t(x_t | A x_t = y_t), which is not p_t(x_t | A x_0 = y): y_t
carries less information about the mode than y, so the trajectory can commit to a mode that y rules out.
This sampler removes that bias with importance weights (SMCDiff, Trippe et al. 2022, Alg. 1, written here
for any SDE and any measurement with orthonormal rows):

1. A forward path of the measurement, y_{t_N} … y_{t_0}, is drawn from the forward process started at
   A x_0 = y, backwards in time through its exact bridge (DDPM's posterior q(y_s | y_t, y_0), Ho et al.
   2020, eq. 7, in the generic form of :meth:`~scoresde.sde.SDE.transition_coeffs`):

       y_s | y_t, y ~ N((v α(s) y + a σ(s)² y_t) / σ(t)²,  v σ(s)² / σ(t)²),   (a, v): x_t | x_s ~ N(a x_s, v).

   Because the forward process acts on each coordinate independently, this path is exactly the measured
   part of a forward trajectory x_{0:T} with A x_0 = y, whatever the unmeasured part.
2. ``particles`` copies of the state per sample follow the reverse transition of the whole state,

       x_s = μ(x_t) + √v z,   μ(x_t) = (x_t + v ∇ log p_t(x_t)) / a     (the exact transition's reverse,
                                                                        Song et al. 2021, eq. 47),

   whose measured part is then replaced by y_s. Each particle is weighted by the probability that the
   reverse transition gives the path's next measured value, w ← w · N(y_s; A μ(x_t), v I), and the
   particles of a sample are resampled (systematic resampling) when their effective sample size falls
   below ``ess_threshold · particles`` (Doucet & Johansen 2009).
3. One particle per sample is drawn by its final weight; the output is Tweedie's E[x_0 | x_eps] in the
   unmeasured part and y exactly in the measured part (as :func:`~scoresde.controllable.sample_conditional`).

Why this is exact: the particles at time t target p(x^u_t | y_t, …, y_T) (x^u the unmeasured part), which
is p_t(x^u_t | A x_t = y_t) because the forward process is Markov and acts on each coordinate alone. The
weight N(y_s; A μ(x_t), v I) is the factor p(y_s | x_t) that imputation leaves out of its proposal
p(x^u_s | x_t): resampling by it moves mass between modes as y_t sharpens towards y — which no step of
imputation can do once the modes have separated — and at t = eps the target is p_eps(x^u | y_eps), the exact
conditional as eps → 0. With the exact score and steps → ∞ the selected particle is an exact conditional
sample as ``particles`` → ∞ (the bias is O(1/particles)). ``particles=1`` is imputation along a consistent
forward path, with the same bias as the paper's method.

This sampler keeps its own loop rather than running as a front of
:func:`~scoresde.sampling.loops.predictor_corrector`: its step is not a predictor followed by a projection of
the state, but a reverse transition whose mean is reweighted against a measurement path drawn in advance,
with the batch re-indexed by resampling between the mean and the noise — a carried weight state and an
ancestor gather in the middle of the step, which the loop's ``(x, x_mean) -> (x, x_mean)`` hook cannot express.
It shares the loop's time grid, NaN check, callback payload and progress bar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_int
from scoresde.controllable.measurement import LinearMeasurement, MaskMeasurement
from scoresde.progress import progress_bar
from scoresde.sampling._common import CountedScore, batch_time, check_finite, check_sde, tweedie_denoise
from scoresde.sampling.grids import time_grid
from scoresde.sampling.result import SampleResult, SamplerStep, step_callback

__all__ = ["sample_conditional_smc", "inpaint_smc", "effective_sample_size"]


def _bridge_step(sde, op: LinearMeasurement, y: Tensor, y_t: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    """A draw of y_s from the forward process's bridge q(y_s | y_t, y_0 = y), s < t (DDPM's posterior)."""
    a, v = sde.transition_coeffs(t, s)
    alpha_s, std_s = sde.marginal_coeffs(s)
    var_t = v + a**2 * std_s**2  # σ(t)², from the same coefficients so that the two terms stay consistent
    mean = (append_dims(v * alpha_s / var_t, y.ndim) * y + append_dims(a * std_s**2 / var_t, y.ndim) * y_t)
    return mean + append_dims(torch.sqrt(v / var_t) * std_s, y.ndim) * op.noise_like(y, generator)


def _prior_measurement(sde, op, y, t, generator) -> Tensor:
    """y_T ~ N(α(T) y, σ(T)²): the measured part of x_T given A x_0 = y."""
    alpha, std = sde.marginal_coeffs(t)
    return append_dims(alpha, y.ndim) * y + append_dims(std, y.ndim) * op.noise_like(y, generator)


def _systematic_indices(log_w: Tensor, generator) -> Tensor:
    """Systematic resampling of each row of ``log_w`` ``(B, P)``: ancestor indices ``(B, P)``."""
    B, P = log_w.shape
    cdf = torch.softmax(log_w, dim=1).cumsum(1)
    u = torch.rand(B, 1, generator=generator, device=log_w.device, dtype=log_w.dtype)
    positions = (u + torch.arange(P, device=log_w.device, dtype=log_w.dtype)) / P
    return torch.searchsorted(cdf.contiguous(), positions.contiguous()).clamp_max(P - 1)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """ESS = 1 / Σ_p w_p² of each row of normalised weights, ``(B, P) -> (B,)``."""
    return 1.0 / torch.softmax(log_w, dim=1).pow(2).sum(1)


def _check_unit_interval(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@torch.no_grad()
def sample_conditional_smc(score_fn, sde, measurement: LinearMeasurement, y: Tensor, shape, *,
                           particles: int = 16, ess_threshold: float = 0.5, steps: int = 1000, eps: float = 1e-3,
                           generator: torch.Generator | None = None, callback=None, progress: bool = False,
                           denoise: bool = True) -> SampleResult:
    """Sample x_0 given y = A x_0 with an unconditional ``score_fn`` by imputation with a particle (SMC)
    correction — asymptotically exact (see the module docstring for the algorithm and its equations).

    Arguments as :func:`~scoresde.controllable.sample_conditional`, plus ``particles`` per sample (each
    score call evaluates ``shape[0] · particles`` states) and ``ess_threshold``: resample a sample's
    particles when their effective sample size is below ``ess_threshold · particles`` (0: never, 1: every
    step). With ``denoise=False`` the unmeasured part of the output is the last step's mean (before its
    noise), as in :func:`~scoresde.controllable.sample_conditional`. ``callback(step)`` receives a
    :class:`~scoresde.sampling.result.SamplerStep` whose ``x`` and ``x_mean`` hold all particles
    ``(B · particles, ...)`` (those of sample b are rows b·P … b·P + P − 1), ``t`` their time ``(B · P,)``
    and ``extra`` their log-weights ``(B, P)`` (the old ``callback(i, t_next, x, log_w)``, with a 0-dim
    ``t_next``, still works, deprecated). ``nfe`` counts score calls: ``steps`` on the particles, plus one on the
    selected samples if ``denoise``.
    """
    particles = check_int("particles", particles, minimum=1)
    ess_threshold = _check_unit_interval("ess_threshold", ess_threshold)
    sde = check_sde(sde)
    callback = step_callback(callback, lambda s: (s.i, s.t[0], s.x, s.extra), "(i, t_next, x, log_w)",
                             "sample_conditional_smc")
    if not isinstance(measurement, LinearMeasurement):
        raise TypeError(f"measurement must be a LinearMeasurement (e.g. MaskMeasurement), got "
                        f"{type(measurement).__name__}")
    shape = tuple(int(s) for s in shape)
    y = measurement.check(y, shape)
    B, P = shape[0], particles
    op = measurement.repeat_interleave(P, shape)  # the measurement of the (B·P, ...) particle batch
    score = CountedScore(score_fn)
    x = sde.prior_sample((B * P, *shape[1:]), generator=generator, device=y.device, dtype=y.dtype)
    grid = time_grid(sde, steps, eps, device=x.device, dtype=x.dtype)
    y_t = _prior_measurement(sde, measurement, y, batch_time(grid[0], y), generator)
    x = op.replace(x, y_t.repeat_interleave(P, 0))
    x_mean = x
    log_w = torch.zeros(B, P, device=x.device, dtype=x.dtype)
    rows = (torch.arange(B, device=x.device) * P)[:, None]
    keep = torch.arange(P, device=x.device).expand(B, P)
    bar = progress_bar(steps, "conditional sampling (SMC)", progress)
    for i in range(steps):
        t, s = batch_time(grid[i], x), batch_time(grid[i + 1], x)
        a, v = sde.transition_coeffs(t, s)
        x_mean = (x + append_dims(v, x.ndim) * score(x, t)) / append_dims(a, x.ndim)
        y_s = _bridge_step(sde, measurement, y, y_t, t[:B], s[:B], generator)
        resid = (op.measure(x_mean) - y_s.repeat_interleave(P, 0)).reshape(B, P, -1)
        log_w = log_w - 0.5 * resid.pow(2).sum(-1) / v[:B, None]
        log_w = log_w - log_w.max(1, keepdim=True).values  # max-normalised, so float32 log-weights stay small
        # resample the samples whose ESS is low; always gathering avoids a host synchronisation per step
        resample = (effective_sample_size(log_w) < ess_threshold * P)[:, None]
        idx = torch.where(resample, _systematic_indices(log_w, generator), keep)
        x_mean = x_mean[(rows + idx).reshape(-1)]
        log_w = torch.where(resample, torch.zeros_like(log_w), log_w)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = op.replace(x_mean + append_dims(v.sqrt(), x.ndim) * noise, y_s.repeat_interleave(P, 0))
        y_t = y_s
        check_finite(x, i, grid[i + 1], last=i == steps - 1)
        if callback is not None:
            callback(SamplerStep(i=i, t=s, x=x, x_mean=x_mean, nfe=score.nfe, extra=log_w))
        bar.update(1)
    bar.close()
    pick = (rows + torch.multinomial(torch.softmax(log_w, dim=1), 1, generator=generator)).reshape(-1)
    x, x_mean = x[pick], x_mean[pick]
    out = tweedie_denoise(sde, score, x, batch_time(grid[-1], x)) if denoise else x_mean
    return SampleResult(x=measurement.replace(out, y), nfe=score.nfe)


def inpaint_smc(score_fn, sde, x_known: Tensor, mask: Tensor, **kwargs) -> SampleResult:
    """Inpainting by :func:`sample_conditional_smc`: sample the pixels where ``mask == 0`` given
    ``x_known`` where ``mask == 1`` (arguments as :func:`~scoresde.controllable.inpaint`). The known pixels
    of the result equal ``x_known`` exactly."""
    op = MaskMeasurement(mask)
    if not isinstance(x_known, Tensor) or x_known.ndim < 2:
        raise ValueError(f"x_known must be a tensor of shape (B, ...), got "
                         f"{tuple(x_known.shape) if isinstance(x_known, Tensor) else type(x_known).__name__}")
    return sample_conditional_smc(score_fn, sde, op, op.measure(x_known), x_known.shape, **kwargs)
