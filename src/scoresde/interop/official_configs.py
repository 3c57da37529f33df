"""The 39 official score_sde_pytorch configs (``configs/<name>.py`` of Song et al. 2021), as data.

Each entry holds the ``model``, ``data`` and ``training`` fields that decide the network, the SDE and the
score convention (the ``sampling`` / ``eval`` / ``optim`` sections are left out). Every value is the one the
official config module sets, including fields the networks never read (``ema_rate``, ``tfrecords_path``, ...)
and leaving out fields that module does not set (e.g. ``fourier_scale`` in the discrete NCSN++ configs),
so that a by-name load reads exactly what a load of the official config would read.

The table is written as a few family bases (the values of one config of each family) plus, per config, the
fields that differ from its base. ``official_config(name)`` returns a fresh copy.
"""

from __future__ import annotations

import copy

__all__ = ["OFFICIAL_CONFIGS", "official_config"]


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _config(model: dict, data: dict, sde: str | None, continuous: bool, **model_changes) -> dict:
    return {"model": {**model, **model_changes}, "data": dict(data), "training": {"sde": sde, "continuous": continuous}}


# ----------------------------------------------------------------------------- data sections
_CIFAR10 = dict(dataset="CIFAR10", image_size=32, random_flip=True, centered=False, uniform_dequantization=False,
                num_channels=3)
_CIFAR10_CENTERED = dict(_CIFAR10, centered=True)
_CELEBA = dict(_CIFAR10, dataset="CELEBA", image_size=64)
_FFHQ_256 = dict(_CIFAR10, dataset="FFHQ", image_size=256, tfrecords_path="/home/yangsong/ncsc/ffhq/ffhq-r08.tfrecords")
_CELEBAHQ_256 = dict(_CIFAR10, dataset="CelebAHQ", image_size=256,
                     tfrecords_path="/home/yangsong/ncsc/celebahq/r08.tfrecords")
_CHURCH = dict(_CIFAR10, dataset="LSUN", category="church_outdoor", image_size=256)
_BEDROOM = dict(_CIFAR10, dataset="LSUN", category="bedroom", image_size=256)
_FFHQ_1024 = dict(_CIFAR10, dataset="FFHQ", image_size=1024,
                  tfrecords_path="/raid/song/ffhq-dataset/ffhq/ffhq-r10.tfrecords")
_CELEBAHQ_1024 = dict(_CIFAR10, dataset="CelebAHQ", image_size=1024,
                      tfrecords_path="/atlas/u/yangsong/celeba_hq/-r10.tfrecords")
_CELEBAHQ_DDPM = dict(_CELEBAHQ_1024, image_size=256, centered=True)

# ----------------------------------------------------------------------------- model families
# NCSN++ cont. (configs/ve/cifar10_ncsnpp_continuous.py)
_NCSNPP = dict(name="ncsnpp", scale_by_sigma=True, ema_rate=0.999, normalization="GroupNorm", nonlinearity="swish",
               nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), resamp_with_conv=True,
               conditional=True, fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, resblock_type="biggan",
               progressive="none", progressive_input="residual", progressive_combine="sum",
               attention_type="ddpm", init_scale=0.0, fourier_scale=16, conv_size=3, embedding_type="fourier",
               sigma_min=0.01, sigma_max=50, num_scales=1000, beta_min=0.1, beta_max=20.0, dropout=0.1)
# the NCSN++ of the VP / sub-VP configs: sinusoidal embedding of 999 t, no division by σ
_NCSNPP_VP = dict(_NCSNPP, scale_by_sigma=False, embedding_type="positional", ema_rate=0.9999)
# DDPM++ (configs/vp/cifar10_ddpmpp_continuous.py): NCSN++ without FIR and without the input pyramid
_DDPMPP = dict(_NCSNPP_VP, fir=False, progressive_input="none")
# the high-resolution NCSN++ (configs/ve/ffhq_256_ncsnpp_continuous.py, LSUN, CelebA-HQ 256)
_NCSNPP_256 = dict(_NCSNPP, progressive="output_skip", progressive_input="input_skip", ch_mult=(1, 1, 2, 2, 2, 2, 2),
                   num_res_blocks=2, num_scales=2000, dropout=0.0, sigma_max=348)
