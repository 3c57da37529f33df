"""Likelihood of score-based models: one home, one module per concept.

- :mod:`~scoresde.likelihood.divergence`: ∇·F estimators: exact, Hutchinson–Skilling (Gaussian, Rademacher)
- :mod:`~scoresde.likelihood.ode`: log p_eps(x) through the probability-flow ODE (Song et al. 2021, eq. 39)
- :mod:`~scoresde.likelihood.bound`: the continuous-time bound on −log p (ScoreFlow, Theorem 2)
- :mod:`~scoresde.likelihood.bpd`: the one bits/dim formula and the uniform dequantisation map
- :mod:`~scoresde.likelihood.dequant`: variational dequantisation (Flow++)
- :mod:`~scoresde.likelihood.evaluate`: test-set NLL and bits/dim over a DataLoader, with repeats

``score_fn(x, t)`` → :func:`log_likelihood` (or :func:`nll_bound`) on dequantised, scaled data →
:func:`bits_per_dim`; :func:`evaluate_nll` runs that chain over a data set.
"""

from scoresde.likelihood.bound import NLLBound, bound_offset, nll_bound, nll_bound_terms, prior_term
from scoresde.likelihood.bpd import (
    bits_per_dim,
    check_discrete,
    log_abs_scale,
    nll_to_bits_per_dim,
    num_levels,
    to_model_space,
    uniform_dequantize,
)
from scoresde.likelihood.dequant import VariationalDequantizer, dequantized_log_prob
from scoresde.likelihood.divergence import (
    DIVERGENCES,
    PROBE_KINDS,
    draw_probes,
    exact_divergence,
    hutchinson_divergence,
)
from scoresde.likelihood.evaluate import NLLResult, evaluate_nll
from scoresde.likelihood.ode import LikelihoodResult, log_likelihood

__all__ = [
    # divergence
    "exact_divergence", "hutchinson_divergence", "draw_probes", "DIVERGENCES", "PROBE_KINDS",
    # the ODE likelihood
    "log_likelihood", "LikelihoodResult",
    # the continuous-time bound
    "nll_bound", "nll_bound_terms", "NLLBound", "prior_term", "bound_offset",
    # bits/dim and dequantisation
    "bits_per_dim", "nll_to_bits_per_dim", "uniform_dequantize", "to_model_space", "check_discrete",
    "num_levels", "log_abs_scale", "VariationalDequantizer", "dequantized_log_prob",
    # data-set evaluation
    "evaluate_nll", "NLLResult",
]
