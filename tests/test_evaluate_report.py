"""What `scoresde likelihood` reports: the mean, its standard error and a baseline, checked on the exact oracle."""

import math

import pytest

from scoresde import config as C
from scoresde import data as D
from scoresde.builders import build_sde
from scoresde.datastream import load_data
from scoresde.evaluation import baseline, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_exact_score_reaches_the_exact_nll_with_its_standard_error():
    """Fed the mixture's exact score, the probability-flow ODE likelihood of the test points is their exact
    log-density (up to the solver tolerance and p_eps vs p_0 at eps = 1e-5: measured 9e-5 nats), so the
    reported mean equals the baseline and the standard error is that of the exact per-point NLLs (0.15 %)."""
    cfg = C.apply_overrides(C.preset("toy2d"), ["data.toy_size=400", "eval.num_samples=30", "eval.divergence=exact",
                                                "eval.rtol=1e-6", "eval.atol=1e-6"])
    data = load_data(cfg.data, cfg.training.seed)
    sde = build_sde(cfg.sde)
    mixture = D.toy_mixture()
    row = evaluate(mixture.score_fn(sde), sde, cfg, data, "cpu")
    label, value = baseline(cfg, data)
    exact = -mixture.log_prob(data.test[:30].double())
    assert row["n"] == 30 and "exact NLL" in label
    assert value == pytest.approx(float(exact.mean()), abs=1e-12)
    assert row["test_nll"] == pytest.approx(value, abs=1e-3)
    assert row["test_nll_se"] == pytest.approx(float(exact.std()) / math.sqrt(30), rel=1e-2)


def test_digits_baseline_is_the_histogram_one():
    cfg = C.preset("digits")
    data = load_data(cfg.data, 0)
    label, value = baseline(cfg, data)
    assert "histogram" in label and value == D.digits_histogram_bpd()
    rings = C.apply_overrides(cfg, ["data.name=rings", "data.toy_size=20"])
    assert baseline(rings, load_data(rings.data, 0)) is None  # no known reference for the rings
