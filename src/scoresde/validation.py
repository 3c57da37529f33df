"""Whole-config value checks: :func:`validate` reports every out-of-range value and unknown name of a
:class:`~scoresde.config.Config` at once, before any work starts.

It lives apart from :mod:`scoresde.config` because it reads the name tables (SDEs, networks, losses,
samplers, divergences) from the modules that own them, which import torch; the config module itself stays
torch-free so that ``scoresde --help`` answers at once.
"""

from __future__ import annotations

import inspect
import math

import torch

from scoresde import config as C
from scoresde import data as D
from scoresde._ode import METHODS
from scoresde.builders import SAMPLERS
from scoresde.likelihood import DIVERGENCES
from scoresde.losses import WEIGHTINGS
from scoresde.nn.presets import NETWORKS
from scoresde.nn.presets import PRESETS as NETWORK_PRESETS
from scoresde.sampling import CORRECTORS, PREDICTORS
from scoresde.sampling.fast import GRIDS
from scoresde.sampling.steps import ANCESTRAL_VARIANCES
from scoresde.score import NOISE_CONDS, PARAMETERIZATIONS
from scoresde.sde import SDES

__all__ = ["validate"]


def validate(cfg: C.Config, *, training: bool = True, model: bool = True) -> C.Config:
    """Check every value of ``cfg`` before any work starts; returns ``cfg`` unchanged.

    Types are checked when a config is built; this checks values: ranges (intervals ≥ 1, batch size ≥ 1,
    learning rate > 0 ...), names (SDE, loss, network, sampler, predictor, corrector, divergence ...), the
    network's ``model.options`` against its constructor's signature, and the device. Every problem found is
    reported at once, in one :class:`~scoresde.config.ConfigError` naming the field, its value and what is
    allowed, so that no run fails after hours of training on a sampling or evaluation option.

    ``training=False`` skips the [training] and [optim] sections (``scoresde sample`` and ``likelihood`` do not
    use them, and a run trained on a GPU may be sampled on a CPU); ``model=False`` skips [model] (a user's own
    network passed to :func:`scoresde.train.train`). Name tables come from the modules that own them.
    """
    problems: list[str] = []
    _check_data(cfg.data, problems)
    if model:
        _check_model(cfg.model, problems)
    _check_sde(cfg.sde, problems)
    _check_loss(cfg.loss, problems)
    if training:
        _check_optim(cfg.optim, problems)
        _check_training(cfg.training, problems)
    _check_sampling(cfg.sampling, problems)
    _check_eval(cfg.eval, problems)
    if len(problems) == 1:
        raise C.ConfigError(problems[0])
    if problems:
        raise C.ConfigError(f"{len(problems)} invalid config values:\n  " + "\n  ".join(problems))
    return cfg


def _int(problems, where: str, value: int, minimum: int) -> None:
    if value < minimum:
        problems.append(f"{where}={value!r} is not allowed: it must be an integer >= {minimum}")


def _num(problems, where: str, value: float, lo: float, hi: float = math.inf, *, lo_open: bool = False,
         hi_open: bool = True) -> None:
    """``value`` must be finite and lie in the interval [lo, hi] (ends open as asked)."""
    inside = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (
        value < hi if hi_open else value <= hi)
    if not inside:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        problems.append(f"{where}={value!r} is not allowed: it must be a finite number in {interval}")


def _choice(problems, where: str, value: str, choices, hint: str = "") -> None:
    if value not in choices:
        problems.append(f"unknown {where} {value!r}; choose one of {sorted(choices)}{hint}")


def _check_data(d: C.DataConfig, problems: list) -> None:
    _choice(problems, "data.name", d.name, [*D.TOY_DATASETS, "digits", *D.IMAGE_DATASETS])
    _int(problems, "data.image_size", d.image_size, 0)
    _int(problems, "data.center_crop", d.center_crop, 0)
    _int(problems, "data.toy_size", d.toy_size, 1)


def _check_model(m: C.ModelConfig, problems: list) -> None:
    _choice(problems, "model.parameterization", m.parameterization, PARAMETERIZATIONS)
    _choice(problems, "model.noise_cond", m.noise_cond, NOISE_CONDS)
    _int(problems, "model.discrete_steps", m.discrete_steps, 0)
    if m.noise_cond == "discrete_index" and m.discrete_steps < 2:
        problems.append(f"model.noise_cond='discrete_index' needs model.discrete_steps >= 2 (the number of noise "
                        f"levels), got {m.discrete_steps}")
    if m.network not in NETWORK_PRESETS:
        _choice(problems, "model.network", m.network, NETWORK_PRESETS)
        return
    cls = NETWORKS[NETWORK_PRESETS[m.network][0]]
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(m.options) - set(params))
    if unknown:
        problems.append(f"model.options {unknown} are not arguments of network {m.network!r} ({cls.__name__}); "
                        f"allowed: {sorted(params)}")


def _check_sde(c: C.SDEConfig, problems: list) -> None:
    """The name against the one name → SDE table, the values by the SDE's own constructor checks (building it
    as :func:`scoresde.builders.build_sde` does)."""
    if c.name not in SDES:
        problems.append(f"unknown sde.name {c.name!r}; choose one of {sorted(SDES)}")
        return
    cls = SDES[c.name]
    try:
        cls(**{k: getattr(c, k) for k in inspect.signature(cls).parameters if hasattr(c, k)})
    except (ValueError, TypeError) as err:
        problems.append(f"sde (name {c.name!r}): {err}")


