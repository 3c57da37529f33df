"""scoresde: score-based diffusion models in PyTorch.

Importing this package has no side effects: it chooses no device, seeds nothing, compiles nothing and
imports no optional package.
"""

from scoresde.analytic import GaussianMixture
from scoresde.losses import WEIGHTINGS, ddpm_loss, dsm_loss, sample_time, smld_loss, ssm_loss
from scoresde.sde import SDE, VESDE, VPSDE, LinearSDE, ReverseSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "LinearSDE",
    "ReverseSDE",
    "GaussianMixture",
    "dsm_loss",
    "ssm_loss",
    "smld_loss",
    "ddpm_loss",
    "sample_time",
    "WEIGHTINGS",
]
