"""Samplers for score-based diffusion models.

Stochastic: :func:`sample_pc` (predictor–corrector), :func:`sample_euler_maruyama`,
:func:`sample_ancestral`, :func:`sample_annealed_langevin`. Deterministic: :func:`sample_ode` (the
probability-flow ODE with an adaptive solver), :func:`sample_dpm_solver` (few-step DPM-Solver++(2M)),
and the latent tools :func:`encode`, :func:`decode`, :func:`slerp`, :func:`interpolate`,
:func:`scale_temperature`. Every sampler returns a :class:`SampleResult` and passes a :class:`SamplerStep`
to its ``callback`` after every step.

The stochastic samplers (and conditional sampling by imputation) are fronts over one loop,
:func:`~scoresde.sampling.loops.predictor_corrector`; every sampler takes its times from one
:func:`~scoresde.sampling.grids.time_grid` (:data:`GRIDS`).
"""

from scoresde.sampling.fast import sample_dpm_solver
from scoresde.sampling.grids import GRIDS, time_grid
from scoresde.sampling.latent import interpolate, scale_temperature, slerp
from scoresde.sampling.loops import (
    predictor_corrector,
    sample_ancestral,
    sample_annealed_langevin,
    sample_euler_maruyama,
    sample_pc,
)
from scoresde.sampling.ode import decode, encode, sample_ode
from scoresde.sampling.result import SampleResult, SamplerStep
from scoresde.sampling.steps import CORRECTORS, PREDICTORS

__all__ = [
    "SampleResult",
    "SamplerStep",
    "GRIDS",
    "time_grid",
    "predictor_corrector",
    "PREDICTORS",
    "CORRECTORS",
    "sample_pc",
    "sample_euler_maruyama",
    "sample_ancestral",
    "sample_annealed_langevin",
    "sample_ode",
    "sample_dpm_solver",
    "encode",
    "decode",
    "slerp",
    "interpolate",
    "scale_temperature",
]