def _check_loss(c: C.LossConfig, problems: list) -> None:
    _choice(problems, "loss.name", c.name, ("dsm", "ssm", "smld", "ddpm"))
    if c.name in ("dsm", "ssm"):
        _choice(problems, "loss.weighting", c.weighting, WEIGHTINGS)
    _num(problems, "loss.eps", c.eps, 0.0, 1.0)
    _int(problems, "loss.num_scales", c.num_scales, 2)
    _int(problems, "loss.num_steps", c.num_steps, 1)


def _check_optim(c: C.OptimConfig, problems: list) -> None:
    _num(problems, "optim.lr", c.lr, 0.0, lo_open=True)
    _num(problems, "optim.beta1", c.beta1, 0.0, 1.0)
    _num(problems, "optim.beta2", c.beta2, 0.0, 1.0)
    _num(problems, "optim.eps", c.eps, 0.0, lo_open=True)
    _num(problems, "optim.weight_decay", c.weight_decay, 0.0)
    _int(problems, "optim.warmup", c.warmup, 0)
    _num(problems, "optim.grad_clip", c.grad_clip, 0.0)
    _num(problems, "optim.ema_decay", c.ema_decay, 0.0, 1.0)


def _check_training(c: C.TrainingConfig, problems: list) -> None:
    for name, minimum in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("log_every", 1), ("ckpt_every", 1),
                          ("keep", 1), ("sample_every", 0), ("eval_every", 0)):
        _int(problems, f"training.{name}", getattr(c, name), minimum)
    if c.batch_size >= 1 and c.grad_accum >= 1 and c.batch_size % c.grad_accum:
        problems.append(f"training.batch_size={c.batch_size} must be divisible by training.grad_accum={c.grad_accum}")
    _check_device(c.device, problems)
    # bf16 autocast (like compile) acts on CUDA only, and CPU runs stay float32: a CPU-sized rehearsal of a GPU
    # config takes the same code path (examples/cifar10_gpu.py --quick)
    _choice(problems, "training.amp", c.amp, ("none", "bf16"))
    if not c.workdir:
        problems.append("training.workdir must name a directory, got ''")


def _check_device(name: str, problems: list) -> None:
    """``name`` must be a device type that this machine has."""

    allowed = "auto, cpu, cuda, cuda:N or mps"
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        problems.append(f"unknown training.device {name!r}; choose one of {allowed}")
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            problems.append(f"training.device={name!r}, but CUDA is not available on this machine; use 'auto' or 'cpu'")
        elif device.index is not None and device.index >= count:
            problems.append(f"training.device={name!r}, but this machine has {count} CUDA device(s): cuda:0 .. "
                            f"cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problems.append(f"training.device={name!r}, but MPS is not available on this machine")
    elif device.type not in ("cpu", "mps"):
        problems.append(f"unknown training.device {name!r}; choose one of {allowed}")


def _check_sampling(c: C.SamplingConfig, problems: list) -> None:
    _choice(problems, "sampling.method", c.method, SAMPLERS)
    _int(problems, "sampling.steps", c.steps, 1)
    _choice(problems, "sampling.predictor", c.predictor, PREDICTORS)
    hint = (" (NCSN's annealed Langevin dynamics, L levels × T steps, is sampling.method='annealed_langevin' with "
            "sampling.levels and sampling.steps)") if c.corrector == "annealed_langevin" else ""
    _choice(problems, "sampling.corrector", c.corrector, CORRECTORS, hint)
    _num(problems, "sampling.snr", c.snr, 0.0, lo_open=True)
    _int(problems, "sampling.corrector_steps", c.corrector_steps, 1)
    _int(problems, "sampling.levels", c.levels, 1)
    _num(problems, "sampling.step_lr", c.step_lr, 0.0, lo_open=True)
    _choice(problems, "sampling.order", c.order, (1, 2, 3))
    _choice(problems, "sampling.grid", c.grid, GRIDS)
    _choice(problems, "sampling.solver", c.solver, METHODS)
    _num(problems, "sampling.eps", c.eps, 0.0, 1.0, lo_open=True)
    _int(problems, "sampling.num_samples", c.num_samples, 1)
    _num(problems, "sampling.rtol", c.rtol, 0.0, lo_open=True)
    _num(problems, "sampling.atol", c.atol, 0.0, lo_open=True)
    _choice(problems, "sampling.variance", c.variance, ANCESTRAL_VARIANCES)  # the ancestral step's noise


def _check_eval(c: C.EvalConfig, problems: list) -> None:
    _choice(problems, "eval.divergence", c.divergence, DIVERGENCES)
    _int(problems, "eval.probes", c.probes, 1)
    _num(problems, "eval.eps", c.eps, 0.0, 1.0, lo_open=True)
    _num(problems, "eval.rtol", c.rtol, 0.0, lo_open=True)
    _num(problems, "eval.atol", c.atol, 0.0, lo_open=True)
    _int(problems, "eval.num_samples", c.num_samples, 0)
    _int(problems, "eval.batch_size", c.batch_size, 1)
