"""The run directory of a training run: an exclusive lock, and the metrics file read and rewritten safely.

* :func:`lock_workdir` holds ``fcntl.flock(LOCK_EX)`` on ``WORKDIR/train.lock`` for the life of a run, with
  the holder's pid written in the file: a second run on the same directory (or a ``--resume`` while the
  first is alive) fails at once with :class:`WorkdirLocked` naming that pid, instead of pruning the other
  run's checkpoints and interleaving its metrics. The kernel drops the lock when the process dies, however
  it dies, so a killed run never leaves a stale lock.
* :func:`read_metrics` reads ``metrics.jsonl`` and tolerates a torn last line (a run killed or out of disk
  space during an append): it is dropped with a warning. :func:`trim_metrics` keeps the rows up to a step
  and rewrites the file atomically (temporary file, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings

__all__ = ["WorkdirLocked", "MetricsError", "lock_workdir", "read_metrics", "trim_metrics", "append_metrics",
           "remove_stale_temporaries",
           "LOCK_NAME", "METRICS_NAME"]

LOCK_NAME = "train.lock"
METRICS_NAME = "metrics.jsonl"


class WorkdirLocked(RuntimeError):
    """Another process holds the run directory's lock."""


class MetricsError(ValueError):
    """``metrics.jsonl`` holds a line that is not JSON before its last line (not a torn tail)."""


@contextlib.contextmanager
def lock_workdir(workdir: str):
    """Hold an exclusive, non-blocking lock on ``workdir`` while the ``with`` block runs.

    Raises :class:`WorkdirLocked` at once when another process holds it. Where ``fcntl`` does not exist
    (Windows) the run goes on unlocked, with a warning.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        warnings.warn("fcntl is not available: the run directory is not locked against a second run",
                      RuntimeWarning, stacklevel=3)
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise WorkdirLocked(f"{workdir} is in use by another training run (pid {holder}, lock file {path}); "
                                "wait for it to end, stop it, or pick another workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still holding the lock: the next holder writes its own pid
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_metrics(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file ([] when it does not exist).

    A last line that is not valid JSON (torn by a kill or a full disk during an append) is dropped with a
    ``RuntimeWarning``; an invalid line before the last raises :class:`MetricsError` naming its number.
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    rows = []
    for k, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
        except ValueError as err:
            if k == len(numbered) - 1:
                warnings.warn(f"{path}: dropping the torn last line {number} ({line[:80]!r}): {err}",
                              RuntimeWarning, stacklevel=2)
                break
            raise MetricsError(f"{path}, line {number}, is not a JSON object ({err}): {line[:80]!r}; "
                               "fix or move the file") from err
        rows.append(row)
    return rows


def trim_metrics(path: str, step: int) -> None:
    """Keep the rows with ``step`` <= ``step`` (later ones were written by a run killed after its last
    checkpoint, and will be written again) and drop a torn tail; the file is replaced atomically, and only
    when something changes."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        before = f.read()
    rows = [row for row in read_metrics(path) if row.get("step", 0) <= step]
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    if text == before:
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".metrics_", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def append_metrics(path: str, row: dict) -> None:
    """Append one JSON line (a single write, so a kill tears at most this line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def remove_stale_temporaries(workdir: str) -> list[str]:
    """Delete the temporaries a killed run left in ``workdir`` (``.ckpt_*.tmp``, ``.metrics_*.tmp``).

    Call it only while holding :func:`lock_workdir`: a live run's temporaries are not stale.
    """
    # both patterns here, not through scoresde.checkpoint: this module stays stdlib-only (tests/test_rundir.py)
    removed = []
    if os.path.isdir(workdir):
        for name in sorted(os.listdir(workdir)):
            if name.endswith(".tmp") and name.startswith((".ckpt_", ".metrics_")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(workdir, name))
                    removed.append(os.path.join(workdir, name))
    return removed
