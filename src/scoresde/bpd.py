"""Moved to :mod:`scoresde.likelihood.bpd`; this alias keeps ``scoresde.bpd`` importable while callers move."""

from scoresde.likelihood.bpd import (
    bits_per_dim,
    check_discrete,
    log_abs_scale,
    nll_to_bits_per_dim,
    num_levels,
    to_model_space,
    uniform_dequantize,
)

__all__ = ["bits_per_dim", "nll_to_bits_per_dim", "uniform_dequantize", "to_model_space", "check_discrete",
           "num_levels", "log_abs_scale"]
