"""Moved to :mod:`scoresde.likelihood.dequant`; this alias keeps ``scoresde.dequant`` importable while callers
move."""

from scoresde.likelihood.dequant import VariationalDequantizer, dequantized_log_prob

__all__ = ["VariationalDequantizer", "dequantized_log_prob"]
