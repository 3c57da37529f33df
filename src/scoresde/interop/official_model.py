"""The network and the score model of an official score_sde_pytorch config (Song et al. 2021).

**The config** is an official config name (``"vp/cifar10_ddpmpp_continuous"``: one of the 39 in
:data:`~scoresde.interop.official_configs.OFFICIAL_CONFIGS`), a dict with its ``model``, ``data`` and
``training`` sections (e.g. ``config.to_dict()`` of the official ``ml_collections`` config, or the
fixtures' ``config.json``), or the ``ConfigDict`` itself. Fields are read as the official code reads them:
``model.fourier_scale`` only for a Fourier embedding, the values of its ``default_*_configs.py`` where a
field is missing (``training.continuous=True``, ``data.centered=False``, ``data.num_channels=3``,
``model.embedding_type='fourier'``, ``model.sigma_min=0.01``, ``model.beta_min=0.1``, ``model.beta_max=20``),
``model.conditional=True`` when absent (every official config sets it; all but one to True); any other
field it needs and lacks raises a ValueError naming it. The SDE is built from ``model.sigma_*``,
``model.beta_*`` and ``model.num_scales`` as the official ``run_lib`` does (an ``sde`` section is used only
for a field the model section lacks). NCSN / NCSNv2 (``model.name`` ``ncsn``, ``ncsnv2_*``) are refused
before any other field is read: the official code itself cannot build them.

**Score conventions** (the official ``get_score_fn``):

| official SDE, training | network input for time t | score |
|---|---|---|
| VE, continuous | σ(t), in t's dtype | the output (divided by σ inside with ``scale_by_sigma``) |
| VE, discrete | index round((1 − t)(N − 1)), int64; 0 is σ_max | the output (÷ ``sigmas[index]``: ``scale_by_sigma``) |
| VP, continuous / sub-VP (any) | 999 t | −ε̂ / σ(t) |
| VP, discrete | t (N − 1) (float) | −ε̂ / sqrt(1 − ᾱ_⌊t(N−1)⌋) |

The division by ``sigmas[index]`` (official NCSN++ with a sinusoidal embedding, and the official DDPM
U-Net) is :class:`SigmaIndexScaling` around the network. The official code divides by its float64 σ table
and so returns float64; here the quotient is rounded to the network's dtype (a float32 rounding, ≤ 6e-8
relative), so that samplers keep the dtype of x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from scoresde._checks import append_dims
from scoresde.interop.official_configs import official_config
from scoresde.nn.ddpm_unet import DDPMUNet
from scoresde.nn.unet import ScoreUNet
from scoresde.score import ScoreModel
from scoresde.sde import VESDE, VPSDE, SubVPSDE

__all__ = ["resolve_official_config", "official_network_kwargs", "official_network", "official_score_model",
           "SigmaIndexScaling", "SigmaIndexLabels", "OfficialSigmaLabels", "config_field", "model_name",
           "official_sigmas"]

_UNBUILDABLE = {
    "ncsn": "NCSN (Song & Ermon 2019; configs/ve/ncsn/*)",
    "ncsnv2_64": "NCSNv2 (Song & Ermon 2020; configs/ve/ncsnv2/*)",
    "ncsnv2_128": "NCSNv2 (Song & Ermon 2020; configs/ve/ncsnv2/*)",
    "ncsnv2_256": "NCSNv2 (Song & Ermon 2020; configs/ve/ncsnv2/*)",
}
_SUPPORTED = ("ncsnpp", "ddpm")
# Defaults of the official configs/default_*_configs.py (identical in all of them), and conditional=True.
_DEFAULTS = {("training", "continuous"): True, ("data", "centered"): False, ("data", "num_channels"): 3,
             ("model", "embedding_type"): "fourier", ("model", "sigma_min"): 0.01, ("model", "beta_min"): 0.1,
             ("model", "beta_max"): 20.0, ("model", "conditional"): True}
_REQUIRED = object()


# ----------------------------------------------------------------------------- reading a config
def resolve_official_config(config) -> Mapping:
    """The config as a mapping: an official config name, a dict, or an object with ``to_dict()``
    (the official ``ml_collections.ConfigDict``)."""
    if isinstance(config, str):
        return official_config(config)
    if not isinstance(config, Mapping) and callable(getattr(config, "to_dict", None)):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be an official config name (str), a dict or an ml_collections ConfigDict, "
                        f"got {type(config).__name__}")
    return config


def _section(config: Mapping, name: str) -> Mapping:
    sec = config.get(name)
    if sec is None:
        return {}
    if not isinstance(sec, Mapping):
        raise ValueError(f"official config section {name!r} must be a dict, got {type(sec).__name__}")
    return sec


def config_field(config: Mapping, section: str, key: str, default=_REQUIRED):
    sec = _section(config, section)
    if key in sec:
        return sec[key]
    default = _DEFAULTS.get((section, key), default)
    if default is _REQUIRED:
        raise ValueError(f"official config lacks {section}.{key}, which the official code reads for this model "
                         "and has no default for (every official config sets it; load by name, e.g. "
                         "'vp/cifar10_ddpmpp_continuous', to use the official values)")
    return default


def _sde_field(config: Mapping, key: str):
    """``model.<key>`` as the official run_lib reads it; an ``sde`` section only fills a missing field."""
    if key in _section(config, "model"):
        return _section(config, "model")[key]
    if key in _section(config, "sde"):
        return _section(config, "sde")[key]
    return config_field(config, "model", key)


def model_name(config: Mapping) -> str:
    model = config.get("model")
    if not isinstance(model, Mapping) or "name" not in model:
        raise ValueError("official config must have a 'model' section with a 'name' "
                         f"({' or '.join(map(repr, _SUPPORTED))}), got {type(model).__name__}")
    name = model["name"]
    if name in _UNBUILDABLE:
        raise ValueError(f"official model {name!r} ({_UNBUILDABLE[name]}) cannot be built by the official "
                         "score_sde_pytorch code itself (its configs lack data.channels and its layers fail to "
                         "construct or to run), and no PyTorch checkpoint of it exists; scoresde's own NCSN is "
                         "the 'ncsn_cifar10' preset (RefineNet) with sample_annealed_langevin")
    if name not in _SUPPORTED:
        raise ValueError(f"official model {name!r} is not supported; supported: {', '.join(map(repr, _SUPPORTED))}")
    return name


# ----------------------------------------------------------------------------- config → network
def official_network_kwargs(config) -> tuple[type, dict]:
    """``(network class, keyword arguments)`` of our network equal to the official config's network
    (before :class:`SigmaIndexScaling`, which :func:`official_network` adds where the config needs it)."""
    config = resolve_official_config(config)
    name = model_name(config)

    def f(key, section="model"):
        return config_field(config, section, key)

    kwargs = dict(image_size=f("image_size", "data"), in_channels=f("num_channels", "data"), nf=f("nf"),
                  ch_mult=tuple(f("ch_mult")), num_res_blocks=f("num_res_blocks"),
                  attn_resolutions=tuple(f("attn_resolutions")), dropout=f("dropout"),
                  resamp_with_conv=f("resamp_with_conv"), centered=f("centered", "data"),
                  conditional=bool(f("conditional")))
    act = config_field(config, "model", "nonlinearity", "swish")
    if str(act).lower() != "swish":
        raise ValueError(f"model.nonlinearity must be 'swish' (SiLU, as in every official NCSN++ / DDPM config), "
                         f"got {act!r}")
    if name == "ddpm":
        return DDPMUNet, kwargs
    embedding = f("embedding_type").lower()
    if embedding == "fourier":
        if not config_field(config, "training", "continuous"):
            raise ValueError("model.embedding_type='fourier' with training.continuous=False: the official NCSN++ "
                             "refuses it ('Fourier features are only used for continuous training')")
        kwargs["fourier_scale"] = float(f("fourier_scale"))
    kwargs.update(embedding_type=embedding, resblock_type=f("resblock_type").lower(), fir=f("fir"),
                  fir_kernel=tuple(f("fir_kernel")), progressive=f("progressive").lower(),
                  progressive_input=f("progressive_input").lower(),
                  progressive_combine=f("progressive_combine").lower(), skip_rescale=f("skip_rescale"),
                  init_scale=f("init_scale"),
                  scale_by_sigma=bool(f("scale_by_sigma")) and embedding == "fourier")
    return ScoreUNet, kwargs


def _sigma_index_scaled(config: Mapping) -> bool:
    """Does the official network divide its output by ``sigmas[noise_cond]`` (scale_by_sigma without the
    σ input of a Fourier embedding)?"""
    if not config_field(config, "model", "scale_by_sigma"):
        return False
    return model_name(config) == "ddpm" or config_field(config, "model", "embedding_type").lower() != "fourier"


def official_sigmas(config: Mapping) -> Tensor:
    """The official ``sigmas`` table (models/utils.get_sigmas): N geometric levels from σ_max down to σ_min."""
    sigma_min, sigma_max, n = _sde_field(config, "sigma_min"), _sde_field(config, "sigma_max"), \
        _sde_field(config, "num_scales")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


class SigmaIndexScaling(nn.Module):
    """``net(x, index) / sigmas[index]``: the official ``scale_by_sigma`` of networks whose input is a
    σ-index (NCSN++ with a sinusoidal embedding, the DDPM U-Net); ``sigmas`` is the official float64 table
    (index 0 = σ_max). The quotient is formed in float64 and rounded to the network output's dtype."""

    def __init__(self, net: nn.Module, sigmas: Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float64))

    def forward(self, x: Tensor, noise_cond: Tensor, *args) -> Tensor:
        out = self.net(x, noise_cond, *args)
        sigma = self.sigmas[noise_cond.long()]
        return (out.double() / append_dims(sigma, out.ndim)).to(out.dtype)