_NCSNPP_1024 = dict(_without(_NCSNPP_256, "beta_min", "beta_max"), nf=16, ema_rate=0.9999, num_res_blocks=1,
                    ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), sigma_max=1348)
# the DDPM U-Net of Ho et al. 2020 (configs/vp/ddpm/cifar10_continuous.py)
_DDPM = dict(name="ddpm", scale_by_sigma=False, ema_rate=0.9999, normalization="GroupNorm", nonlinearity="swish",
             nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), resamp_with_conv=True,
             conditional=True, embedding_type="fourier", sigma_min=0.01, sigma_max=50, num_scales=1000,
             beta_min=0.1, beta_max=20.0, dropout=0.1)
_DDPM_256 = dict(_DDPM, ch_mult=(1, 1, 2, 2, 4, 4), sigma_max=378, dropout=0.0)
# NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): listed so that they can be refused by name
_NCSN = dict(name="ncsn", scale_by_sigma=False, ema_rate=0.0, normalization="InstanceNorm++", nonlinearity="elu",
             nf=128, interpolation="bilinear", embedding_type="fourier", sigma_min=0.01, sigma_max=1, num_scales=10,
             beta_min=0.1, beta_max=20.0, dropout=0.1)
_NCSNV2 = dict(_NCSN, name="ncsnv2_64", scale_by_sigma=True, ema_rate=0.999, num_scales=232, sigma_max=50)

