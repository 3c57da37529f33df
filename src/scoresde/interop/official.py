"""Import of checkpoints written by the official score_sde_pytorch code (Song et al. 2021).

``load_official_checkpoint(path, config)`` reads a ``checkpoint.pth`` with ``torch.load(weights_only=True)``
(numpy's scalar type allow-listed: the official training loop stores its learning rate as a numpy float),
builds the network of the official config, maps the weights onto it by block name, loads them strictly,
and returns ``(ScoreModel, sde)``: a ``score_fn(x, t)`` over continuous t and the SDE it belongs to.

The config, and the network and score conventions it implies, are read by
:mod:`scoresde.interop.official_model`; this module maps the weights.

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

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from scoresde.interop.official_model import (
    OfficialSigmaLabels,
    SigmaIndexLabels,
    SigmaIndexScaling,
    config_field,
    model_name,
    official_network,
    official_network_kwargs,
    official_score_model,
    official_sigmas,
    resolve_official_config,
)
from scoresde.nn.layers import AttentionBlock, Combine, Downsample, ResBlock, Upsample

__all__ = ["load_official_checkpoint", "resolve_official_config", "official_network_kwargs", "official_network",
           "official_score_model", "official_layout", "convert_official_state_dict", "ema_official_state_dict",
           "torch_load_official", "SigmaIndexScaling", "SigmaIndexLabels", "OfficialSigmaLabels"]

_SUBLAYERS = {
    ResBlock: {"GroupNorm_0": "norm0", "Conv_0": "conv0", "Dense_0": "emb_proj", "GroupNorm_1": "norm1",
               "Conv_1": "conv1", "Conv_2": "skip", "NIN_0": "skip"},
    AttentionBlock: {"GroupNorm_0": "norm", "NIN_0": "q", "NIN_1": "k", "NIN_2": "v", "NIN_3": "proj"},
    Downsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Upsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Combine: {"Conv_0": "conv"},
}


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
    fourier = model_name(config) == "ncsnpp" and config_field(config, "model", "embedding_type").lower() == "fourier"
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
    expected = official_sigmas(config)
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
