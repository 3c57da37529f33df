"""Import of checkpoints written by the official score_sde_pytorch code (Song et al. 2021).

``load_official_checkpoint(path, config)`` reads a ``checkpoint.pth`` with ``torch.load(weights_only=True)``
(numpy's scalar type allow-listed: the official training loop stores its learning rate as a numpy float),
builds the matching :class:`~scoresde.nn.unet.ScoreUNet` / :class:`~scoresde.nn.ddpm_unet.DDPMUNet` from
the official config (its dict form, e.g. a ``config.json`` with ``model``, ``data``, ``training`` and ``sde``
sections), maps the weights and loads them strictly, and returns ``(ScoreModel, sde)``.

Weight mapping. The official networks keep their layers in one flat ``all_modules`` list in construction
order; our U-Net builds its named blocks in the same order, so the i-th official module is the i-th entry
of :func:`official_module_order`. Within a module, official sub-layer names map to ours
(``GroupNorm_0 → norm0``, ``NIN_1 → k`` …). ``NIN`` weights are stored as ``[in, out]`` matrices and
become 1×1 conv weights ``W.T[:, :, None, None]``. The ``module.`` prefix of ``DataParallel`` is
removed; the ``module.sigmas`` buffer (a σ ladder our networks do not use) is knowingly dropped. The EMA
weights are a positional list over the trainable parameters in stored key order (the frozen Fourier
``W`` is not in it and is taken from the model weights); count and shapes are checked.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from scoresde.nn.ddpm_unet import DDPMUNet
from scoresde.nn.embeddings import GaussianFourierEmbedding
from scoresde.nn.layers import AttentionBlock, Combine, Downsample, ResBlock, Upsample
from scoresde.nn.unet import ScoreUNet

__all__ = ["load_official_checkpoint", "official_network", "official_score_model", "convert_official_state_dict",
           "official_module_order", "torch_load_official",
           "ema_official_state_dict"]

_SUBLAYERS = {
    ResBlock: {"GroupNorm_0": "norm0", "Conv_0": "conv0", "Dense_0": "emb_proj", "GroupNorm_1": "norm1",
               "Conv_1": "conv1", "Conv_2": "skip", "NIN_0": "skip"},
    AttentionBlock: {"GroupNorm_0": "norm", "NIN_0": "q", "NIN_1": "k", "NIN_2": "v", "NIN_3": "proj"},
    Downsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Upsample: {"Conv_0": "conv", "Conv2d_0": "conv"},
    Combine: {"Conv_0": "conv"},
}
_DROPPED = ("sigmas",)


# ----------------------------------------------------------------------------- config → network
def _section(config: dict, name: str) -> dict:
    if name not in config or not isinstance(config[name], dict):
        raise ValueError(f"official config must have a '{name}' section (dict), got keys {sorted(config)}")
    return config[name]


def official_network(config: dict) -> ScoreUNet:
    """Build our network for an official config dict (``model.name`` 'ncsnpp' or 'ddpm')."""
    model, data = _section(config, "model"), _section(config, "data")
    common = dict(image_size=data["image_size"], in_channels=data["num_channels"], nf=model["nf"],
                  ch_mult=tuple(model["ch_mult"]), num_res_blocks=model["num_res_blocks"],
                  attn_resolutions=tuple(model["attn_resolutions"]), dropout=model["dropout"],
                  resamp_with_conv=model["resamp_with_conv"], centered=data["centered"])
    if not model.get("conditional", True):
        raise ValueError("official configs with model.conditional=False are not supported")
    if model["name"] == "ddpm":
        return DDPMUNet(**common)
    if model["name"] != "ncsnpp":
        raise ValueError(f"official model {model['name']!r} is not supported; supported: 'ncsnpp', 'ddpm'")
    if model.get("conv_size", 3) != 3 or model.get("attention_type", "ddpm") != "ddpm":
        raise ValueError("only conv_size=3 and attention_type='ddpm' exist in the official NCSN++")
    return ScoreUNet(**common, embedding_type=model["embedding_type"], fourier_scale=model["fourier_scale"],
                     resblock_type=model["resblock_type"], fir=model["fir"], fir_kernel=tuple(model["fir_kernel"]),
                     progressive=model["progressive"], progressive_input=model["progressive_input"],
                     progressive_combine=model["progressive_combine"], skip_rescale=model["skip_rescale"],
                     scale_by_sigma=model["scale_by_sigma"], init_scale=model["init_scale"])


def official_score_model(net: nn.Module, config: dict):
    """Pair ``net`` with the SDE and score convention of an official config; returns (ScoreModel, sde)."""
    from scoresde import sde as sde_lib
    from scoresde.score import ScoreModel

    training, sde_cfg = _section(config, "training"), config.get("sde") or {}
    name, continuous = training["sde"].lower(), training.get("continuous", True)
    model = config["model"]
    if name == "vesde":
        if not continuous:
            raise ValueError("discrete VE checkpoints (integer σ-index labels) are not supported; "
                             "continuous VE, VP, sub-VP and discrete VP are")
        sde = sde_lib.VESDE(sde_cfg.get("sigma_min", model["sigma_min"]), sde_cfg.get("sigma_max", model["sigma_max"]))
        return ScoreModel(net, sde, "score", "sigma"), sde
    beta_min, beta_max = sde_cfg.get("beta_min", model["beta_min"]), sde_cfg.get("beta_max", model["beta_max"])
    if name == "vpsde":
        sde = sde_lib.VPSDE(beta_min, beta_max)
        if continuous:
            return ScoreModel(net, sde, "eps", "999t"), sde
        n = sde_cfg.get("num_scales", model["num_scales"])
        return ScoreModel(net, sde, "eps", "discrete_index", discrete_steps=n), sde
    if name == "subvpsde":  # the official code ignores `continuous` for sub-VP
        sde = sde_lib.SubVPSDE(beta_min, beta_max)
        return ScoreModel(net, sde, "eps", "999t"), sde
    raise ValueError(f"unknown official SDE {training['sde']!r}; expected 'vesde', 'vpsde' or 'subvpsde'")


# ----------------------------------------------------------------------------- weights
def official_module_order(net: ScoreUNet) -> list[tuple[str, nn.Module]]:
    """Our modules (prefix, module) in the order of the official ``all_modules`` list."""
    order = []
    if isinstance(net.embed, GaussianFourierEmbedding):
        order.append(("embed", net.embed))
    order += [("emb_dense0", net.emb_dense0), ("emb_dense1", net.emb_dense1)]
    for group in ("enc", "mid", "dec"):
        order += [(f"{group}.{k}", m) for k, m in getattr(net, group).items()]
    if hasattr(net, "out_norm"):
        order += [("out_norm", net.out_norm), ("out_conv", net.out_conv)]
    return order


def _convert_key(rest: str, value: Tensor, prefix: str, module: nn.Module) -> tuple[str, Tensor]:
    names = _SUBLAYERS.get(type(module))
    if names is None:  # a plain Linear / Conv2d / GroupNorm / Fourier layer: same parameter names
        return f"{prefix}.{rest}", value
    sub, _, param = rest.partition(".")
    if sub not in names:
        raise KeyError(rest)
    if sub.startswith("NIN"):  # [in, out] matrix → 1×1 conv [out, in, 1, 1]
        param = {"W": "weight", "b": "bias"}[param]
        value = value.t()[:, :, None, None] if param == "weight" else value
    return f"{prefix}.{names[sub]}.{param}", value


def convert_official_state_dict(net: ScoreUNet, official: dict[str, Tensor]) -> OrderedDict:
    """Map an official model state dict (with or without ``module.``) onto ``net``'s keys, in stored order.

    Raises ValueError listing every official key that has no counterpart, and every parameter of ``net``
    left without a value or with a mismatched shape.
    """
    order = official_module_order(net)
    ours, unexpected = OrderedDict(), []
    for key, value in official.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k in _DROPPED:
            continue
        parts = k.split(".", 2)
        try:
            if parts[0] != "all_modules" or len(parts) < 3:
                raise KeyError(k)
            prefix, module = order[int(parts[1])]
            new_key, new_value = _convert_key(parts[2], value, prefix, module)
        except (KeyError, IndexError, ValueError):
            unexpected.append(key)
            continue
        ours[new_key] = new_value
    target = net.state_dict()
    missing = [k for k in target if k not in ours]
    unexpected += [k for k in ours if k not in target]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(target[k].shape)}"
              for k, v in ours.items() if k in target and v.shape != target[k].shape]
    if missing or unexpected or shapes:
        raise ValueError("official checkpoint does not match the configured network:\n"
                         f"  missing ({len(missing)}): {missing}\n  unexpected ({len(unexpected)}): {unexpected}\n"
                         f"  shape mismatches ({len(shapes)}): {shapes}")
    return ours


def ema_official_state_dict(net: ScoreUNet, official: dict[str, Tensor], shadow: list[Tensor]) -> OrderedDict:
    """The official model state dict with its trainable entries replaced, in stored key order, by the EMA
    ``shadow`` list (frozen parameters and buffers keep the model values). Count and shapes are checked."""
    params = dict(net.named_parameters())
    ours = convert_official_state_dict(net, official)  # validates keys; same order as `official` minus drops
    kept = [k for k in official if (k[len("module."):] if k.startswith("module.") else k) not in _DROPPED]
    trainable = [k for k, mine in zip(kept, ours, strict=True) if params[mine].requires_grad]
    if len(shadow) != len(trainable):
        raise ValueError(f"EMA shadow list has {len(shadow)} entries but the network has {len(trainable)} "
                         "trainable parameters")
    out = OrderedDict(official)
    for k, s in zip(trainable, shadow, strict=True):
        if s.shape != official[k].shape:
            raise ValueError(f"EMA entry for {k} has shape {tuple(s.shape)}, expected {tuple(official[k].shape)}")
        out[k] = s
    return out


def torch_load_official(path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with numpy scalars allow-listed (under both numpy 1 and 2 spellings)."""
    import numpy as np

    mod = getattr(np, "_core", None) or np.core
    scalar = mod.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               np.dtype, type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_official_checkpoint(path, config: dict, *, weights: str = "ema", map_location="cpu"):
    """Load an official score_sde_pytorch checkpoint; returns ``(ScoreModel, sde)`` in eval mode.

    ``config`` is the official config as a dict (``model``, ``data``, ``training``, optional ``sde``);
    ``weights`` is ``"ema"`` (the averaged weights the paper samples with) or ``"model"``.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    ckpt = torch_load_official(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not an official checkpoint (a dict with 'model', 'ema', 'optimizer', 'step')")
    net = official_network(config)
    official = ckpt["model"]
    if weights == "ema":
        ema = ckpt.get("ema")
        if not isinstance(ema, dict) or "shadow_params" not in ema:
            raise ValueError(f"{path} has no EMA entry with 'shadow_params'; use weights='model'")
        official = ema_official_state_dict(net, official, list(ema["shadow_params"]))
    net.load_state_dict(convert_official_state_dict(net, official), strict=True)
    score_model, sde = official_score_model(net, config)
    return score_model.eval(), sde
