"""Process-wide runtime settings chosen deliberately rather than by PyTorch's defaults.

(Placeholder of the ``cli`` branch; the ``firsthour`` branch provides the documented version.)
"""

from __future__ import annotations

import os

__all__ = ["configure_threads"]


def configure_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count: ``threads``, else ``$SCORESDE_THREADS``, else 1; returns the count used."""
    import torch

    n = threads or int(os.environ.get("SCORESDE_THREADS", 1))
    torch.set_num_threads(n)
    return n
