"""Checkpoints: plain dicts of state dicts, written atomically, read without running code.

A checkpoint is ``{"step", "model", "ema", "optimizer", "config", "rng", ...}`` where every value is a
tensor, a number, a string, or a list/dict of those (nanoGPT's layout). It is written to a temporary file
in the target directory, flushed and fsync'ed, then moved into place with ``os.replace`` (atomic on POSIX),
so a crash mid-write leaves the previous checkpoint intact. Only the last ``keep`` files are kept.

Reading uses ``torch.load(weights_only=True)``, whose unpickler accepts only tensors and plain containers:
a file made to run code when unpickled (a ``__reduce__`` payload) is refused with
:class:`UnsafeCheckpointError` and the code does not run. A truncated or corrupt file raises
:class:`CorruptCheckpointError`; :func:`load_latest` then says so and falls back to the previous file.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings

import torch

__all__ = ["CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "save_checkpoint",
           "load_checkpoint", "load_latest", "list_checkpoints"]

_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be used."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt or not a checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects other than tensors and plain containers (it could run code): refused."""


def checkpoint_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"ckpt_{step:09d}.pt")


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, oldest step first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if _NAME.match(n))
    return [os.path.join(directory, n) for n in names]


def save_checkpoint(state: dict, directory: str, *, keep: int = 3) -> str:
    """Atomically write ``state`` (must contain an int ``"step"``) and delete all but the last ``keep`` files."""
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise TypeError("state must be a dict with an integer 'step'")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, state["step"])
    fd, tmp = tempfile.mkstemp(prefix=".ckpt_", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str, *, map_location="cpu") -> dict:
    """Read one checkpoint with ``torch.load(weights_only=True)``; see the module docstring for errors."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it contains objects other than tensors and plain containers, "
                f"which could run code when unpickled ({str(err).splitlines()[0]})") from err
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {err}") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: {str(err).splitlines()[0]}") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpointError(f"{path} is not a scoresde checkpoint (no 'step' entry)")
    return state


def load_latest(directory: str, *, map_location="cpu") -> tuple[dict, str] | None:
    """The newest readable checkpoint in ``directory`` and its path, or None when there is none.

    A corrupt newest file is reported with a warning and the previous one is used. An unsafe file is
    never skipped silently: :class:`UnsafeCheckpointError` propagates.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path, map_location=map_location), path
        except CorruptCheckpointError as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
    return None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
