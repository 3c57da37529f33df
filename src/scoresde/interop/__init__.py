"""Interoperability with the code bases around scoresde, above :mod:`scoresde.nn`, :mod:`scoresde.score` and
:mod:`scoresde.sde`:

* :func:`load_official_checkpoint` — official score_sde_pytorch checkpoints (:mod:`scoresde.interop.official`;
  its 39 configs by name in :mod:`scoresde.interop.official_configs`);
* :func:`from_diffusers` — a diffusers ``UNet2DModel`` and its noise scheduler as ``(score_fn, sde)``, on
  the :class:`TabulatedVPSDE` of the scheduler's ᾱ table (timestep = t·N − 1);
* :func:`to_k_diffusion` / :func:`from_k_diffusion` — a scoresde ``(score_fn, sde)`` as a k-diffusion
  denoiser D(x̃, σ̃) in σ-space (x̃ = x/α, σ̃ = σ/α) and back.

Nothing here imports diffusers or k-diffusion: their objects are used through their attributes and calls.
See docs/interop.md and docs/networks.md.
"""

from scoresde.interop.diffusers import PREDICTION_TYPES, TabulatedVPSDE, from_diffusers
from scoresde.interop.k_diffusion import (
    SIGMA_RTOL,
    DenoiserScore,
    KDiffusionDenoiser,
    from_k_diffusion,
    to_k_diffusion,
)
from scoresde.interop.official import load_official_checkpoint, official_network
from scoresde.interop.official_configs import OFFICIAL_CONFIGS, official_config

__all__ = ["load_official_checkpoint", "official_network", "official_config", "OFFICIAL_CONFIGS",
           "from_diffusers", "TabulatedVPSDE", "PREDICTION_TYPES", "to_k_diffusion", "from_k_diffusion",
           "KDiffusionDenoiser", "DenoiserScore", "SIGMA_RTOL"]
