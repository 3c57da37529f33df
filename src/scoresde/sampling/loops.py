"""The predictor–corrector loop and the stochastic samplers that are fronts over it: predictor–corrector,
Euler–Maruyama, ancestral and annealed Langevin (and, in :mod:`scoresde.controllable.impute`, conditional
sampling by imputation).

:func:`predictor_corrector` is the one loop: over a time grid t_0 > t_1 > … > t_N it takes a predictor step
t_i → t_{i+1}, then ``corrector_steps`` corrector steps at t_{i+1}, calling an optional projection hook
after each of them (imputation re-imposes the measured coordinates there). Every front chooses its
steps, its grid (:func:`~scoresde.sampling.grids.time_grid`) and its last step (Tweedie's formula or not).

Every sampler shares one signature, ``(score_fn, sde, shape, *, steps, eps, generator, device, dtype,
callback, progress, denoise, ...)``, runs under ``torch.no_grad``, calls ``callback(step)`` with a
:class:`~scoresde.sampling.result.SamplerStep` after every step, shows a progress bar with ``progress=True``
(:mod:`scoresde.progress`), and returns a :class:`~scoresde.sampling.result.SampleResult` with the exact
number of score evaluations.

``eps`` (the last time of the grid) defaults to 1e-3, the paper's value for VP and sub-VP; the paper uses
1e-5 for VE — pass ``eps=1e-5`` there (generic code does not look at an SDE's class to pick it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from scoresde._checks import check_choice, check_int, check_positive
from scoresde.progress import progress_bar
from scoresde.sampling._common import (
    CountedScore,
    batch_time,
    bind_step_kwargs,
    check_discretization,
    check_finite,
    check_finite_denoised,
    check_sde,
    initial_state,
    tweedie_denoise,
)
from scoresde.sampling.grids import time_grid
from scoresde.sampling.result import SampleResult, SamplerStep, step_callback
from scoresde.sampling.steps import ANCESTRAL_VARIANCES, CORRECTORS, PREDICTORS, annealed_langevin, no_predictor
from scoresde.sde import SDE, ScoreFn

__all__ = ["predictor_corrector", "sample_pc", "sample_euler_maruyama", "sample_ancestral",
           "sample_annealed_langevin"]

#: The old callback form of these samplers, accepted for one release (see :func:`step_callback`).
OLD_CALLBACK = "(i, t, x, x_mean)"


def old_callback_args(step: SamplerStep) -> tuple:
    """The arguments ``(i, t, x, x_mean)`` of the old callback form, read from a :class:`SamplerStep`."""
    return step.i, step.t, step.x, step.x_mean


def predictor_corrector(score_fn: ScoreFn, sde: SDE, x: Tensor, ts: Tensor, *, predictor: Callable = no_predictor,
                        corrector: Callable | None = None, corrector_steps: int = 0,
                        generator: torch.Generator | None = None, project: Callable | None = None,
                        callback: Callable[[SamplerStep], None] | None = None, progress: bool = False,
                        desc: str = "PC sampling") -> tuple[Tensor, Tensor]:
    """The predictor–corrector loop (Song et al. 2021, Algorithm 1) from the state ``x`` at ``ts[0]``:

        for i = 0 … N−1  (N = len(ts) − 1):
            x, x_mean = predictor(x, t_i, t_{i+1});                        x, x_mean = project(x, x_mean, t_{i+1})
            repeat ``corrector_steps``: x, x_mean = corrector(x, t_{i+1}, t_i);  x, x_mean = project(...)
            callback(SamplerStep(i, t_{i+1}, x, x_mean, nfe))

    ``predictor`` and ``corrector`` are steps of :mod:`scoresde.sampling.steps` (``(x, t, t_next, *, rsde,
    generator) -> (x, x_mean)``, their own keywords already bound); the corrector receives the grid neighbour
    t_i as its second time (its α_i). ``project`` (optional) is called after every step with the step's
    time as a ``(B,)`` tensor. ``ts`` need not be strictly decreasing: annealed Langevin repeats each level's
    time. ``score_fn`` should be a :class:`~scoresde.sampling._common.CountedScore` (a plain one is wrapped)
    so that the caller can read its ``nfe``. The state is checked for NaN/inf after every step (see
    :func:`~scoresde.sampling._common.check_finite`). Returns the final ``(x, x_mean)``.
    """
    check_int("corrector_steps", corrector_steps, minimum=0)
    if corrector_steps and corrector is None:
        raise ValueError(f"corrector_steps={corrector_steps} needs a corrector step; got corrector=None")
    score = score_fn if isinstance(score_fn, CountedScore) else CountedScore(score_fn)
    rsde = sde.reverse(score)
    steps = ts.shape[0] - 1
    x_mean = x
    bar = progress_bar(steps, desc, progress)
    try:
        for i in range(steps):
            t, t_next = batch_time(ts[i], x), batch_time(ts[i + 1], x)
            x, x_mean = predictor(x, t, t_next, rsde=rsde, generator=generator)
            if project is not None:
                x, x_mean = project(x, x_mean, t_next)
            for _ in range(corrector_steps):
                x, x_mean = corrector(x, t_next, t, rsde=rsde, generator=generator)
                if project is not None:
                    x, x_mean = project(x, x_mean, t_next)
            check_finite(x, i, ts[i + 1], last=i == steps - 1)
            if callback is not None:
                callback(SamplerStep(i=i, t=t_next, x=x, x_mean=x_mean, nfe=score.nfe))
            bar.update(1)
    finally:
        bar.close()
    return x, x_mean


def pc_steps(predictor: str, corrector: str, snr: float, corrector_steps: int,
             predictor_kwargs: dict | None = None) -> tuple[Callable, Callable, int]:
    """The checked (predictor step, corrector step with ``snr`` bound, number of corrector steps) of
    :func:`sample_pc` and :func:`~scoresde.controllable.sample_conditional`."""
    predict = PREDICTORS[check_choice("predictor", predictor, PREDICTORS)]
    predict = bind_step_kwargs("predictor", predictor, predict, predictor_kwargs)
    correct = CORRECTORS[check_choice("corrector", corrector, CORRECTORS)]
    snr = check_positive("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0 if corrector == "none" else 1)
    return predict, bind_step_kwargs("corrector", corrector, correct, {"snr": snr}), \
        (0 if corrector == "none" else corrector_steps)


@torch.no_grad()
def sample_pc(score_fn, sde, shape, *, predictor: str = "reverse_diffusion", corrector: str = "langevin",
              snr: float = 0.16, corrector_steps: int = 1, steps: int = 1000, eps: float = 1e-3,
              generator: torch.Generator | None = None, device=None, dtype=torch.float32, callback=None,
              progress: bool = False, denoise: bool = True, z: torch.Tensor | None = None,
              predictor_kwargs: dict | None = None) -> SampleResult:
    """Predictor–corrector sampling (Song et al. 2021, Algorithm 1), in the paper's order:

        x ~ p_T  (or the given ``z``);  t_0 = T > t_1 > … > t_N = eps uniform, N = ``steps``
        for i = 0 … N−1:
            x, x_mean = predictor(x, t_i, t_{i+1})                    # one reverse-time step
            repeat ``corrector_steps`` times: x, x_mean = corrector(x, t_{i+1})   # MCMC at t_{i+1}
        if ``denoise``: x = E[x_0 | x_eps] = (x + σ(eps)² ∇ log p_eps(x)) / α(eps)   (Tweedie)

    (The official code runs the corrector before the predictor and ends with the predictor's x_mean.)
    ``predictor`` is one of :data:`PREDICTORS` and ``corrector`` one of :data:`CORRECTORS` (each may be
    ``"none"``); ``snr`` is the corrector's signal-to-noise ratio r. ``callback(step)`` receives a
    :class:`~scoresde.sampling.result.SamplerStep` after every step i, with the step's time t_{i+1} as a
    ``(B,)`` tensor (the old ``callback(i, t, x, x_mean)`` still works, deprecated). Noise comes from ``generator``,
    which must live on ``device``. ``predictor_kwargs`` are extra keywords of the predictor step, e.g.
    ``{"variance": "beta"}`` for ``"ancestral"`` (see :func:`~scoresde.sampling.steps.ancestral_variance`).
    Score evaluations: N (predictor, unless "none") + N·``corrector_steps`` (unless "none") + 1 with
    ``denoise``. A grid on which the predictor's discretisation is not finite is refused before sampling.
    """
    predict, correct, n_correct = pc_steps(predictor, corrector, snr, corrector_steps, predictor_kwargs)
    sde = check_sde(sde)
    callback = step_callback(callback, old_callback_args, OLD_CALLBACK, "sample_pc")
    score = CountedScore(score_fn)
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    grid = time_grid(sde, steps, eps, device=x.device, dtype=x.dtype)
    if predictor == "reverse_diffusion":
        check_discretization(sde, grid, x)
    x, _ = predictor_corrector(score, sde, x, grid, predictor=predict, corrector=correct, corrector_steps=n_correct,
                               generator=generator, callback=callback, progress=progress, desc="PC sampling")
    return _finish(sde, score, x, grid[-1], denoise)


def sample_euler_maruyama(score_fn, sde, shape, *, steps: int = 1000, eps: float = 1e-3,
                          generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                          callback=None, progress: bool = False, denoise: bool = True,
                          z: torch.Tensor | None = None) -> SampleResult:
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6); :func:`sample_pc` with the
    ``"euler_maruyama"`` predictor and no corrector. Score evaluations: ``steps`` (+1 with ``denoise``)."""
    callback = step_callback(callback, old_callback_args, OLD_CALLBACK, "sample_euler_maruyama")
    return sample_pc(score_fn, sde, shape, predictor="euler_maruyama", corrector="none", steps=steps, eps=eps,
                     generator=generator, device=device, dtype=dtype, callback=callback, progress=progress,
                     denoise=denoise, z=z)


def sample_ancestral(score_fn, sde, shape, *, steps: int = 1000, eps: float = 1e-3,
                     generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                     callback=None, progress: bool = False, denoise: bool = True,
                     z: torch.Tensor | None = None, variance: str = "analytic") -> SampleResult:
    """Ancestral sampling (DDPM for VP, SMLD's ancestral sampler for VE, the same exact-transition
    construction for any SDE; see :func:`~scoresde.sampling.steps.ancestral`); :func:`sample_pc` with the
    ``"ancestral"`` predictor and no corrector. ``variance`` is the noise variance of each step, one of
    ``"analytic"`` (Bao et al. 2022; default, the most accurate on the oracle: docs/benchmarks.md),
    ``"beta"`` (Song et al. 2021 eq. 47, DDPM's σ² = β) or ``"beta_tilde"`` (DDPM's posterior β̃); see
    :func:`~scoresde.sampling.steps.ancestral_variance`. Score evaluations: ``steps`` (+1 with ``denoise``)."""
    check_choice("variance", variance, ANCESTRAL_VARIANCES)
    callback = step_callback(callback, old_callback_args, OLD_CALLBACK, "sample_ancestral")
    return sample_pc(score_fn, sde, shape, predictor="ancestral", corrector="none", steps=steps, eps=eps,
                     generator=generator, device=device, dtype=dtype, callback=callback, progress=progress,
                     denoise=denoise, z=z, predictor_kwargs={"variance": variance})


@torch.no_grad()
def sample_annealed_langevin(score_fn, sde, shape, *, levels: int = 10, steps: int = 100, step_lr: float = 2e-5,
                             eps: float = 1e-3, generator: torch.Generator | None = None, device=None,
                             dtype=torch.float32, callback=None, progress: bool = False, denoise: bool = False,
                             z: torch.Tensor | None = None) -> SampleResult:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): L = ``levels`` noise levels, T = ``steps``
    Langevin steps at each,

        σ_i = σ(t_i), t_1 = T > … > t_L = eps uniform (a geometric ladder for VE),  α_i = ε σ_i² / σ_L²
        x ← x + (α_i / 2) ∇ log p_{t_i}(x) + sqrt(α_i) z,

    with ε = ``step_lr`` and σ(t) the std of ``sde.marginal_coeffs``. Defaults are NCSN's (L = 10, T = 100,
    ε = 2e-5, tuned for σ_L ≈ 0.01: scale ``step_lr`` with σ_L²); ``VESDE(sigma_min=0.01, sigma_max=1)``
    with ``eps`` ≈ 0 gives NCSN's ladder 1 … 0.01. ``levels=1`` is plain Langevin dynamics at σ(eps).
    NCSN returns the last iterate (``denoise=False``); with ``denoise`` a Tweedie step follows.
    This is :func:`predictor_corrector` with no predictor and the ``"ald"`` corrector in NCSN's step form
    (:func:`~scoresde.sampling.steps.annealed_langevin` with ``step_lr`` and σ_L) on the ladder with each
    level's time repeated T times, so ``callback(step)`` is called after each of the L·T Langevin steps
    and the progress bar counts them. Score evaluations: L·T (+1 with ``denoise``).
    """
    check_int("levels", levels)
    check_int("steps", steps)
    step_lr = check_positive("step_lr", step_lr)
    sde = check_sde(sde)
    callback = step_callback(callback, old_callback_args, OLD_CALLBACK, "sample_annealed_langevin")
    score = CountedScore(score_fn)
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    ladder = time_grid(sde, max(levels - 1, 1), eps, device=x.device, dtype=x.dtype)
    ladder = ladder if levels > 1 else ladder[1:]  # one level: σ(eps) alone
    sigma_last = sde.marginal_coeffs(ladder)[1][-1]
    ts = torch.cat([ladder[:1], ladder.repeat_interleave(steps)])  # ts[0] only starts the "none" predictor
    correct = functools.partial(annealed_langevin, step_lr=step_lr, sigma_last=sigma_last)
    x, _ = predictor_corrector(score, sde, x, ts, corrector=correct, corrector_steps=1, generator=generator,
                               callback=callback, progress=progress, desc="annealed Langevin")
    return _finish(sde, score, x, ladder[-1], denoise)


def _finish(sde, score: CountedScore, x: torch.Tensor, t_last: torch.Tensor, denoise: bool) -> SampleResult:
    if denoise:
        x = tweedie_denoise(sde, score, x, batch_time(t_last, x))
        check_finite_denoised(x, t_last)
    return SampleResult(x=x, nfe=score.nfe)
