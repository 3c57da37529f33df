"""Stochastic sampling loops: predictor–corrector, Euler–Maruyama, ancestral and annealed Langevin.

Every sampler shares one signature, ``(score_fn, sde, shape, *, steps, eps, generator, device, dtype,
callback, progress, denoise, ...)``, runs under ``torch.no_grad``, and returns a
:class:`~scoresde.sampling.result.SampleResult` with the exact number of score evaluations.

``eps`` (the last time of the grid) defaults to 1e-3, the paper's value for VP and sub-VP; the paper uses
1e-5 for VE — pass ``eps=1e-5`` there (generic code does not look at an SDE's class to pick it).
"""

from __future__ import annotations

import torch

from scoresde._checks import check_choice, check_int, check_positive
from scoresde.sampling._common import (
    CountedScore,
    batch_time,
    bind_step_kwargs,
    check_callback,
    check_discretization,
    check_finite,
    check_finite_denoised,
    check_sde,
    initial_state,
    progress_bar,
    time_grid,
    tweedie_denoise,
)
from scoresde.sampling.result import SampleResult
from scoresde.sampling.steps import ANCESTRAL_VARIANCES, CORRECTORS, PREDICTORS

__all__ = ["sample_pc", "sample_euler_maruyama", "sample_ancestral", "sample_annealed_langevin"]


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
    ``"none"``); ``snr`` is the corrector's signal-to-noise ratio r. ``callback(i, t, x, x_mean)`` is called
    after every step i with the step's time t_{i+1} as a ``(B,)`` tensor. Noise comes from ``generator``,
    which must live on ``device``. ``predictor_kwargs`` are extra keywords of the predictor step, e.g.
    ``{"variance": "beta"}`` for ``"ancestral"`` (see :func:`~scoresde.sampling.steps.ancestral_variance`).
    Score evaluations: N (predictor, unless "none") + N·``corrector_steps`` (unless "none") + 1 with
    ``denoise``. A grid on which the predictor's discretisation is not finite is refused before sampling.
    """
    predict = PREDICTORS[check_choice("predictor", predictor, PREDICTORS)]
    predict = bind_step_kwargs("predictor", predictor, predict, predictor_kwargs)
    correct = CORRECTORS[check_choice("corrector", corrector, CORRECTORS)]
    snr = check_positive("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0 if corrector == "none" else 1)
    sde, callback = check_sde(sde), check_callback(callback)
    score = CountedScore(score_fn)
    rsde = sde.reverse(score)
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    grid = time_grid(sde, steps, eps, x)
    if predictor == "reverse_diffusion":
        check_discretization(sde, grid, x)
    x_mean = x
    for i in progress_bar(steps, progress, "PC sampling"):
        t, t_next = batch_time(grid[i], x), batch_time(grid[i + 1], x)
        x, x_mean = predict(x, t, t_next, rsde=rsde, generator=generator)
        if corrector != "none":
            for _ in range(corrector_steps):
                x, x_mean = correct(x, t_next, t, rsde=rsde, generator=generator, snr=snr)
        check_finite(x, i, grid[i + 1], last=i == steps - 1)
        if callback is not None:
            callback(i, t_next, x, x_mean)
    return _finish(sde, score, x, grid[-1], denoise)


def sample_euler_maruyama(score_fn, sde, shape, *, steps: int = 1000, eps: float = 1e-3,
                          generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                          callback=None, progress: bool = False, denoise: bool = True,
                          z: torch.Tensor | None = None) -> SampleResult:
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6); :func:`sample_pc` with the
    ``"euler_maruyama"`` predictor and no corrector. Score evaluations: ``steps`` (+1 with ``denoise``)."""
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
    ``callback(i, t, x, x_mean)`` is called after each of the L·T steps. Score evaluations: L·T (+1).
    """
    check_int("levels", levels)
    check_int("steps", steps)
    step_lr = check_positive("step_lr", step_lr)
    sde, callback = check_sde(sde), check_callback(callback)
    score = CountedScore(score_fn)
    x = initial_state(sde, shape, z, generator=generator, device=device, dtype=dtype)
    grid = time_grid(sde, levels - 1, eps, x) if levels > 1 else time_grid(sde, 1, eps, x)[1:]
    stds = sde.marginal_coeffs(grid)[1]
    alphas = step_lr * stds**2 / stds[-1] ** 2
    total = levels * steps
    for k in progress_bar(total, progress, "annealed Langevin"):
        level = k // steps
        t = batch_time(grid[level], x)
        x_mean = x + alphas[level] / 2 * score(x, t)
        x = x_mean + torch.sqrt(alphas[level]) * torch.randn(x.shape, generator=generator, device=x.device,
                                                             dtype=x.dtype)
        check_finite(x, k, grid[level], last=k == total - 1)
        if callback is not None:
            callback(k, t, x, x_mean)
    return _finish(sde, score, x, grid[-1], denoise)


def _finish(sde, score: CountedScore, x: torch.Tensor, t_last: torch.Tensor, denoise: bool) -> SampleResult:
    if denoise:
        x = tweedie_denoise(sde, score, x, batch_time(t_last, x))
        check_finite_denoised(x, t_last)
    return SampleResult(x=x, nfe=score.nfe)
