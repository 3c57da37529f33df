"""Class-conditional sampling by guidance, checked against the exact noisy class posterior of a mixture
(each component a class: p_t(k | x) = mixture.responsibilities(x, t, sde))."""

import pytest
import torch

import scoresde as sd
from scoresde.controllable import ConvClassifier, MLPClassifier, classifier_log_prob_fn, guided_score_fn
from scoresde.losses import classifier_loss
from scoresde.sampling import sample_ode, sample_pc
from tests.common import seeded, seeded_init, two_mode_mixture

F64 = torch.float64


def _exact_log_posterior(mix, sde):
    def log_prob(x, t, y):
        return torch.log(mix.responsibilities(x, t, sde)).gather(1, y[:, None]).squeeze(1)

    return log_prob


def test_guided_score_at_scale_one_is_the_component_score():
    """∇ log p_t(x) + ∇ log p_t(k | x) = ∇ log p_t(x | k): an identity, checked to float64 round-off."""
    mix, sde = two_mode_mixture(), sd.VPSDE()
    x = torch.randn(64, 2, generator=seeded(0), dtype=F64) * 2
    t = torch.rand(64, generator=seeded(1), dtype=F64) * 0.99 + 0.01
    for k in range(2):
        y = torch.full((64,), k)
        guided = guided_score_fn(mix.score_fn(sde), _exact_log_posterior(mix, sde), y, scale=1.0)
        component = sd.GaussianMixture([1.0], mix.means[k:k + 1], mix.stds[k:k + 1])
        assert torch.allclose(guided(x, t), component.score_t(x, t, sde), atol=1e-9)
    unguided = guided_score_fn(mix.score_fn(sde), _exact_log_posterior(mix, sde), y, scale=0.0)
    assert torch.equal(unguided(x, t), mix.score_t(x, t, sde))


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_guided_sampling_reproduces_the_class_conditional(sampler):
    """Guided samples of class 0 must follow component 0 = N((−2, 0.5), diag(0.4², 0.2²)). n = 2000: the
    mean's standard error is ≤ 0.4/sqrt(2000) = 0.009, so atol 0.05 allows 4 s.e. plus the 200-step / 1e-5
    ODE discretisation; the std's relative s.e. is 1/sqrt(2·2000) = 1.6%, rtol 10%. Every sample must come
    from mode 0 (the other mode is ≥ 8 stds away)."""
    mix, sde = two_mode_mixture(), sd.VPSDE()
    n = 2000
    y = torch.zeros(n, dtype=torch.long)
    score = guided_score_fn(mix.score_fn(sde), _exact_log_posterior(mix, sde), y, scale=1.0)
    if sampler == "pc":
        x = sample_pc(score, sde, (n, 2), steps=200, generator=seeded(2), dtype=F64).x
    else:
        x = sample_ode(score, sde, (n, 2), rtol=1e-5, atol=1e-5, generator=seeded(3), dtype=F64).x
    labels = mix.responsibilities(x).argmax(1)
    assert int(labels.sum()) == 0
    assert torch.allclose(x.mean(0), mix.means[0], atol=0.05), x.mean(0)
    assert torch.allclose(x.std(0), mix.stds[0], rtol=0.1), x.std(0)


def test_classifier_loss_is_minimised_by_the_exact_posterior():
    """Cross-entropy is a proper scoring rule: on the same (t, z) draws the exact posterior's mean loss is
    below that of any other classifier, and its mean over t equals the oracle's conditional entropy estimate.
    n = 20000 keeps the sampling noise (~0.005) far below the gaps measured here (> 0.05)."""
    mix, sde = two_mode_mixture(), sd.VPSDE()
    x0, labels = mix.sample(20000, generator=seeded(4), return_labels=True)

    def exact(x, t):
        return torch.log(mix.responsibilities(x, t, sde))

    def tempered(x, t):
        return 3.0 * exact(x, t)

    def flat(x, t):
        return torch.zeros(x.shape[0], 2, dtype=x.dtype)

    losses = {name: classifier_loss(f, sde, x0, labels, generator=seeded(5)).mean()
              for name, f in (("exact", exact), ("tempered", tempered), ("flat", flat))}
    assert losses["exact"] < losses["tempered"] - 0.05 and losses["exact"] < losses["flat"] - 0.05
    # importance-sampled t is reweighted: same expectation (s.e. of each mean < 0.01 here)
    is_mean = classifier_loss(exact, sde, x0, labels, generator=seeded(6), importance_sampling=True).mean()
    assert abs(float(is_mean - losses["exact"])) < 0.05


@pytest.mark.slow
def test_trained_mlp_classifier_approaches_the_exact_posterior():
    """A small MLPClassifier trained 300 Adam steps with classifier_loss gets within 0.05 nats of the
    exact posterior's loss (the Bayes limit) on fresh data; an untrained one is ~0.3 nats above it."""
    mix, sde = two_mode_mixture(), sd.VPSDE()
    with seeded_init(0):
        net = MLPClassifier(2, 2, hidden=64, layers=2).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = seeded(7)
    for _ in range(300):
        x0, labels = mix.sample(256, generator=gen, return_labels=True)
        loss = classifier_loss(net, sde, x0, labels, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0, labels = mix.sample(20000, generator=seeded(8), return_labels=True)
    with torch.no_grad():
        trained = classifier_loss(net, sde, x0, labels, generator=seeded(9)).mean()
    bayes = classifier_loss(lambda x, t: torch.log(mix.responsibilities(x, t, sde)), sde, x0, labels,
                            generator=seeded(9)).mean()
    assert float(trained - bayes) < 0.05, (float(trained), float(bayes))


def test_conv_classifier_shapes_and_guidance_gradient():
    net = ConvClassifier(1, 10, width=16, depth=2)
    x = torch.randn(3, 1, 8, 8, generator=seeded(10))
    t = torch.rand(3, generator=seeded(11))
    assert net(x, t).shape == (3, 10)
    score = guided_score_fn(lambda x, t: -x, classifier_log_prob_fn(net), torch.tensor([1, 2, 3]), scale=2.0)
    with torch.no_grad():  # guidance must work inside the samplers' no_grad
        s = score(x, t)
    assert s.shape == x.shape and not s.requires_grad and not torch.equal(s, -x)


def test_bad_labels_and_classifiers_raise():
    net = MLPClassifier(2, 3)
    x0, t = torch.zeros(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classifier_loss(net, sd.VPSDE(), x0, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="labels must be an integer"):
        classifier_loss(net, sd.VPSDE(), x0, torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        guided_score_fn(lambda x, t: -x, classifier_log_prob_fn(net), torch.tensor([0, 5, 1, 1]))(x0, t)
    with pytest.raises(ValueError, match="scale"):
        guided_score_fn(lambda x, t: -x, classifier_log_prob_fn(net), torch.tensor([0, 1, 1, 1]), scale=-1)
    with pytest.raises(ValueError, match="logits of shape"):
        classifier_loss(lambda x, t: x[:, 0], sd.VPSDE(), x0, torch.tensor([0, 1, 0, 1]))
