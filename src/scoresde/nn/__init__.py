"""Score networks: they map ``(x, noise_cond)`` to an output of x's shape and know nothing about SDEs."""

from scoresde.nn.ddpm_unet import DDPMUNet
from scoresde.nn.mlp import MLPScoreNet
from scoresde.nn.ncsn import RefineNet
from scoresde.nn.presets import NETWORKS, PRESETS, build_network
from scoresde.nn.unet import ScoreUNet

__all__ = ["ScoreUNet", "DDPMUNet", "RefineNet", "MLPScoreNet", "build_network", "PRESETS", "NETWORKS"]
