"""Run-time choices a script makes once, deliberately: the number of CPU threads, and where its outputs go.

PyTorch starts with one intra-op thread per CPU core it sees. For the small networks of this library (the
toy MLP, the 8×8-digits U-Net) that buys little on an idle machine and costs a great deal on a busy one:
measured on a 2-core machine, a digits U-Net batch took 0.027 s with 1 thread and 0.023 s with 2 when the
machine was idle, but 0.15 s with 1 thread and 1.15–2.2 s with 2 when other jobs kept the cores busy (every
parallel region waits for its slowest thread, and a thread that has lost its core stalls them all).
:func:`configure_threads` therefore picks the count on purpose; nothing here runs at import.
"""

from __future__ import annotations

import operator
import os
import time

import torch

__all__ = ["configure_threads", "default_threads", "output_dir", "THREADS_ENV"]

#: Environment variable read by :func:`configure_threads` when no explicit count is given.
THREADS_ENV = "SCORESDE_THREADS"

#: Upper bound of the default: intra-op parallelism of networks this small stops paying beyond a few threads.
_MAX_DEFAULT_THREADS = 4


def _available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform reports one, else the CPU count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """``min(4, available CPUs // 2)``, at least 1: half the machine, so that other work on it cannot stall ours.

    On 2 cores this is 1 thread, which was as fast as 2 on an idle machine and 7–14× faster on a busy one
    (module docstring). Counting CPUs from the affinity mask respects ``taskset`` and container CPU sets.
    """
    return max(1, min(_MAX_DEFAULT_THREADS, _available_cpus() // 2))


def _parse(value, what: str, *, text: bool = False) -> int:
    """``value`` (an integer; with ``text``, the string of one, from the environment) as a positive int; else a
    clear error."""
    if isinstance(value, str) and text:
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    elif isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, got the bool {value!r}")
    else:
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{what} must be a positive integer, got {value!r} ({type(value).__name__})") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive integer (1 or more), got {value}")
    return value


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is one positive integer (OpenMP also allows lists such as ``4,2``: ignored)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU thread count (``torch.set_num_threads``) and return the count used.

    The count is, in this order: ``threads`` when given; else the environment variable ``SCORESDE_THREADS``;
    else ``OMP_NUM_THREADS`` when the user set it to one positive integer (PyTorch's own convention, honoured
    rather than overridden); else :func:`default_threads`. Scripts call this once at start-up (the demo, the
    examples and the CLI do); the library never calls it on import.

    Raises:
        TypeError / ValueError: ``threads`` (or the environment variable) is not a positive integer.
    """
    if threads is not None:
        count = _parse(threads, "threads")
    elif os.environ.get(THREADS_ENV, "").strip():
        count = _parse(os.environ[THREADS_ENV], f"the environment variable {THREADS_ENV}", text=True)
    elif _omp_threads() is not None:
        count = _omp_threads()
    else:
        count = default_threads()
    torch.set_num_threads(count)
    return count


def output_dir(name: str, out: str | None = None, *, overwrite: bool = False, root: str = "outputs") -> str:
    """A folder for a script's outputs, created here; never one that already holds files, unless asked.

    Without ``out``: a new folder ``root/name/YYYYmmdd-HHMMSS`` (``-2``, ``-3``, … appended if that exists), so
    a second run never collides with the first. With ``out``: that folder, which must be missing or empty
    unless ``overwrite`` is true (then files of the same names are replaced; nothing else is deleted).

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is false (the message says what to do).
    """
    if out is None:
        stem = os.path.join(root, name, time.strftime("%Y%m%d-%H%M%S"))
        path, k = stem, 1
        while os.path.exists(path):
            k += 1
            path = f"{stem}-{k}"
    else:
        path = out
        if os.path.isdir(path) and os.listdir(path) and not overwrite:
            raise FileExistsError(f"the output folder {path!r} already holds files: choose another --out, omit "
                                  f"--out for a new timestamped folder, or pass --overwrite to replace them")
        if os.path.exists(path) and not os.path.isdir(path):
            raise FileExistsError(f"the output path {path!r} is a file, not a folder: choose another --out")
    os.makedirs(path, exist_ok=True)
    return path
