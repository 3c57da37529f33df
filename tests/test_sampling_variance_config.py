"""sampling.variance reaches the ancestral step from the config: `ancestral` and `pc` with predictor=ancestral
draw exactly what the samplers draw with that variance, and validate() refuses an unknown value."""

import dataclasses

import pytest
import torch

import scoresde as sd
from scoresde import config as C
from scoresde.builders import draw_samples
from scoresde.validation import validate
from tests.common import seeded

SDE = sd.VPSDE()


def score(x, t):  # the exact score of N(0, I) data under VP: every p_t is N(0, I)
    return -x


def _draw(**fields):
    cfg = dataclasses.replace(C.SamplingConfig(), steps=50, **fields)
    validate(C.Config(sampling=cfg), training=False, model=False)
    return draw_samples(score, SDE, cfg, (2000, 2), generator=seeded(0), device=None).x


@pytest.mark.parametrize("variance", ["analytic", "beta", "beta_tilde"])
def test_config_variance_is_the_samplers_variance(variance):
    expected = sd.sample_ancestral(score, SDE, (2000, 2), steps=50, variance=variance, generator=seeded(0)).x
    assert torch.equal(_draw(method="ancestral", variance=variance), expected)
    pc = sd.sample_pc(score, SDE, (2000, 2), steps=50, predictor="ancestral", corrector="none",
                      predictor_kwargs={"variance": variance}, generator=seeded(0)).x
    assert torch.equal(_draw(method="pc", predictor="ancestral", corrector="none", variance=variance), pc)


def test_the_field_changes_the_draw_as_the_variances_say():
    """For N(0, I) data "beta" is the exact reverse kernel (std 1 at the end); "beta_tilde" leaves out the
    uncertainty about x_0 and under-disperses. 4000 coordinates: the std's standard error is ~0.011, so the
    0.05 margin is > 4 standard errors."""
    beta = _draw(method="ancestral", variance="beta").std()
    tilde = _draw(method="ancestral", variance="beta_tilde").std()
    assert abs(beta - 1) < 0.05 and tilde < beta - 0.05, (beta, tilde)


def test_unknown_variance_is_refused_naming_the_field():
    with pytest.raises(C.ConfigError, match=r"unknown sampling.variance 'tilde'; choose one of \['analytic', "):
        validate(C.apply_overrides(C.preset("toy2d"), ["sampling.variance=tilde"]))
