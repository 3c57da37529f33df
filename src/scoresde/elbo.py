"""Moved to :mod:`scoresde.likelihood.bound`; this alias keeps ``scoresde.elbo`` importable while callers move."""

from scoresde.likelihood.bound import NLLBound, bound_offset, nll_bound, nll_bound_terms, prior_term

__all__ = ["NLLBound", "nll_bound", "nll_bound_terms", "prior_term", "bound_offset"]
