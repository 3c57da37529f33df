"""scoresde: score-based diffusion models in PyTorch.

The numerical core meets at one interface, ``score_fn(x, t) -> Tensor``: every SDE, loss, sampler and
likelihood below accepts any such callable. Subpackages hold the rest: :mod:`scoresde.nn` (networks and the
official-checkpoint import), :mod:`scoresde.discrete` (the 2015 diffusion model and DDPM),
:mod:`scoresde.controllable`, :mod:`scoresde.metrics`, :mod:`scoresde.data`, :mod:`scoresde.train`.

Importing this package has no side effects: it chooses no device, seeds nothing, compiles nothing and
imports no optional package.
"""

from scoresde import controllable, data, discrete, interop, metrics, nn
from scoresde.analytic import GaussianMixture
from scoresde.bpd import bits_per_dim, uniform_dequantize
from scoresde.checkpoint import load_checkpoint, save_checkpoint
from scoresde.controllable import colorize, guided_score_fn, inpaint, sample_conditional
from scoresde.dequant import VariationalDequantizer, dequantized_log_prob
from scoresde.elbo import NLLBound, nll_bound, nll_bound_terms
from scoresde.ema import EMA
from scoresde.evaluate import NLLResult, evaluate_nll
from scoresde.likelihood import LikelihoodResult, log_likelihood
from scoresde.losses import WEIGHTINGS, ddpm_loss, dsm_loss, sample_time, smld_loss, ssm_loss
from scoresde.nn.official import load_official_checkpoint
from scoresde.sampling import (
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
from scoresde.score import ScoreModel
from scoresde.sde import SDE, VESDE, VPSDE, LinearSDE, ReverseSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    # SDEs and the exact oracle
    "SDE", "VESDE", "VPSDE", "SubVPSDE", "LinearSDE", "ReverseSDE", "GaussianMixture",
    # losses
    "dsm_loss", "ssm_loss", "smld_loss", "ddpm_loss", "sample_time", "WEIGHTINGS",
    # networks as score functions
    "ScoreModel", "load_official_checkpoint",
    # sampling
    "SampleResult", "PREDICTORS", "CORRECTORS", "sample_pc", "sample_euler_maruyama", "sample_ancestral",
    "sample_annealed_langevin", "sample_ode", "sample_dpm_solver", "encode", "decode", "slerp", "interpolate",
    "scale_temperature",
    # likelihood
    "log_likelihood", "LikelihoodResult", "bits_per_dim", "uniform_dequantize", "nll_bound", "nll_bound_terms",
    "NLLBound", "VariationalDequantizer", "dequantized_log_prob", "evaluate_nll", "NLLResult",
    # controllable generation
    "sample_conditional", "inpaint", "colorize", "guided_score_fn",
    # training utilities
    "EMA", "save_checkpoint", "load_checkpoint",
    # subpackages
    "nn", "discrete", "controllable", "metrics", "data", "interop",
]
