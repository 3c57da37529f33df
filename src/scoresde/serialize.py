"""A :class:`~scoresde.score.ScoreModel` as a JSON-able dict and back: the network (preset + kwargs), the SDE
(class name + constructor parameters), the parameterisation, the noise conditioning and ``discrete_steps``.

Weights are not part of it: they go through ``state_dict``. :func:`scoresde.export_run` writes
:func:`model_config` next to the weights and :func:`scoresde.load_run` rebuilds with :func:`model_from_config`;
checkpoints record a user's SDE with :func:`sde_config`.
"""

from __future__ import annotations

import inspect

from scoresde.nn.presets import build_network
from scoresde.score import ScoreModel
from scoresde.sde import SDE, SDES

__all__ = ["model_config", "model_from_config", "sde_config", "sde_from_config", "sde_config_or_none", "describe_sde"]


def model_config(model: ScoreModel) -> dict:
    """``{"network", "sde", "parameterization", "noise_cond", "discrete_steps"}`` describing ``model``.

    Rebuild with :func:`model_from_config`; load the weights separately with ``load_state_dict``. Refused
    (ValueError) for a callable noise conditioning and for a network without a ``network_config`` (one not
    built by :func:`scoresde.nn.build_network`).
    """
    if callable(model.noise_cond_rule):
        raise ValueError("a ScoreModel with a callable noise_cond cannot be described by a config")
    net_cfg = getattr(model.net, "network_config", None)
    if net_cfg is None:
        raise ValueError(f"{type(model.net).__name__} carries no network_config; build it with "
                         "scoresde.nn.build_network(preset, **kwargs) to make it restorable")
    return {"network": dict(net_cfg), "sde": sde_config(model.sde), "parameterization": model.parameterization,
            "noise_cond": model.noise_cond_rule, "discrete_steps": model.discrete_steps}


def model_from_config(config: dict, sde: SDE | None = None) -> ScoreModel:
    """Rebuild a ScoreModel from :func:`model_config`'s dict (``sde=`` overrides the SDE, e.g. a user's own)."""
    missing = {"network", "sde", "parameterization", "noise_cond"} - set(config)
    if missing:
        raise ValueError(f"ScoreModel config lacks the keys {sorted(missing)}")
    net_cfg = config["network"]
    net = build_network(net_cfg["preset"], **net_cfg.get("kwargs", {}))
    sde = sde if sde is not None else sde_from_config(config["sde"])
    return ScoreModel(net, sde, config["parameterization"], config["noise_cond"],
                      discrete_steps=config.get("discrete_steps"))


def sde_config(sde: SDE) -> dict:
    """``{"class": name, "params": {...}}`` from the SDE's constructor parameters (read back as attributes)."""
    params = {}
    for name, p in inspect.signature(type(sde).__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(sde, name, getattr(sde, "_" + name, p.default))
        if not isinstance(value, (int, float, str, bool, type(None))):
            raise ValueError(f"cannot describe {type(sde).__name__}.{name}={value!r} in a config; "
                             "pass sde= to model_from_config instead")
        params[name] = value
    return {"class": type(sde).__name__, "params": params}


def sde_config_or_none(sde: SDE) -> dict | None:
    """:func:`sde_config`, or None when a constructor argument is not a plain value."""
    try:
        return sde_config(sde)
    except ValueError:
        return None


def describe_sde(sde: SDE) -> str:
    """``"VPSDE({'beta_min': 0.1, ...})"``: the class and :func:`sde_config`'s parameters, or the class name
    alone when a constructor argument is not a plain value."""
    cfg = sde_config_or_none(sde)
    return type(sde).__qualname__ if cfg is None else f"{type(sde).__qualname__}({cfg['params']})"


def sde_from_config(config: dict) -> SDE:
    """Rebuild a built-in SDE (``VESDE``, ``VPSDE``, ``SubVPSDE``) from :func:`sde_config`'s dict."""
    known = {cls.__name__: cls for cls in SDES.values()}
    name = config.get("class")
    if name not in known:
        raise ValueError(f"unknown SDE class {name!r}; built-in ones are {sorted(known)} "
                         "(pass sde= for your own)")
    return known[name](**config.get("params", {}))
