"""One call from a training run (or an exported model) back to a model: :func:`load_run`, :func:`export_run`.

A *run directory* is what :func:`scoresde.train.train` writes: ``ckpt_<step>.pt`` checkpoints (plain dicts of
state dicts, the config and the step; see :mod:`scoresde.checkpoint`) and ``metrics.jsonl``. An *export* is a
folder holding ``model.safetensors`` (the weights only: no pickle, nothing that can run code) and
``config.json`` (the network, SDE and training configuration as JSON, the step and which weights were
exported). :func:`load_run` reads either and returns a :class:`Run`::

    run = sd.load_run("runs/digits")                      # newest readable checkpoint, EMA weights
    x = sd.sample_dpm_solver(run.model, run.sde, (16, *run.data_shape), steps=50).x

A run trained with your own SDE or network (``train(cfg, sde=..., model=...)``) cannot be rebuilt from its
config alone: pass the same objects again, ``load_run(workdir, sde=MySDE())`` (the config's network is built on
it) or ``load_run(workdir, model=my_net)`` (the weights are loaded into ``my_net``); without them it is refused,
naming the class the run was trained with.

Exports need the optional ``safetensors`` package (``pip install scoresde[export]``); run directories do not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn

from scoresde import checkpoint as ckpt
from scoresde import config as C
from scoresde._checks import check_choice
from scoresde.builders import build_model, build_sde
from scoresde.nn.presets import PRESETS
from scoresde.score import ScoreModel
from scoresde.sde import SDE
from scoresde.serialize import model_config, model_from_config, sde_from_config

__all__ = ["Run", "load_run", "export_run", "EXPORT_FORMAT"]

EXPORT_FORMAT = "scoresde.export/1"
_WEIGHTS = ("ema", "model")
_EXPORT_CONFIG, _EXPORT_WEIGHTS = "config.json", "model.safetensors"


@dataclass(frozen=True)
class Run:
    """A trained model read back from a run directory or an export.

    ``model`` is a :class:`~scoresde.score.ScoreModel` in eval mode (a ``score_fn``); ``sde`` its SDE;
    ``config`` the run's resolved :class:`~scoresde.config.Config`; ``step`` the training step of the weights;
    ``weights`` "ema" or "model"; ``data_shape`` the shape of one sample (model space); ``path`` the file read.
    """

    model: nn.Module
    sde: object
    config: C.Config
    step: int
    weights: str
    data_shape: tuple
    path: str


def load_run(path: str, *, weights: str = "ema", step: int | None = None,
             map_location: str | torch.device = "cpu", sde: SDE | None = None,
             model: nn.Module | None = None) -> Run:
    """Read a run directory written by ``train`` (or a folder written by :func:`export_run`) back as a model.

    Args:
        path: a run directory (its newest readable checkpoint is used unless ``step`` is given) or an export.
        weights: "ema" (the exponential moving average, what the papers evaluate) or "model" (raw weights).
        step: the checkpoint of this training step (run directories only; None: the newest readable one).
        map_location: where the weights go (``torch.load``'s argument; the model is moved there too).
        sde: for a run trained with your own SDE (``train(cfg, sde=...)``): an instance of the same class,
            on which the config's network is built (or which the given ``model`` uses). Its class must be the
            one the run recorded.
        model: for a run trained with your own network (``train(cfg, model=...)``): a module of the same
            architecture; the checkpoint's weights are loaded into it (strictly) and it is returned as ``.model``.
            Run directories only.
    """
    weights = check_choice("weights", weights, _WEIGHTS)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_run: path {path!r} is not a directory (a run directory or an export)")
    if os.path.isfile(os.path.join(path, _EXPORT_CONFIG)):
        if step is not None:
            raise ValueError(f"load_run: step={step!r} applies to run directories only; {path!r} is an export "
                             "holding one step")
        if model is not None:
            raise ValueError(f"load_run: model= applies to run directories only; {path!r} is an export, whose "
                             "network is described by its config.json")
        return _load_export(path, weights, map_location, sde)
    return _load_workdir(path, weights, step, map_location, sde, model)


def export_run(path: str, out: str, *, weights: str = "ema", step: int | None = None,
               sde: SDE | None = None) -> str:
    """Write the weights of a run as ``out/model.safetensors`` and its configuration as ``out/config.json``.

    ``out`` must not exist yet or be empty (an export is never written over another one). Returns ``out``.
    Read it back with :func:`load_run` (``load_run(out)``; ``load_run(out, sde=...)`` for your own SDE, which
    ``sde=`` passes here too). A network of your own cannot be exported (it has no preset to rebuild it from).
    """
    safetensors_torch = _safetensors()
    run = load_run(path, weights=weights, step=step, sde=sde)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"export_run: out={out!r} exists and is not an empty directory; choose a new folder")
    os.makedirs(out, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in run.model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "step": run.step, "weights": run.weights, "data_shape": list(run.data_shape),
            "score_model": model_config(run.model), "config": C.to_dict(run.config)}
    safetensors_torch.save_file(tensors, os.path.join(out, _EXPORT_WEIGHTS), metadata={"format": EXPORT_FORMAT})
    tmp = os.path.join(out, _EXPORT_CONFIG + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(out, _EXPORT_CONFIG))
    return out


# --------------------------------------------------------------------------------------------- readers
def _load_workdir(path: str, weights: str, step: int | None, map_location, sde, model) -> Run:
    if step is None:
        found = ckpt.load_latest(path, map_location=map_location)
        if found is None:
            raise FileNotFoundError(f"load_run: no checkpoint in {path!r} (train first: scoresde train --workdir ...)")
        state, file = found
    else:
        file = ckpt.checkpoint_path(path, step)
        if not os.path.isfile(file):
            steps = [int(os.path.basename(p)[5:14]) for p in ckpt.list_checkpoints(path)]
            raise FileNotFoundError(f"load_run: no checkpoint of step {step} in {path!r}; available steps: {steps}")
        state = ckpt.load_checkpoint(file, map_location=map_location)
    cfg = C.from_dict(state["config"])
    user = state.get("user_objects") or {}
    sde = _run_sde(file, cfg, user.get("sde"), sde, model)
    shape = tuple(state["data_shape"]) if "data_shape" in state else None
    if model is None:
        if user.get("model") is not None:
            raise ValueError(f"load_run: {file} was trained with your own network (class "
                             f"{user['model']['class']}); pass model= a module of that architecture (its weights "
                             "are loaded from the checkpoint)")
        model = build_model(cfg.model, sde, shape or _data_shape_of_config(cfg))
    model.load_state_dict(state["ema"]["module"] if weights == "ema" else state["model"])
    shape = shape or _data_shape_of_network(model)
    return Run(model.to(map_location).eval(), sde, cfg, int(state["step"]), weights, shape, file)


def _run_sde(file: str, cfg: C.Config, recorded: dict | None, sde, model):
    """The SDE of a run: the config's, or (for a run trained with its own) the given one, checked by class name."""
    if sde is None and isinstance(model, ScoreModel):
        sde = model.sde
    if recorded is None:
        built = build_sde(cfg.sde)
        if sde is not None and type(sde).__qualname__ != type(built).__qualname__:
            raise ValueError(f"load_run: {file} was trained with the config's SDE ({built!r}); got sde of class "
                             f"{type(sde).__qualname__}")
        return built if sde is None else sde
    if sde is None:
        raise ValueError(f"load_run: {file} was trained with your own SDE (class {recorded['class']}, "
                         f"sde_config {recorded.get('sde_config')}); its config cannot rebuild it: pass sde= an "
                         "instance of that class")
    if type(sde).__qualname__ != recorded["class"]:
        raise ValueError(f"load_run: {file} was trained with an SDE of class {recorded['class']}; got sde of class "
                         f"{type(sde).__qualname__}")
    return sde


def _load_export(path: str, weights: str, map_location, sde=None) -> Run:
    with open(os.path.join(path, _EXPORT_CONFIG)) as f:
        meta = json.load(f)
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"load_run: {path!r} is not a scoresde export (format {meta.get('format')!r}, "
                         f"expected {EXPORT_FORMAT!r})")
    if weights != meta["weights"]:
        raise ValueError(f"load_run: weights={weights!r} but the export at {path!r} holds the "
                         f"{meta['weights']!r} weights only")
    file = os.path.join(path, _EXPORT_WEIGHTS)
    tensors = _safetensors().load_file(file, device=str(map_location))
    recorded = meta["score_model"]["sde"]
    if sde is None:
        sde = sde_from_config(recorded)  # refuses an SDE class that is not built in, saying to pass sde=
    elif type(sde).__name__ != recorded.get("class"):  # sde_config records the class's __name__
        raise ValueError(f"load_run: the export at {path!r} holds a model on an SDE of class {recorded.get('class')}; "
                         f"got sde of class {type(sde).__name__}")
    model = model_from_config(meta["score_model"], sde=sde)
    model.load_state_dict(tensors)
    cfg = C.from_dict(meta["config"])
    return Run(model.to(map_location).eval(), sde, cfg, int(meta["step"]), weights, tuple(meta["data_shape"]), file)


def _data_shape_of_config(cfg: C.Config) -> tuple:
    """The sample shape the config's data imply where that is known without reading the data set
    (toy sets and the digits); image sets take the shape from the network (:func:`_data_shape_of_network`)."""
    if cfg.data.name == "digits":
        return (1, 8, 8)
    return (int(cfg.model.options.get("dim", 2)),)


def _data_shape_of_network(model: ScoreModel) -> tuple:
    net_cfg = model.net.network_config
    kwargs = {**PRESETS[net_cfg["preset"]][1], **net_cfg["kwargs"]}
    if "dim" in kwargs:
        return (int(kwargs["dim"]),)
    size = int(kwargs["image_size"])
    return (int(kwargs["in_channels"]), size, size)


def _safetensors():
    try:
        import safetensors.torch as safetensors_torch  # optional extra, imported on use
    except ImportError as err:
        raise ImportError("exported models are safetensors files: pip install 'scoresde[export]' "
                          "(or pip install safetensors)") from err
    return safetensors_torch
