"""Moved to :mod:`scoresde.likelihood.evaluate`; this alias keeps ``scoresde.evaluate`` importable while callers
move."""

from scoresde.likelihood.evaluate import NLLResult, evaluate_nll

__all__ = ["NLLResult", "evaluate_nll"]
