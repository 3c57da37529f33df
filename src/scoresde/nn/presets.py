"""Named network configurations and :func:`build_network`.

Each full-size preset *equals* the network of the official score_sde_pytorch configs listed next to it
(Song et al. 2021; same hyper-parameters, hence the same parameter count, frozen Fourier weights included);
:data:`OFFICIAL_EQUIVALENTS` holds the same claims as data, and a test checks them against the configs.

* ``ncsnpp_cifar10`` (62,758,915 parameters): ve/cifar10_ncsnpp_continuous (NCSN++ cont.)
* ``ncsnpp_deep_cifar10`` (107,587,075): ve/cifar10_ncsnpp_deep_continuous
* ``ncsnpp_cifar10_positional`` (62,693,251): vp/cifar10_ncsnpp_continuous, vp/cifar10_ncsnpp,
  subvp/cifar10_ncsnpp_continuous
* ``ddpmpp_cifar10`` (61,804,419): vp/cifar10_ddpmpp_continuous (DDPM++ cont.), vp/cifar10_ddpmpp,
  subvp/cifar10_ddpmpp_continuous
* ``ddpmpp_deep_cifar10`` (106,632,579): vp/cifar10_ddpmpp_deep_continuous, subvp/cifar10_ddpmpp_deep_continuous
* ``ncsnpp_256`` (65,574,549): ve/ffhq_256_ncsnpp_continuous, ve/celebahq_256_ncsnpp_continuous,
  ve/church_ncsnpp_continuous, ve/bedroom_ncsnpp_continuous
* ``ncsnpp_1024`` (105,785,896): ve/ffhq_ncsnpp_continuous, ve/celebahq_ncsnpp_continuous
* ``ddpm_cifar10`` (35,218,947): vp/ddpm/cifar10_continuous (Ho et al. 2020), vp/ddpm/cifar10,
  subvp/cifar10_ddpm_continuous
* ``ddpm_256`` (111,569,923): vp/ddpm/celebahq, vp/ddpm/church, vp/ddpm/bedroom

The deep NCSN++ with a sinusoidal embedding (``vp|subvp/cifar10_ncsnpp_deep_continuous``) is
``ncsnpp_cifar10_positional`` with ``num_res_blocks=8``. The discrete-VE NCSN++ of ``ve/cifar10_ncsnpp``
(and ``ve/celeba_ncsnpp`` at 64 px) is ``ncsnpp_cifar10_positional`` with ``centered=False`` whose output
the official code divides by ``sigmas[index]`` (a σ table, which is no network option here:
:class:`scoresde.interop.official_model.SigmaIndexScaling` adds it when importing such a checkpoint); likewise
``ve/cifar10_ddpm`` is ``ddpm_cifar10`` with ``centered=False`` and that division.

Small presets, equal to no official config: ``digits`` (8×8×1, trains on a CPU in minutes) and ``small``
(32×32×3; pass ``image_size=28, in_channels=1`` for MNIST-sized data), ``mlp`` (toy data) and
``ncsn_cifar10`` (the RefineNet of NCSN, Song & Ermon 2019; the official ``ve/ncsn/*`` configs cannot be
built by the official code). ``build_network(name, **overrides)`` applies keyword overrides (e.g. ``nf=64``)
and records ``network_config`` on the network so that a :class:`scoresde.score.ScoreModel` can describe and
rebuild it.
"""

from __future__ import annotations

import torch.nn as nn

from scoresde.nn.ddpm_unet import DDPMUNet
from scoresde.nn.mlp import MLPScoreNet
from scoresde.nn.ncsn import RefineNet
from scoresde.nn.unet import ScoreUNet

__all__ = ["PRESETS", "NETWORKS", "OFFICIAL_EQUIVALENTS", "build_network"]

NETWORKS = {"ScoreUNet": ScoreUNet, "DDPMUNet": DDPMUNet, "RefineNet": RefineNet, "MLPScoreNet": MLPScoreNet}

_NCSNPP = dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1,
               embedding_type="fourier", fourier_scale=16.0, resblock_type="biggan", fir=True,
               fir_kernel=(1, 3, 3, 1), progressive="none", progressive_input="residual", skip_rescale=True,
               scale_by_sigma=True, centered=False, image_size=32, in_channels=3)
