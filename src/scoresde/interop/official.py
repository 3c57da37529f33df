"""Import of checkpoints written by the official score_sde_pytorch code (Song et al. 2021).

``load_official_checkpoint(path, config)`` reads a ``checkpoint.pth`` with ``torch.load(weights_only=True)``
(numpy's scalar type allow-listed: the official training loop stores its learning rate as a numpy float),
builds the network of the official config, maps the weights onto it by block name, loads them strictly,
and returns ``(ScoreModel, sde)``: a ``score_fn(x, t)`` over continuous t and the SDE it belongs to.

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

**Weights.** Official networks keep their layers in one flat ``all_modules`` list; :func:`official_layout`
names each index after our block (``enc.16x16_block0``, ``dec.8x8_up`` ...) by walking the official
construction order of ``models/ncsnpp.py`` / ``models/ddpm.py`` for the config, and weights are looked up
by that name. Within a block, official sub-layer names map to ours (``GroupNorm_0 → norm0``, ``NIN_1 → k`` …);
``NIN`` weights are ``[in, out]`` matrices and become 1×1 conv weights ``W.T[:, :, None, None]``. The
``module.`` prefix of ``DataParallel`` is removed. Official keys without a counterpart are dropped knowingly
and never silently: the ``sigmas`` buffer (checked against the config's σ ladder, which it must equal), and,
for ``conditional=False``, the ``Dense_0`` projections of the residual blocks (and the Fourier projection
of an NCSN++) that the official forward never uses — their shapes are checked, and they are what makes our
unconditional network smaller than the official one (by 4·nf·C + C per residual block of C channels).
EMA weights are a positional list over the official trainable parameters in stored key order (without the
``sigmas`` buffer and the frozen Fourier ``W``, which an EMA network takes from the model weights); count
and shapes are checked, then the same mapping applies. Everything else (a missing, unexpected or mis-shaped
key) raises a ValueError listing the keys.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from scoresde._checks import append_dims
from scoresde.interop.official_configs import official_config
from scoresde.nn.ddpm_unet import DDPMUNet
from scoresde.nn.layers import AttentionBlock, Combine, Downsample, ResBlock, Upsample
from scoresde.nn.unet import ScoreUNet
from scoresde.score import ScoreModel
from scoresde.sde import VESDE, VPSDE, SubVPSDE

__all__ = ["load_official_checkpoint", "resolve_official_config", "official_network_kwargs", "official_network",
           "official_score_model", "official_layout", "convert_official_state_dict", "ema_official_state_dict",
           "torch_load_official", "SigmaIndexScaling", "SigmaIndexLabels", "OfficialSigmaLabels"]

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

_SUBLAYERS = {
    ResBlock: {"GroupNorm_0": "norm0", "Conv_0": "conv0", "Dense_0": "emb_proj", "GroupNorm_1": "norm1",
               "Conv_1": "conv1", "Conv_2": "skip", "NIN_0": "skip"},
    AttentionBlock: {"GroupNorm_0": "norm", "NIN_0": "q", "NIN_1": "k", "NIN_2": "v", "NIN_3": "proj"},
    Downsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Upsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Combine: {"Conv_0": "conv"},
}


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


def _field(config: Mapping, section: str, key: str, default=_REQUIRED):
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
    return _field(config, "model", key)


def _model_name(config: Mapping) -> str:
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
    name = _model_name(config)

    def f(key, section="model"):
        return _field(config, section, key)

    kwargs = dict(image_size=f("image_size", "data"), in_channels=f("num_channels", "data"), nf=f("nf"),
                  ch_mult=tuple(f("ch_mult")), num_res_blocks=f("num_res_blocks"),
                  attn_resolutions=tuple(f("attn_resolutions")), dropout=f("dropout"),
                  resamp_with_conv=f("resamp_with_conv"), centered=f("centered", "data"),
                  conditional=bool(f("conditional")))
    act = _field(config, "model", "nonlinearity", "swish")
    if str(act).lower() != "swish":
        raise ValueError(f"model.nonlinearity must be 'swish' (SiLU, as in every official NCSN++ / DDPM config), "
                         f"got {act!r}")
    if name == "ddpm":
        return DDPMUNet, kwargs
    embedding = f("embedding_type").lower()
    if embedding == "fourier":
        if not _field(config, "training", "continuous"):
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
    if not _field(config, "model", "scale_by_sigma"):
        return False
    return _model_name(config) == "ddpm" or _field(config, "model", "embedding_type").lower() != "fourier"


def _official_sigmas(config: Mapping) -> Tensor:
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
    return SigmaIndexScaling(net, _official_sigmas(config)) if _sigma_index_scaled(config) else net


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
    _model_name(config)  # NCSN / NCSNv2 refused first, as everywhere
    sde_name = _field(config, "training", "sde")
    continuous = _field(config, "training", "continuous")
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


# ----------------------------------------------------------------------------- weights
def _tag(res: int) -> str:
    return f"{res}x{res}"


def official_layout(config) -> list[str | None]:
    """Our block name for each index of the official ``all_modules`` list, in the official construction
    order (models/ncsnpp.py, models/ddpm.py); None marks an official module our network does not have
    because the official forward never uses it (the Fourier projection of an unconditional NCSN++)."""
    config = resolve_official_config(config)
    _, kw = official_network_kwargs(config)
    progressive, progressive_input = kw.get("progressive", "none"), kw.get("progressive_input", "none")
    levels, nrb, attn = len(kw["ch_mult"]), kw["num_res_blocks"], kw["attn_resolutions"]
    res = [kw["image_size"] // 2**i for i in range(levels)]
    names: list[str | None] = []
    if kw.get("embedding_type") == "fourier":
        names.append("embed" if kw["conditional"] else None)
    if kw["conditional"]:
        names += ["emb_dense0", "emb_dense1"]
    names.append(f"enc.{_tag(res[0])}_conv")
    for level in range(levels):
        r = _tag(res[level])
        for i in range(nrb):
            names.append(f"enc.{r}_block{i}")
            if res[level] in attn:
                names.append(f"enc.{r}_attn{i}")
        if level != levels - 1:
            r = _tag(res[level + 1])
            names.append(f"enc.{r}_down")
            if progressive_input == "input_skip":
                names.append(f"enc.{r}_in_skip")
            elif progressive_input == "residual":
                names.append(f"enc.{r}_in_down")
    r = _tag(res[-1])
    names += [f"mid.{r}_block0", f"mid.{r}_attn0", f"mid.{r}_block1"]
    for level in reversed(range(levels)):
        r = _tag(res[level])
        names += [f"dec.{r}_block{i}" for i in range(nrb + 1)]
        if res[level] in attn:
            names.append(f"dec.{r}_attn")
        if progressive == "output_skip" or (progressive == "residual" and level == levels - 1):
            names += [f"dec.{r}_out_norm", f"dec.{r}_out_conv"]
        elif progressive == "residual":
            names.append(f"dec.{r}_out_up")
        if level:
            names.append(f"dec.{_tag(res[level - 1])}_up")
    if progressive != "output_skip":
        names += ["out_norm", "out_conv"]
    return names


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _frozen_or_buffer(key: str, config: Mapping) -> bool:
    """Official state-dict entries that are not in the EMA list: the ``sigmas`` buffer and the frozen
    Gaussian Fourier projection ``all_modules.0.W`` of an NCSN++ with a Fourier embedding."""
    k = _strip(key)
    fourier = _model_name(config) == "ncsnpp" and _field(config, "model", "embedding_type").lower() == "fourier"
    return k == "sigmas" or (fourier and k == "all_modules.0.W")


def _unwrap(net: nn.Module) -> nn.Module:
    return net.net if isinstance(net, SigmaIndexScaling) else net


def convert_official_state_dict(net: nn.Module, official: Mapping[str, Tensor], config) \
        -> tuple[OrderedDict, list[str]]:
    """Map an official model state dict (with or without ``module.``) onto ``net`` (from
    :func:`official_network`) by block name; returns ``(state_dict for net, official keys dropped knowingly)``.

    Raises ValueError listing every official key without a counterpart, every parameter of ``net`` left
    without a value, and every shape mismatch.
    """
    config = resolve_official_config(config)
    layout, target = official_layout(config), _unwrap(net)
    ours, unexpected, dropped, shapes = OrderedDict(), [], [], []
    for key, value in official.items():
        k = _strip(key)
        if k == "sigmas":
            dropped.append(key)
            continue
        parts = k.split(".", 2)
        if parts[0] != "all_modules" or len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= len(layout):
            unexpected.append(key)
            continue
        name, rest = layout[int(parts[1])], parts[2]
        if name is None:
            dropped.append(key)
            continue
        try:
            module = target.get_submodule(name)
        except AttributeError:
            unexpected.append(key)
            continue
        names = _SUBLAYERS.get(type(module))
        if names is None:  # a plain Linear / Conv2d / GroupNorm / Fourier layer: same parameter names
            ours[f"{name}.{rest}"] = value
            continue
        sub, _, param = rest.partition(".")
        if sub == "Dense_0" and isinstance(module, ResBlock) and module.emb_proj is None:
            # conditional=False: the official block keeps a projection of the (absent) embedding
            if value.shape[0] != module.conv0.out_channels:
                shapes.append(f"{key}: unused embedding projection with {value.shape[0]} outputs, block has "
                              f"{module.conv0.out_channels} channels")
            dropped.append(key)
            continue
        if sub not in names:
            unexpected.append(key)
            continue
        if sub.startswith("NIN"):  # [in, out] matrix → 1×1 conv [out, in, 1, 1]
            param = {"W": "weight", "b": "bias"}.get(param, param)
            value = value.t()[:, :, None, None] if param == "weight" else value
        ours[f"{name}.{names[sub]}.{param}"] = value
    mine = target.state_dict()
    missing = [k for k in mine if k not in ours]
    unexpected += [k for k in ours if k not in mine]
    shapes += [f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(mine[k].shape)}"
               for k, v in ours.items() if k in mine and v.shape != mine[k].shape]
    if missing or unexpected or shapes:
        raise ValueError("official checkpoint does not match the configured network:\n"
                         f"  missing ({len(missing)}): {missing}\n  unexpected ({len(unexpected)}): {unexpected}\n"
                         f"  shape mismatches ({len(shapes)}): {shapes}")
    return ours, dropped


def ema_official_state_dict(official: Mapping[str, Tensor], shadow: list[Tensor], config) -> OrderedDict:
    """The official model state dict with its trainable entries replaced, in stored key order, by the EMA
    ``shadow`` list (the ``sigmas`` buffer and the frozen Fourier ``W`` keep the model values). Count and
    shapes are checked (the official ``copy_to`` would silently zip a short list)."""
    config = resolve_official_config(config)
    trainable = [k for k in official if not _frozen_or_buffer(k, config)]
    if len(shadow) != len(trainable):
        raise ValueError(f"EMA shadow list has {len(shadow)} entries but the official network has {len(trainable)} "
                         "trainable parameters")
    out = OrderedDict(official)
    for k, s in zip(trainable, shadow, strict=True):
        if s.shape != official[k].shape:
            raise ValueError(f"EMA entry for {k} has shape {tuple(s.shape)}, expected {tuple(official[k].shape)}")
        out[k] = s
    return out


def _check_sigmas(official: Mapping[str, Tensor], config: Mapping, path) -> None:
    stored = next((v for k, v in official.items() if _strip(k) == "sigmas"), None)
    if stored is None:
        return
    expected = _official_sigmas(config)
    if stored.shape != expected.shape or not torch.allclose(stored.double().cpu(), expected, rtol=1e-6, atol=0):
        raise ValueError(f"{path}: the checkpoint's sigmas buffer ({stored.numel()} levels, {stored.max().item():g} "
                         f"down to {stored.min().item():g}) does not match the config's model.sigma_max, sigma_min, "
                         f"num_scales ({expected.numel()} levels, {expected[0].item():g} down to "
                         f"{expected[-1].item():g}): wrong config for this checkpoint?")


def torch_load_official(path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with numpy scalars allow-listed (under both numpy 1 and 2 spellings)."""
    mod = getattr(np, "_core", None) or np.core
    scalar = mod.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               np.dtype, type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_official_checkpoint(path, config, *, weights: str = "ema", map_location="cpu"):
    """Load an official score_sde_pytorch checkpoint; returns ``(ScoreModel, sde)`` in eval mode.

    ``config`` is an official config name such as ``"ve/cifar10_ncsnpp"`` (see
    :data:`~scoresde.interop.official_configs.OFFICIAL_CONFIGS`), a dict with its ``model``, ``data`` and
    ``training`` sections, or the official ``ml_collections`` config. ``weights`` is ``"ema"`` (the averaged
    weights the paper samples with) or ``"model"``. The returned model is a ``score_fn(x, t)`` over
    continuous t ∈ [0, 1] (data in the config's range: [0, 1] when ``data.centered`` is false).
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    config = resolve_official_config(config)
    net = official_network(config)  # refuses NCSN / NCSNv2 and incomplete configs before reading the file
    ckpt = torch_load_official(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not an official checkpoint (a dict with 'model', 'ema', 'optimizer', 'step')")
    official = ckpt["model"]
    _check_sigmas(official, config, path)
    if weights == "ema":
        ema = ckpt.get("ema")
        if not isinstance(ema, dict) or "shadow_params" not in ema:
            raise ValueError(f"{path} has no EMA entry with 'shadow_params'; use weights='model'")
        official = ema_official_state_dict(official, list(ema["shadow_params"]), config)
    state, _ = convert_official_state_dict(net, official, config)
    _unwrap(net).load_state_dict(state, strict=True)
    score_model, sde = official_score_model(net, config)
    if isinstance(map_location, (str, torch.device)):
        score_model.to(map_location)
    return score_model.eval(), sde
