"""Interoperability with other code bases, above :mod:`scoresde.nn`, :mod:`scoresde.score` and
:mod:`scoresde.sde`: official score_sde_pytorch checkpoints (:mod:`scoresde.interop.official`, its 39
configs in :mod:`scoresde.interop.official_configs`)."""

from scoresde.interop.official import load_official_checkpoint, official_network
from scoresde.interop.official_configs import OFFICIAL_CONFIGS, official_config

__all__ = ["load_official_checkpoint", "official_network", "official_config", "OFFICIAL_CONFIGS"]