# ----------------------------------------------------------------------------- the table
OFFICIAL_CONFIGS: dict[str, dict] = {
    # VE SDE
    "ve/cifar10_ncsnpp_continuous": _config(_NCSNPP, _CIFAR10, "vesde", True),
    "ve/cifar10_ncsnpp_deep_continuous": _config(_NCSNPP, _CIFAR10, "vesde", True, num_res_blocks=8),
    "ve/cifar10_ncsnpp": _config(_without(_NCSNPP, "fourier_scale"), _CIFAR10, "vesde", False,
                                 embedding_type="positional"),
    "ve/cifar10_ddpm": _config(_DDPM, _CIFAR10, "vesde", False, scale_by_sigma=True, conv_size=3, ema_rate=0.999),
    "ve/celeba_ncsnpp": _config(_without(_NCSNPP, "fourier_scale"), _CELEBA, "vesde", False,
                                embedding_type="positional", sigma_begin=90, sigma_max=90.0),
    "ve/ffhq_256_ncsnpp_continuous": _config(_NCSNPP_256, _FFHQ_256, "vesde", True),
    "ve/celebahq_256_ncsnpp_continuous": _config(_NCSNPP_256, _CELEBAHQ_256, "vesde", True),
    "ve/church_ncsnpp_continuous": _config(_NCSNPP_256, _CHURCH, "vesde", True, sigma_max=380),
    "ve/bedroom_ncsnpp_continuous": _config(_NCSNPP_256, _BEDROOM, "vesde", True, sigma_max=378),
    "ve/ffhq_ncsnpp_continuous": _config(_NCSNPP_1024, _FFHQ_1024, "vesde", True),
    "ve/celebahq_ncsnpp_continuous": _config(_NCSNPP_1024, _CELEBAHQ_1024, "vesde", True),
    # VP SDE
    "vp/cifar10_ddpmpp_continuous": _config(_DDPMPP, _CIFAR10_CENTERED, "vpsde", True),
    "vp/cifar10_ddpmpp_deep_continuous": _config(_DDPMPP, _CIFAR10_CENTERED, "vpsde", True, num_res_blocks=8),
    "vp/cifar10_ddpmpp": _config(_DDPMPP, _CIFAR10_CENTERED, "vpsde", False),
    "vp/cifar10_ncsnpp_continuous": _config(_NCSNPP_VP, _CIFAR10_CENTERED, "vpsde", True),
    "vp/cifar10_ncsnpp_deep_continuous": _config(_NCSNPP_VP, _CIFAR10_CENTERED, "vpsde", True, num_res_blocks=8),
    "vp/cifar10_ncsnpp": _config(_without(_NCSNPP_VP, "fourier_scale"), _CIFAR10_CENTERED, "vpsde", False),
    "vp/ddpm/cifar10_continuous": _config(_DDPM, _CIFAR10_CENTERED, "vpsde", True),
    "vp/ddpm/cifar10": _config(_DDPM, _CIFAR10_CENTERED, "vpsde", False),
    "vp/ddpm/cifar10_unconditional": _config(_DDPM, _CIFAR10_CENTERED, "vpsde", False, conditional=False),
    "vp/ddpm/celebahq": _config(_DDPM_256, _CELEBAHQ_DDPM, "vpsde", False),
    "vp/ddpm/church": _config(_DDPM_256, dict(_CHURCH, centered=True), "vpsde", False),
    "vp/ddpm/bedroom": _config(_DDPM_256, dict(_BEDROOM, centered=True), "vpsde", False),
    # sub-VP SDE
    "subvp/cifar10_ddpmpp_continuous": _config(_DDPMPP, _CIFAR10_CENTERED, "subvpsde", True),
    "subvp/cifar10_ddpmpp_deep_continuous": _config(_DDPMPP, _CIFAR10_CENTERED, "subvpsde", True, num_res_blocks=8),
    "subvp/cifar10_ncsnpp_continuous": _config(_NCSNPP_VP, _CIFAR10_CENTERED, "subvpsde", True),
    "subvp/cifar10_ncsnpp_deep_continuous": _config(_NCSNPP_VP, _CIFAR10_CENTERED, "subvpsde", True,
                                                    num_res_blocks=8),
    "subvp/cifar10_ddpm_continuous": _config(_DDPM, _CIFAR10_CENTERED, "subvpsde", True),
    # NCSN / NCSNv2 (not buildable by the official code)
    "ve/ncsn/cifar10": _config(_NCSN, _CIFAR10, "vesde", False),
    "ve/ncsn/cifar10_5": _config(_NCSN, _CIFAR10, "vesde", False, ema_rate=0.999),
    "ve/ncsn/cifar10_124": _config(_NCSN, _CIFAR10, "vesde", False, num_scales=232, sigma_max=50),
    "ve/ncsn/cifar10_1245": _config(_NCSN, _CIFAR10, "vesde", False, num_scales=232, sigma_max=50, ema_rate=0.999),
    "ve/ncsn/celeba": _config(_NCSN, _CELEBA, None, False),
    "ve/ncsn/celeba_5": _config(_NCSN, _CELEBA, "vesde", False, ema_rate=0.999),
    "ve/ncsn/celeba_124": _config(_NCSN, _CELEBA, "vesde", False, num_scales=500, sigma_max=90.0),
    "ve/ncsn/celeba_1245": _config(_NCSN, _CELEBA, "vesde", False, num_scales=500, sigma_max=90.0, ema_rate=0.999),
    "ve/ncsnv2/cifar10": _config(_NCSNV2, _CIFAR10, "vesde", False),
    "ve/ncsnv2/celeba": _config(_NCSNV2, _CELEBA, "vesde", False, num_scales=500, sigma_max=90.0),
    "ve/ncsnv2/bedroom": _config(_NCSNV2, dict(_BEDROOM, image_size=128), "vesde", True, name="ncsnv2_128",
                                 num_scales=1086, sigma_max=190, ema_rate=0.9999, dropout=0.0),
}


def official_config(name: str) -> dict:
    """A fresh copy of the official config ``name`` (e.g. ``"vp/cifar10_ddpmpp_continuous"``; a leading
    ``configs/`` and a trailing ``.py`` are accepted). Raises ValueError listing the known names."""
    if not isinstance(name, str):
        raise TypeError(f"an official config name must be a str, got {type(name).__name__}")
    key = name.removeprefix("configs/").removesuffix(".py")
    if key not in OFFICIAL_CONFIGS:
        known = "\n  ".join(OFFICIAL_CONFIGS)
        raise ValueError(f"unknown official config {name!r}; the {len(OFFICIAL_CONFIGS)} official configs are:\n  "
                         f"{known}")
    return copy.deepcopy(OFFICIAL_CONFIGS[key])
