"""From a config to objects: the SDE, the score model, the loss and the sampler a run uses.

Each builder reads one config section and makes plain keyword calls into the library; nothing below them
sees a config. :func:`build_training` is the trainer's one call into this module: the SDE, the model and the
loss of a run, each given by the user or built from its section. The SDE comes from the one name → SDE
table, :data:`scoresde.sde.SDES`; the samplers from :data:`SAMPLERS`. (Test-set evaluation from ``cfg.eval``:
:mod:`scoresde.evaluation`.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn

from scoresde import config as C
from scoresde import losses  # the public names (they survive a move of their modules)
from scoresde import sampling as S
from scoresde._ode import FIXED
from scoresde.nn.presets import build_network
from scoresde.score import ScoreModel
from scoresde.sde import SDE, SDES
from scoresde.seeding import seeded_init
from scoresde.serialize import describe_sde

__all__ = ["build_sde", "build_model", "build_loss", "build_training", "SAMPLERS", "draw_samples",
           "sampler_evaluations", "describe_sampler"]


# --------------------------------------------------------------------------------------------- SDE, model, loss
def build_sde(cfg: C.SDEConfig):
    """The SDE named by ``cfg.name`` in :data:`scoresde.sde.SDES`, given the fields of ``cfg`` its constructor
    takes (vp / subvp: beta_min, beta_max; ve: sigma_min, sigma_max)."""
    if cfg.name not in SDES:
        raise C.ConfigError(f"unknown sde.name {cfg.name!r}; choose one of {sorted(SDES)}")
    cls = SDES[cfg.name]
    params = {k: getattr(cfg, k) for k in inspect.signature(cls).parameters if hasattr(cfg, k)}
    return cls(**params)


def build_model(cfg: C.ModelConfig, sde, data_shape: tuple) -> nn.Module:
    """Network preset ``cfg.network`` (with ``cfg.options``) wrapped into a score model ``forward(x, t)``.

    The MLP preset gets ``dim`` from the data shape unless the options name it.
    """
    options = dict(cfg.options)
    if cfg.network == "mlp":
        options.setdefault("dim", int(torch.Size(data_shape).numel()))
    try:
        net = build_network(cfg.network, **options)
    except ValueError as err:
        raise C.ConfigError(f"model.network={cfg.network!r}: {err}") from err
    return ScoreModel(net, sde, parameterization=cfg.parameterization, noise_cond=cfg.noise_cond,
                      discrete_steps=cfg.discrete_steps or None)


def build_loss(cfg: C.LossConfig):
    """``loss_fn(score_fn, sde, x0, generator) -> (B,)`` for the loss named by ``cfg``."""
    table = {
        "dsm": functools.partial(losses.dsm_loss, weighting=cfg.weighting,
                                 importance_sampling=cfg.importance_sampling, eps=cfg.eps),
        "ssm": functools.partial(losses.ssm_loss, weighting=cfg.weighting, eps=cfg.eps),
        "smld": functools.partial(losses.smld_loss, num_scales=cfg.num_scales, eps=cfg.eps),
        "ddpm": functools.partial(losses.ddpm_loss, num_steps=cfg.num_steps),
    }
    if cfg.name not in table:
        raise C.ConfigError(f"unknown loss.name {cfg.name!r}; choose one of {sorted(table)}")
    fn = table[cfg.name]

    def loss_fn(score_fn, sde, x0, generator):
        return fn(score_fn, sde, x0, generator=generator)

    return loss_fn


def build_training(cfg: C.Config, data_shape: tuple, *, sde: SDE | None = None,
                   model: nn.Module | None = None) -> tuple[SDE, nn.Module, Callable]:
    """``(sde, model, loss_fn)`` of a training run: the objects given, and the rest built from ``cfg``.

    ``sde``: the user's instance of an :class:`~scoresde.sde.SDE` subclass, else :func:`build_sde` of
    ``cfg.sde``. ``model``: the user's ``nn.Module`` (a :class:`~scoresde.score.ScoreModel` must be built on
    that SDE), else :func:`build_model` of ``cfg.model`` with its initial weights drawn from
    ``cfg.training.seed`` (:func:`~scoresde.seeding.seeded_init`; the caller's random state is untouched).
    ``loss_fn``: :func:`build_loss` of ``cfg.loss``.
    """
    if sde is None:
        sde = build_sde(cfg.sde)
    elif not isinstance(sde, SDE):
        raise TypeError(f"train: sde must be an instance of a scoresde.SDE subclass, got {type(sde).__name__}")
    if model is None:
        with seeded_init(cfg.training.seed):
            model = build_model(cfg.model, sde, data_shape)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"train: model must be a torch.nn.Module whose forward(x, t) returns the score, got "
                        f"{type(model).__name__}")
    elif isinstance(model, ScoreModel) and model.sde is not sde and describe_sde(model.sde) != describe_sde(sde):
        raise ValueError(f"train: model is a ScoreModel on {describe_sde(model.sde)} but training uses "
                         f"{describe_sde(sde)}; build it on the training SDE (ScoreModel(net, sde)) and pass sde=")
    return sde, model, build_loss(cfg.loss)


# --------------------------------------------------------------------------------------------- samplers
def _pc(score_fn, sde, shape, cfg, **common):
    # sampling.variance is the ancestral predictor's keyword; the other predictors take none
    kwargs = {"variance": cfg.variance} if cfg.predictor == "ancestral" else None
    return S.sample_pc(score_fn, sde, shape, steps=cfg.steps, predictor=cfg.predictor, corrector=cfg.corrector,
                       snr=cfg.snr, corrector_steps=cfg.corrector_steps, predictor_kwargs=kwargs, **common)


def _euler_maruyama(score_fn, sde, shape, cfg, **common):
    return S.sample_euler_maruyama(score_fn, sde, shape, steps=cfg.steps, **common)


def _ancestral(score_fn, sde, shape, cfg, **common):
    return S.sample_ancestral(score_fn, sde, shape, steps=cfg.steps, variance=cfg.variance, **common)


def _annealed_langevin(score_fn, sde, shape, cfg, **common):
    return S.sample_annealed_langevin(score_fn, sde, shape, levels=cfg.levels, steps=cfg.steps, step_lr=cfg.step_lr,
                                      **common)


def _dpm_solver(score_fn, sde, shape, cfg, **common):
    return S.sample_dpm_solver(score_fn, sde, shape, steps=cfg.steps, order=cfg.order, grid=cfg.grid, **common)


def _ode(score_fn, sde, shape, cfg, **common):
    fixed = cfg.solver in FIXED
    return S.sample_ode(score_fn, sde, shape, method=cfg.solver, rtol=cfg.rtol, atol=cfg.atol,
                        steps=cfg.steps if fixed else None, **common)


#: ``sampling.method`` → sampler; each reads its own fields of :class:`~scoresde.config.SamplingConfig`.
SAMPLERS = {
    "pc": _pc,  # Song et al. 2021, Algorithm 1
    "euler_maruyama": _euler_maruyama,  # reverse SDE, Song et al. 2021, eq. 6
    "ancestral": _ancestral,  # DDPM / SMLD ancestral sampling
    "annealed_langevin": _annealed_langevin,  # NCSN, Song & Ermon 2019, Algorithm 1: L levels × T steps
    "dpm_solver": _dpm_solver,  # DPM-Solver++ multistep, Lu et al. 2022b
    "ode": _ode,  # probability-flow ODE, Song et al. 2021, eq. 13
}


def draw_samples(score_fn, sde, cfg: C.SamplingConfig, shape: tuple, *, generator, device, progress: bool = False):
    """``SampleResult`` of the sampler ``cfg.method`` (one of :data:`SAMPLERS`) with the fields of ``cfg``.

    ``progress`` shows a bar on stderr: steps for the step-based samplers, the time reached for an adaptive ODE.
    """
    if cfg.method not in SAMPLERS:
        raise C.ConfigError(f"unknown sampling.method {cfg.method!r}; choose one of {sorted(SAMPLERS)}")
    with torch.no_grad():
        return SAMPLERS[cfg.method](score_fn, sde, shape, cfg, eps=cfg.eps, generator=generator, device=device,
                                    progress=progress)


def sampler_evaluations(cfg: C.SamplingConfig) -> int | None:
    """Score evaluations the sampler of ``cfg`` makes (None for the ODE: its solver decides)."""
    m = cfg.method
    if m == "pc":
        per_step = (cfg.predictor != "none") + (cfg.corrector != "none") * cfg.corrector_steps
        return cfg.steps * per_step + 1  # + 1: the final Tweedie denoising step
    if m in ("euler_maruyama", "ancestral"):
        return cfg.steps + 1
    if m == "annealed_langevin":
        return cfg.levels * cfg.steps  # NCSN returns the last iterate, no denoising step
    if m == "dpm_solver":
        return cfg.steps
    return None


def describe_sampler(cfg: C.SamplingConfig) -> str:
    """One line saying which sampler ``cfg`` runs and how many score evaluations it costs."""
    m, nfe = cfg.method, sampler_evaluations(cfg)
    cost = f"{nfe} score evaluations" if nfe is not None else "the solver decides the number of score evaluations"
    if m == "pc":
        what = (f"predictor-corrector sampler (predictor {cfg.predictor}, corrector {cfg.corrector}, "
                f"snr {cfg.snr}), {cfg.steps} steps")
    elif m in ("euler_maruyama", "ancestral"):
        what = f"{m.replace('_', '-')} sampler, {cfg.steps} steps"
    elif m == "annealed_langevin":
        what = f"annealed Langevin dynamics, {cfg.levels} noise levels × {cfg.steps} steps (step_lr {cfg.step_lr})"
    elif m == "dpm_solver":
        what = f"DPM-Solver++ of order {cfg.order}, {cfg.steps} steps on the {cfg.grid} grid"
    else:
        what = f"probability-flow ODE ({cfg.solver}, rtol {cfg.rtol}, atol {cfg.atol})"
    return f"{what}, {cost}"
