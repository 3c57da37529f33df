"""Curves of a training run: the loss and the test bits/dim (or NLL) against the step, from ``metrics.jsonl``.

``scoresde plot --workdir W`` and the end of :func:`scoresde.train.train` (``metrics.png`` in the run
directory) draw them. Needs matplotlib, the optional ``plot`` extra (``pip install 'scoresde[plot]'``); this
module imports neither matplotlib nor torch until a plot is drawn, and never touches pyplot's global state
(no backend is switched in a notebook).
"""

from __future__ import annotations

import math
import os

from scoresde.rundir import METRICS_NAME, MetricsError, read_metrics

__all__ = ["plot_metrics", "read_curves", "PLOT_NAME", "INSTALL_HINT"]

#: File name of the plot written into a run directory.
PLOT_NAME = "metrics.png"
INSTALL_HINT = "pip install 'scoresde[plot]'"


def _figure_class():
    try:
        from matplotlib.figure import Figure  # optional extra, imported on use
    except ImportError as err:
        raise ImportError(f"plotting needs matplotlib, the optional plot extra: {INSTALL_HINT}") from err
    return Figure


def plot_metrics(workdir_or_file: str, out: str | None = None) -> str:
    """Draw the training loss and, when the run was evaluated, the test bits/dim (``test_bpd``, or ``test_nll``
    for continuous data) with ± one standard error against the step; returns the PNG's path.

    Args:
        workdir_or_file: a run directory (its ``metrics.jsonl`` is read) or a ``metrics.jsonl`` file.
        out: the PNG to write (default: ``metrics.png`` next to the metrics file).

    Raises ``FileNotFoundError`` when there is no metrics file, :class:`~scoresde.rundir.MetricsError` (a
    ``ValueError``) when it holds no loss row or cannot be read, and
    ``ImportError`` (naming ``pip install 'scoresde[plot]'``) without matplotlib. Steps where a resumed run
    changed its configuration (``config_change`` rows) are marked by dotted vertical lines.
    """
    path = os.path.join(workdir_or_file, METRICS_NAME) if os.path.isdir(workdir_or_file) else workdir_or_file
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics file at {path!r} (a run directory written by scoresde train holds "
                                f"{METRICS_NAME})")
    losses, key, evals, changes = read_curves(path)
    out = out or os.path.join(os.path.dirname(os.path.abspath(path)), PLOT_NAME)

    fig = _figure_class()(figsize=(10 if evals else 5, 3.4))
    axes = fig.subplots(1, 2 if evals else 1, squeeze=False)[0]
    ax = axes[0]
    ax.plot([s for s, _ in losses], [v for _, v in losses], lw=1)
    ax.set(xlabel="step", ylabel="training loss (window mean)", title="loss")
    if all(v > 0 for _, v in losses):
        ax.set_yscale("log")
    if evals:
        ax = axes[1]
        se = [e if _finite(e) else 0.0 for _, _, e in evals]
        ax.errorbar([s for s, _, _ in evals], [v for _, v, _ in evals], yerr=se, marker="o", ms=3, capsize=2)
        what = "bits/dim" if key == "test_bpd" else "NLL (nats)"
        ax.set(xlabel="step", ylabel=f"test {what} (± 1 s.e.)", title=f"test {what}, probability-flow ODE")
    for ax in axes:
        for step in changes:
            ax.axvline(step, ls=":", color="grey", lw=1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def read_curves(path: str) -> tuple[list, str, list, list]:
    """``(losses, key, evals, changes)`` of a ``metrics.jsonl``: ``losses`` the (step, loss) pairs; ``key``
    "test_bpd" (discrete data) or "test_nll"; ``evals`` the (step, value, standard error or None) triples;
    ``changes`` the steps of ``config_change`` rows. Rows whose value is not a finite number are left out."""
    rows = read_metrics(path)
    losses = [(r["step"], r["loss"]) for r in rows if _finite(r.get("loss"))]
    if not losses:
        raise MetricsError(f"{path} holds no loss rows to plot ({len(rows)} rows)")
    key = "test_bpd" if any("test_bpd" in r for r in rows) else "test_nll"
    evals = [(r["step"], r[key], r.get(f"{key}_se")) for r in rows if _finite(r.get(key))]
    changes = [r["step"] for r in rows if "config_change" in r]
    return losses, key, evals, changes


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
