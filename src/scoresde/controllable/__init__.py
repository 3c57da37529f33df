"""Controllable generation with an unconditional score model (Song et al. 2021, Sec. 5 and App. I).

Imputation for linear measurements — inpainting (:func:`inpaint`), colourisation (:func:`colorize`), any
y = A x with orthonormal rows (:func:`sample_conditional`); the same with a particle (SMC) correction that
makes it asymptotically exact (:func:`sample_conditional_smc`, :func:`inpaint_smc`) — and class-conditional
sampling by guidance with a noise-conditional classifier (:func:`guided_score_fn`). :func:`condition_mixture`
gives the exact conditional of a Gaussian mixture, the oracle the tests compare against.
"""

from scoresde.controllable.classifier import ConvClassifier, MLPClassifier
from scoresde.controllable.guidance import check_labels, classifier_log_prob_fn, guided_score_fn
from scoresde.controllable.impute import colorize, inpaint, sample_conditional
from scoresde.controllable.measurement import (
    GreyMeasurement,
    LinearMeasurement,
    MaskMeasurement,
    OrthogonalMeasurement,
    decoupling_matrix,
    measurement_from_svd,
)
from scoresde.controllable.oracle import ConditionalMixture, condition_mixture, mask_matrix
from scoresde.controllable.smc import effective_sample_size, inpaint_smc, sample_conditional_smc

__all__ = [
    "sample_conditional",
    "inpaint",
    "colorize",
    "sample_conditional_smc",
    "inpaint_smc",
    "effective_sample_size",
    "LinearMeasurement",
    "MaskMeasurement",
    "GreyMeasurement",
    "OrthogonalMeasurement",
    "decoupling_matrix",
    "measurement_from_svd",
    "guided_score_fn",
    "classifier_log_prob_fn",
    "check_labels",
    "MLPClassifier",
    "ConvClassifier",
    "ConditionalMixture",
    "condition_mixture",
    "mask_matrix",
]
