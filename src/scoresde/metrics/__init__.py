"""Sample-quality metrics: Fréchet distance (FID), KID, IS, sliced Wasserstein, MMD, offline digits quality.

Importing this package imports no optional dependency: torch-fidelity (Inception) and scikit-learn
(digits) are imported inside the functions that need them.
"""

from scoresde.metrics.digits import DigitsQuality, DigitsScores, digits_quality, load_digits_classifier
from scoresde.metrics.evaluate import EvalResult, evaluate_samples, reference_stats
from scoresde.metrics.frechet import frechet_distance
from scoresde.metrics.inception import InceptionV3Features, inception_score
from scoresde.metrics.kernel import KIDResult, kernel_inception_distance, mmd2_unbiased
from scoresde.metrics.sliced import sliced_wasserstein
from scoresde.metrics.stats import FeatureStats, load_stats, save_stats

__all__ = [
    "frechet_distance", "FeatureStats", "save_stats", "load_stats", "reference_stats", "evaluate_samples",
    "EvalResult", "InceptionV3Features", "inception_score", "mmd2_unbiased", "kernel_inception_distance",
    "KIDResult", "sliced_wasserstein", "digits_quality", "load_digits_classifier", "DigitsQuality", "DigitsScores",
]