_DDPMPP = dict(_NCSNPP, embedding_type="positional", fir=False, progressive_input="none", scale_by_sigma=False,
               centered=True)
_NCSNPP_HIRES = dict(_NCSNPP, dropout=0.0, progressive="output_skip", progressive_input="input_skip",
                     progressive_combine="sum")

PRESETS: dict[str, tuple[str, dict]] = {
    "ncsnpp_cifar10": ("ScoreUNet", _NCSNPP),
    "ncsnpp_deep_cifar10": ("ScoreUNet", dict(_NCSNPP, num_res_blocks=8)),
    "ncsnpp_cifar10_positional": ("ScoreUNet", dict(_NCSNPP, embedding_type="positional", scale_by_sigma=False,
                                                    centered=True)),
    "ddpmpp_cifar10": ("ScoreUNet", _DDPMPP),
    "ddpmpp_deep_cifar10": ("ScoreUNet", dict(_DDPMPP, num_res_blocks=8)),
    "ncsnpp_256": ("ScoreUNet", dict(_NCSNPP_HIRES, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2,
                                     image_size=256)),
    "ncsnpp_1024": ("ScoreUNet", dict(_NCSNPP_HIRES, nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=1,
                                      image_size=1024)),
    "ddpm_cifar10": ("DDPMUNet", dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                                      dropout=0.1, image_size=32, in_channels=3)),
    "ddpm_256": ("DDPMUNet", dict(nf=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
                                  dropout=0.0, image_size=256, in_channels=3)),
    "digits": ("ScoreUNet", dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                                 embedding_type="positional", resblock_type="biggan", fir=False,
                                 image_size=8, in_channels=1)),
    "small": ("ScoreUNet", dict(nf=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), dropout=0.1,
                                embedding_type="positional", resblock_type="biggan", fir=False,
                                image_size=32, in_channels=3)),
    "ncsn_cifar10": ("RefineNet", dict(nf=128, in_channels=3, num_classes=10, image_size=32)),
    "mlp": ("MLPScoreNet", dict(dim=2, hidden=128, layers=3, embedding="positional")),
}

# preset -> the official configs (score_sde_pytorch ``configs/<name>.py``) whose network it equals
OFFICIAL_EQUIVALENTS: dict[str, tuple[str, ...]] = {
    "ncsnpp_cifar10": ("ve/cifar10_ncsnpp_continuous",),
    "ncsnpp_deep_cifar10": ("ve/cifar10_ncsnpp_deep_continuous",),
    "ncsnpp_cifar10_positional": ("vp/cifar10_ncsnpp_continuous", "vp/cifar10_ncsnpp",
                                  "subvp/cifar10_ncsnpp_continuous"),
    "ddpmpp_cifar10": ("vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp", "subvp/cifar10_ddpmpp_continuous"),
    "ddpmpp_deep_cifar10": ("vp/cifar10_ddpmpp_deep_continuous", "subvp/cifar10_ddpmpp_deep_continuous"),
    "ncsnpp_256": ("ve/ffhq_256_ncsnpp_continuous", "ve/celebahq_256_ncsnpp_continuous",
                   "ve/church_ncsnpp_continuous", "ve/bedroom_ncsnpp_continuous"),
    "ncsnpp_1024": ("ve/ffhq_ncsnpp_continuous", "ve/celebahq_ncsnpp_continuous"),
    "ddpm_cifar10": ("vp/ddpm/cifar10_continuous", "vp/ddpm/cifar10", "subvp/cifar10_ddpm_continuous"),
    "ddpm_256": ("vp/ddpm/celebahq", "vp/ddpm/church", "vp/ddpm/bedroom"),
}


def build_network(preset: str, **overrides) -> nn.Module:
    """Build the network named ``preset`` (see :data:`PRESETS`) with keyword ``overrides``.

    The result carries ``network_config = {"preset": preset, "kwargs": overrides}`` for re-building.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; valid presets: {sorted(PRESETS)}")
    cls_name, kwargs = PRESETS[preset]
    net = NETWORKS[cls_name](**{**kwargs, **overrides})
    net.network_config = {"preset": preset, "kwargs": dict(overrides)}
    return net
