"""Checkpoints: plain dicts of state dicts, written atomically, verified and read without running code.

A checkpoint is ``{"step", "model", "ema", "optimizer", "config", "rng", ...}`` where every value is a
tensor, a number, a string, or a list/dict of those (nanoGPT's layout). It is written to a temporary file
``.ckpt_*.tmp`` in the target directory, flushed and fsync'ed, then moved into place with ``os.replace``
(atomic on POSIX), so a crash mid-write leaves the previous checkpoint intact; a kill mid-write can leave
the temporary behind, which :func:`remove_stale_temporaries` deletes. Only the last ``keep`` files are kept.
A full disk is reported as such (:class:`CheckpointWriteError`, naming the directory and its free space)
and the previous checkpoint is kept.

``torch.save`` writes a zip archive holding a CRC-32 of every member (the pickled structure and each
tensor's bytes). Every load first reads each member and compares its CRC-32 (``zipfile.ZipFile.testzip``),
so any corrupt byte inside a member — tensor data included — is detected (a CRC-32 detects every error
burst of up to 32 bits, so every single flipped byte). Then it reads with ``torch.load(weights_only=True)``,
whose unpickler accepts only tensors and plain containers: a file made to run code when unpickled (a
``__reduce__`` payload) is refused with :class:`UnsafeCheckpointError` and the code does not run. A
truncated, empty or corrupt file raises :class:`CorruptCheckpointError`; :func:`load_latest` then says so
and falls back to the previous file, and raises when no checkpoint in the directory is readable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
import zlib

import torch

__all__ = ["CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "CheckpointWriteError",
           "save_checkpoint", "load_checkpoint", "load_latest", "list_checkpoints", "remove_stale_temporaries"]

_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")
_TMP = re.compile(r"^\.ckpt_.*\.tmp$")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(RuntimeError):
    """A checkpoint could not be used."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt or not a checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects other than tensors and plain containers (it could run code): refused."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, most often); the previous checkpoint is kept."""


def checkpoint_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"ckpt_{step:09d}.pt")


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in ``directory``, oldest step first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if _NAME.match(n))
    return [os.path.join(directory, n) for n in names]


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the ``.ckpt_*.tmp`` files a kill during :func:`save_checkpoint` left behind; returns their paths.

    Only safe while no other process writes checkpoints to ``directory`` (the trainer calls it while
    holding the run directory's lock, :func:`scoresde.rundir.lock_workdir`).
    """
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        if _TMP.match(name):
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def save_checkpoint(state: dict, directory: str, *, keep: int = 3) -> str:
    """Atomically write ``state`` (must contain an int ``"step"``) and delete all but the last ``keep`` files.

    Raises :class:`CheckpointWriteError` when the file cannot be written (e.g. the disk is full); the
    temporary file is removed and the existing checkpoints are left as they were.
    """
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise TypeError("state must be a dict with an integer 'step'")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, state["step"])
    fd, tmp = tempfile.mkstemp(prefix=".ckpt_", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, _crc32_on():
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        _raise_write_error(err, directory, path)
        raise
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        os.remove(old)
    return path


@contextlib.contextmanager
def _crc32_on():
    """Make sure ``torch.save`` writes the CRC-32s that :func:`load_checkpoint` verifies.

    torch >= 2.6 lets a user switch them off (``torch.utils.serialization.config.save.compute_crc32``);
    older versions always write them.
    """
    cfg = getattr(getattr(getattr(torch.utils, "serialization", None), "config", None), "save", None)
    if cfg is None or getattr(cfg, "compute_crc32", True):
        yield
        return
    cfg.compute_crc32 = True
    try:
        yield
    finally:
        cfg.compute_crc32 = False


def _raise_write_error(err: BaseException, directory: str, path: str) -> None:
    """Re-raise a failed write as :class:`CheckpointWriteError` saying what happened; return if it is not one.

    On a full disk PyTorch's zip writer reports ``[enforce fail at inline_container.cc] unexpected pos``,
    with the ``OSError(ENOSPC)`` of the underlying write as its context.
    """
    if not isinstance(err, (OSError, RuntimeError)) or isinstance(err, CheckpointError):
        return
    chain, e = [], err
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    full = any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain)
    writer = any(isinstance(e, RuntimeError) and ("inline_container" in str(e) or "unexpected pos" in str(e)
                                                  or "PytorchStreamWriter" in str(e)) for e in chain)
    if not (full or writer or isinstance(err, OSError)):
        return
    try:
        free = f"{shutil.disk_usage(directory).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    what = "the disk is full (no space left on device)" if full else f"{_first_line(err)}"
    raise CheckpointWriteError(f"could not write checkpoint {path}: {what}; {free} in {directory}. "
                               "The previous checkpoints are kept") from err


def load_checkpoint(path: str, *, map_location="cpu") -> dict:
    """Read one checkpoint: verify the archive's CRC-32s, then ``torch.load(weights_only=True)``.

    Raises :class:`CorruptCheckpointError` (truncated, empty, a CRC mismatch, not a checkpoint),
    :class:`UnsafeCheckpointError` (objects that could run code) or ``FileNotFoundError``.
    """
    size = os.path.getsize(path)  # FileNotFoundError propagates
    if size == 0:
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        _verify_zip(path)
    elif zipfile.is_zipfile(path):  # an archive whose first header is damaged
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: bad zip header {head!r}")
    elif head[:1] != b"\x80":  # neither a zip archive nor a pickle (protocol >= 2 starts with PROTO)
        raise CorruptCheckpointError(f"{path} is not a checkpoint: neither a zip archive nor a pickle "
                                     f"(it starts with {head!r})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it contains objects other than tensors and plain containers, "
                f"which could run code when unpickled ({_first_line(err)})") from err
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {_first_line(err)}") from err
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 — any other failure to parse bytes is corruption
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: {_first_line(err)}") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpointError(f"{path} is not a scoresde checkpoint (no 'step' entry)")
    return state


def _verify_zip(path: str) -> None:
    """Read every member of the archive and compare its CRC-32 (the whole file is read once)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError,
            UnicodeDecodeError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: {_first_line(err)}") from err
    if bad is not None:
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt: CRC-32 mismatch in {bad!r} "
                                     "(its bytes changed after it was written)")


def load_latest(directory: str, *, map_location="cpu") -> tuple[dict, str] | None:
    """The newest readable checkpoint in ``directory`` and its path, or None when there is no checkpoint file.

    A corrupt newest file is reported with a warning and the previous one is used. When checkpoint files
    exist but none is readable, :class:`CorruptCheckpointError` lists each file and why (nothing is
    deleted). An unsafe file is never skipped silently: :class:`UnsafeCheckpointError` propagates.
    """
    paths = list_checkpoints(directory)
    failures = []
    for path in reversed(paths):
        try:
            return load_checkpoint(path, map_location=map_location), path
        except (CorruptCheckpointError, FileNotFoundError) as err:
            failures.append(str(err))
            if path != paths[0]:
                warnings.warn(f"{err}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
    if failures:
        listing = "\n  ".join(failures)
        raise CorruptCheckpointError(f"no readable checkpoint in {directory}: all {len(paths)} are unreadable "
                                     f"(nothing was changed or deleted):\n  {listing}")
    return None


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


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