def official_network(config) -> nn.Module:
    """Our network for an official config (name or dict), untrained; it has the official parameter count
    (for ``conditional=False``, less the unused ``Dense_0`` weights: see the module docstring)."""
    config = resolve_official_config(config)
    cls, kwargs = official_network_kwargs(config)
    net = cls(**kwargs)
    return SigmaIndexScaling(net, official_sigmas(config)) if _sigma_index_scaled(config) else net


class OfficialSigmaLabels:
    """The official continuous-VE network input: σ(t) = σ_min (σ_max/σ_min)^t computed in t's dtype, exactly
    as the official ``VESDE.marginal_prob`` does. (:class:`~scoresde.score.ScoreModel`'s ``"sigma"`` rule
    rounds a float64 σ(t) instead, which can differ by an ulp; the Fourier features of log σ amplify that to
    ~1e-5 relative in the 1024-px networks, so the import uses the official expression.)"""

    def __init__(self, sigma_min: float, sigma_max: float):
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def __call__(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def __repr__(self) -> str:
        return f"OfficialSigmaLabels(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class SigmaIndexLabels:
    """The official discrete-VE network input: t ↦ round((T − t)(N − 1)) as int64, so t = 1 gives index 0
    (σ_max) and t = 0 index N − 1 (σ_min) (official ``get_score_fn``, VE, ``continuous=False``)."""

    def __init__(self, num_scales: int, T: float = 1.0):
        self.num_scales, self.T = int(num_scales), float(T)

    def __call__(self, t: Tensor) -> Tensor:
        return torch.round((self.T - t) * (self.num_scales - 1)).long()

    def __repr__(self) -> str:
        return f"SigmaIndexLabels(num_scales={self.num_scales})"


def official_score_model(net: nn.Module, config) -> tuple[ScoreModel, object]:
    """Pair ``net`` with the SDE and score convention of an official config; returns ``(ScoreModel, sde)``."""
    config = resolve_official_config(config)
    model_name(config)  # NCSN / NCSNv2 refused first, as everywhere
    sde_name = config_field(config, "training", "sde")
    continuous = config_field(config, "training", "continuous")
    name = str(sde_name).lower()
    if name == "vesde":
        sde = VESDE(_sde_field(config, "sigma_min"), _sde_field(config, "sigma_max"))
        if continuous:
            return ScoreModel(net, sde, "score", OfficialSigmaLabels(sde.sigma_min, sde.sigma_max)), sde
        return ScoreModel(net, sde, "score", SigmaIndexLabels(_sde_field(config, "num_scales"), sde.T)), sde
    if name not in ("vpsde", "subvpsde"):
        raise ValueError(f"training.sde must be 'vesde', 'vpsde' or 'subvpsde', got {sde_name!r}")
    beta_min, beta_max = _sde_field(config, "beta_min"), _sde_field(config, "beta_max")
    if name == "subvpsde":  # the official get_score_fn ignores `continuous` for sub-VP
        sde = SubVPSDE(beta_min, beta_max)
        return ScoreModel(net, sde, "eps", "999t"), sde
    sde = VPSDE(beta_min, beta_max)
    if continuous:
        return ScoreModel(net, sde, "eps", "999t"), sde
    n = _sde_field(config, "num_scales")
    return ScoreModel(net, sde, "eps", "discrete_index", discrete_steps=n), sde
