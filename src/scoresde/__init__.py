"""scoresde: score-based diffusion models in PyTorch.

The numerical core meets at one interface, ``score_fn(x, t) -> Tensor``: every SDE, loss, sampler and
likelihood below accepts any such callable. Subpackages hold the rest: :mod:`scoresde.nn` (networks),
:mod:`scoresde.interop` (official score_sde_pytorch checkpoints), :mod:`scoresde.likelihood` (divergences,
the ODE likelihood, the continuous bound, bits/dim, dequantisation, evaluation), :mod:`scoresde.discrete`
(the 2015 diffusion model and DDPM), :mod:`scoresde.controllable`, :mod:`scoresde.metrics`, :mod:`scoresde.data`,
:mod:`scoresde.train`.

Importing this package has no side effects: it chooses no device, seeds nothing, compiles nothing and
imports no optional package. It does not even import torch: every public name is loaded on first use
(PEP 562 module ``__getattr__``), so that ``scoresde --help`` and ``import scoresde.config`` answer at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import typing

__version__ = "0.1.0"

#: Public name → the module that defines it (imported on first access).
_LAZY = {
    # SDEs and the exact oracle
    **dict.fromkeys(["SDE", "VESDE", "VPSDE", "SubVPSDE", "LinearSDE", "ReverseSDE"], "scoresde.sde"),
    "GaussianMixture": "scoresde.analytic",
    # losses
    **dict.fromkeys(["dsm_loss", "ssm_loss", "smld_loss", "ddpm_loss", "sample_time", "WEIGHTINGS"],
                    "scoresde.losses"),
    # networks as score functions
    "ScoreModel": "scoresde.score",
    "load_official_checkpoint": "scoresde.interop.official",
    # training runs
    **dict.fromkeys(["Run", "load_run", "export_run"], "scoresde.run"),
    # sampling
    **dict.fromkeys(["SampleResult", "PREDICTORS", "CORRECTORS", "sample_pc", "sample_euler_maruyama",
                     "sample_ancestral", "sample_annealed_langevin", "sample_ode", "sample_dpm_solver", "encode",
                     "decode", "slerp", "interpolate", "scale_temperature"], "scoresde.sampling"),
    # likelihood
    **dict.fromkeys(["log_likelihood", "LikelihoodResult", "bits_per_dim", "uniform_dequantize", "nll_bound",
                     "nll_bound_terms", "NLLBound", "VariationalDequantizer", "dequantized_log_prob", "evaluate_nll",
                     "NLLResult"], "scoresde.likelihood"),
    # controllable generation
    **dict.fromkeys(["sample_conditional", "inpaint", "colorize", "guided_score_fn", "sample_conditional_smc",
                     "inpaint_smc"], "scoresde.controllable"),
    # progress bars: one switch for all
    "set_progress": "scoresde.progress",
    # training utilities
    "EMA": "scoresde.ema",
    **dict.fromkeys(["save_checkpoint", "load_checkpoint"], "scoresde.checkpoint"),
}
#: Subpackages offered as attributes (``scoresde.nn`` ...), also imported on first access.
_SUBPACKAGES = ("nn", "interop", "discrete", "controllable", "metrics", "data", "likelihood")

__all__ = [*_LAZY, *_SUBPACKAGES]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBPACKAGES or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if typing.TYPE_CHECKING:  # static analysers and API-reference generators see the names as plain imports
    from scoresde import controllable, data, discrete, interop, likelihood, metrics, nn  # noqa: F401
    from scoresde.analytic import GaussianMixture  # noqa: F401
    from scoresde.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
    from scoresde.controllable import (  # noqa: F401
        colorize,
        guided_score_fn,
        inpaint,
        inpaint_smc,
        sample_conditional,
        sample_conditional_smc,
    )
    from scoresde.ema import EMA  # noqa: F401
    from scoresde.interop.official import load_official_checkpoint  # noqa: F401
    from scoresde.likelihood import (  # noqa: F401
        LikelihoodResult,
        NLLBound,
        NLLResult,
        VariationalDequantizer,
        bits_per_dim,
        dequantized_log_prob,
        evaluate_nll,
        log_likelihood,
        nll_bound,
        nll_bound_terms,
        uniform_dequantize,
    )
    from scoresde.losses import WEIGHTINGS, ddpm_loss, dsm_loss, sample_time, smld_loss, ssm_loss  # noqa: F401
    from scoresde.progress import set_progress  # noqa: F401
    from scoresde.run import Run, export_run, load_run  # noqa: F401
    from scoresde.sampling import (  # noqa: F401
        CORRECTORS,
        PREDICTORS,
        SampleResult,
        decode,
        encode,
        interpolate,
        sample_ancestral,
        sample_annealed_langevin,
        sample_dpm_solver,
        sample_euler_maruyama,
        sample_ode,
        sample_pc,
        scale_temperature,
        slerp,
    )
    from scoresde.score import ScoreModel  # noqa: F401
    from scoresde.sde import SDE, VESDE, VPSDE, LinearSDE, ReverseSDE, SubVPSDE  # noqa: F401
