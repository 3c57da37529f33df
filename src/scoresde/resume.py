"""What identifies a training run, and what may change when it resumes.

A checkpoint records the run's configuration and, for the objects a user passed to
:func:`scoresde.train.train` (``sde=``, ``model=``, ``data=``), a description of each
(:func:`describe_user_objects`). Resuming (:func:`restore`) compares both with the run that resumes:
fields outside :data:`MAY_CHANGE_ON_RESUME` and user objects must match, unless the caller allows the
change, which is then written into the run's history.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import torch
from torch import Tensor, nn

from scoresde import checkpoint as ckpt
from scoresde import config as C
from scoresde.datastream import DataSource, Items, UserData
from scoresde.score import ScoreModel
from scoresde.sde import SDE
from scoresde.serialize import sde_config_or_none

__all__ = ["MAY_CHANGE_ON_RESUME", "config_differences", "describe_user_objects", "user_differences", "restore"]

# Config fields that may differ between a checkpoint and the run that resumes it: how long and how the run
# goes on, not what it learns. Everything else (data, model, sde, loss, optim, training.seed,
# training.batch_size) must match unless ``allow_config_change=True``. Bit-exact continuation further
# needs the same grad_accum, number of processes, device and amp.
MAY_CHANGE_ON_RESUME = {
    "training": {"steps", "log_every", "ckpt_every", "keep", "sample_every", "eval_every", "device", "amp",
                 "compile", "workdir", "grad_accum"},
    "sampling": "*",
    "eval": "*",
}


# --------------------------------------------------------------------------------------------- the config
def config_differences(old: dict, new: dict) -> dict:
    """``{"section.field": (old, new)}`` for the fields outside :data:`MAY_CHANGE_ON_RESUME` that differ.

    ``old`` (a checkpoint's config) is first completed with the current defaults, so a field added to the
    library after the checkpoint was written is not reported as a change.
    """
    with contextlib.suppress(C.ConfigError, TypeError):
        old = C.to_dict(C.from_dict(old))
    changes = {}
    for section in sorted(set(old) | set(new)):
        allowed = MAY_CHANGE_ON_RESUME.get(section, set())
        if allowed == "*":
            continue
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in allowed and a.get(key, "<absent>") != b.get(key, "<absent>"):
                changes[f"{section}.{key}"] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
    return changes


def may_change_text() -> str:
    """The fields of :data:`MAY_CHANGE_ON_RESUME`, as one line."""
    return ", ".join(f"{sec}.{keys}" if keys == "*" else ", ".join(f"{sec}.{k}" for k in sorted(keys))
                     for sec, keys in MAY_CHANGE_ON_RESUME.items())


# --------------------------------------------------------------------------------------------- the user's objects
def _qualname(obj) -> str:
    return type(obj).__qualname__


def _data_description(data) -> dict:
    if isinstance(data, DataSource):
        return {"kind": "DataSource", "levels": data.levels, "shape": [int(n) for n in data.shape],
                "test": None if data.test is None else len(data.test), "train": _data_description(data.train)}
    if isinstance(data, Tensor):
        flat = data.detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(flat.view(torch.uint8).numpy()).hexdigest()[:16]
        return {"kind": "tensor", "rows": int(data.shape[0]), "shape": [int(n) for n in data.shape[1:]],
                "dtype": str(data.dtype).replace("torch.", ""), "sha256_16": digest}
    item = Items(data)[0][0] if len(data) else None
    return {"kind": _qualname(data), "rows": len(data),
            "shape": None if item is None else [int(n) for n in getattr(item, "shape", ())]}


def describe_user_objects(sde: SDE | None = None, model: nn.Module | None = None,
                          data: UserData | None = None) -> dict:
    """What a checkpoint records about the objects passed to :func:`~scoresde.train.train` (None: built from
    the config).

    ``{"sde": {"class", "module", "sde_config"}, "model": {"class", "module", "network"}, "data": {...}}``;
    ``sde_config`` is :func:`~scoresde.serialize.sde_config` (None when a constructor argument is not a plain
    value), ``data`` its kind, number of rows, row shape, and for a tensor its dtype and a SHA-256 prefix.
    Resuming compares the classes by name (not module: a script's ``__main__`` is a notebook's module).
    """
    out = {"sde": None, "model": None, "data": None}
    if sde is not None:
        out["sde"] = {"class": _qualname(sde), "module": type(sde).__module__, "sde_config": sde_config_or_none(sde)}
    if model is not None:
        net = getattr(model, "net", None) if isinstance(model, ScoreModel) else None
        out["model"] = {"class": _qualname(model), "module": type(model).__module__,
                        "network": None if net is None else _qualname(net)}
    if data is not None:
        out["data"] = _data_description(data)
    return out


def user_differences(old: dict | None, new: dict) -> dict:
    """``{"user.sde": (old, new), ...}`` where the user objects of a checkpoint (``old``) and of a resuming run
    differ; a checkpoint without the record (written before it existed) is not compared."""
    if old is None:
        return {}
    changes = {}
    for key in ("sde", "model", "data"):
        a, b = _comparable(key, old.get(key)), _comparable(key, new.get(key))
        if a != b:
            changes[f"user.{key}"] = (_user_text(key, old.get(key)), _user_text(key, new.get(key)))
    return changes


def _comparable(key: str, entry):
    if entry is None:
        return None
    if key == "data":
        return entry
    return {k: v for k, v in entry.items() if k != "module"}


def _user_text(key: str, entry) -> str:
    if entry is None:
        return f"built from the config ({key} section)"
    if key == "sde":
        cfg = entry.get("sde_config")
        return f"{entry['class']}{'' if cfg is None else '(' + repr(cfg['params']) + ')'} (your own)"
    if key == "model":
        net = entry.get("network")
        return f"{entry['class']}{'' if net is None else '(' + net + ')'} (your own)"
    return ", ".join(f"{k}={v}" for k, v in entry.items()) + " (your own)"


# --------------------------------------------------------------------------------------------- resuming
def restore(workdir: str, cfg: C.Config, user: dict, raw_model: nn.Module, ema, optimizer, *, resume: bool,
            allow_config_change: bool, device, say) -> tuple[int, list, dict]:
    """(step, recent losses, config changes) of the newest readable checkpoint ((0, [], {}) when there is none),
    whose weights, EMA and optimiser state are loaded into ``raw_model``, ``ema`` and ``optimizer``.

    Without ``resume`` an existing checkpoint is an error, and so is an unreadable one with it (nothing is
    wiped); the checkpoint's configuration must match ``cfg`` outside :data:`MAY_CHANGE_ON_RESUME` unless
    ``allow_config_change``, and so must the user-supplied objects (``user``, see :func:`describe_user_objects`).
    """
    existing = ckpt.list_checkpoints(workdir)
    if existing and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints ({os.path.basename(existing[-1])}, ...): "
                              "resume the run (--resume) or pick a new workdir")
    found = ckpt.load_latest(workdir, map_location=device)  # raises when files exist but none is readable
    if found is None:
        return 0, [], {}
    state, path = found
    changes = config_differences(state["config"], C.to_dict(cfg))
    changes.update(user_differences(state.get("user_objects"), user))
    if changes and not allow_config_change:
        shown = {k: (v if k.startswith("user.") else tuple(map(repr, v))) for k, v in changes.items()}
        listing = "; ".join(f"{k}: {old} (checkpoint) -> {new} (now)" for k, (old, new) in shown.items())
        hint = (" A run trained with your own objects resumes with the same ones: pass train(cfg, sde=..., "
                "model=..., data=...) as the first run did." if any(k.startswith("user.") for k in changes) else "")
        raise C.ConfigError(
            f"cannot resume from {path}: it was trained with a different configuration ({listing}).{hint} Resume "
            "with the checkpoint's values, or pass allow_config_change=True (scoresde train --allow-config-change) "
            f"to continue this run's history with the new ones. Fields that may always change: {may_change_text()}")
    try:
        raw_model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    except RuntimeError as err:
        raise C.ConfigError(f"cannot resume from {path}: its weights do not fit this architecture ({err})") from err
    optimizer.load_state_dict(state["optimizer"])
    say(f"resumed from {path} at step {state['step']}")
    if changes:
        say(f"warning: configuration changed on resume (allow_config_change): {changes}")
    recent = [float(v) for v in state.get("recent_losses", [])]
    return int(state["step"]), recent, changes
