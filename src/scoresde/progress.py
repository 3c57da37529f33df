"""Progress bars: one helper for every long loop, and one switch that turns them all off.

Every long loop of the library (the samplers, training, likelihood over a data set) shows a ``tqdm.auto``
bar — a widget in notebooks, text on stderr elsewhere — when its caller passes ``progress=True``.
:func:`set_progress` (``False``) or the environment variable ``SCORESDE_PROGRESS=0`` turns every bar off,
whatever the callers pass. With a bar off, no tqdm object is created at all, so nothing is printed (no
``TqdmWarning`` in a notebook without widgets) and tqdm is not even imported.
"""

from __future__ import annotations

import os

__all__ = ["set_progress", "progress_enabled", "progress_bar", "NullBar"]

_ENV = "SCORESDE_PROGRESS"
_enabled: bool | None = None  # None: follow the environment variable


def set_progress(enabled: bool | None) -> None:
    """Allow (``True``) or forbid (``False``) every progress bar of the library; ``None`` returns to the
    environment variable ``SCORESDE_PROGRESS`` (``0``, ``false``, ``no`` or ``off`` forbid; default allow).
    A bar is shown only where it is allowed here *and* its caller asked for it (``progress=True``)."""
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_progress takes True, False or None, got {enabled!r}")
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars are allowed (see :func:`set_progress`)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class NullBar:
    """What :func:`progress_bar` returns when the bar is off: accepts tqdm's calls and does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool, **kwargs):
    """A ``tqdm.auto`` bar of ``total`` units labelled ``desc`` if ``enabled`` and bars are allowed
    (:func:`progress_enabled`), else a :class:`NullBar`. Advance it with ``bar.update(n)``, end it with
    ``bar.close()`` (or use it as a context manager). Extra keywords go to tqdm."""
    if not (enabled and progress_enabled()):
        return NullBar()
    from tqdm.auto import tqdm  # imported only when a bar is shown

    return tqdm(total=total, desc=desc, leave=False, **kwargs)
