"""Adapters to the tools around scoresde.

* :func:`from_diffusers` — a diffusers ``UNet2DModel`` and its noise scheduler as ``(score_fn, sde)``, on
  the :class:`TabulatedVPSDE` of the scheduler's ᾱ table (timestep = t·N − 1).
* :func:`to_k_diffusion` / :func:`from_k_diffusion` — a scoresde ``(score_fn, sde)`` as a k-diffusion
  denoiser D(x̃, σ̃) in σ-space (x̃ = x/α, σ̃ = σ/α) and back.

Nothing here imports diffusers or k-diffusion: their objects are used through their attributes and calls.
See docs/interop.md.
"""

from scoresde.interop.diffusers import PREDICTION_TYPES, TabulatedVPSDE, from_diffusers
from scoresde.interop.k_diffusion import (
    SIGMA_RTOL,
    DenoiserScore,
    KDiffusionDenoiser,
    from_k_diffusion,
    to_k_diffusion,
)

__all__ = ["from_diffusers", "TabulatedVPSDE", "PREDICTION_TYPES", "to_k_diffusion", "from_k_diffusion",
           "KDiffusionDenoiser", "DenoiserScore", "SIGMA_RTOL"]
