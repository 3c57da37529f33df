"""Samplers for score-based diffusion models.

Stochastic: :func:`sample_pc` (predictor–corrector), :func:`sample_euler_maruyama`,
:func:`sample_ancestral`, :func:`sample_annealed_langevin`. Deterministic: :func:`sample_ode` (the
probability-flow ODE with an adaptive solver), :func:`sample_dpm_solver` (few-step DPM-Solver++(2M)),
and the latent tools :func:`encode`, :func:`decode`, :func:`slerp`, :func:`interpolate`,
:func:`scale_temperature`. Every sampler returns a :class:`SampleResult`.
"""

from scoresde.sampling.fast import sample_dpm_solver
from scoresde.sampling.latent import interpolate, scale_temperature, slerp
from scoresde.sampling.loops import sample_ancestral, sample_annealed_langevin, sample_euler_maruyama, sample_pc
from scoresde.sampling.ode import decode, encode, sample_ode
from scoresde.sampling.result import SampleResult
from scoresde.sampling.steps import CORRECTORS, PREDICTORS

__all__ = [
    "SampleResult",
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
