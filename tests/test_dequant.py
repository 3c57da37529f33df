"""Variational dequantisation: a valid density on the cell, and a bound tighter than uniform noise."""

import math

import torch

import scoresde as sd
from scoresde.likelihood import VariationalDequantizer, dequantized_log_prob
from tests.common import discretized_mixture_log_prob, seeded, seeded_init

L, A, B = 256, 2.0, -1.0
W = A / L  # bin width in model space


def _sharp_mixture():
    """Components narrower than a bin: p varies strongly inside each cell, where uniform noise is loose."""
    return sd.GaussianMixture([0.5, 0.5], [[0.1003, -0.3], [-0.5, 0.42]],
                              [[0.3 * W, 0.5 * W], [0.4 * W, 0.3 * W]])


def test_log_q_is_the_change_of_variables_density():
    """log q(u|x) = log N(e) − log|det ∂u/∂e| for the map e ↦ u, checked with the autograd Jacobian."""
    with seeded_init(0):  # a random, untrained flow
        q = VariationalDequantizer(3, couplings=3, hidden=16).double()
        for p in q.parameters():
            torch.nn.init.normal_(p, std=0.3)
    x = torch.tensor([[0, 100, 255], [17, 18, 19]])
    e = torch.randn(2, 3, generator=seeded(30), dtype=torch.float64)
    u, log_q = q(x, noise=e)
    assert ((u > 0) & (u < 1)).all() and u.shape == x.shape
    for i in range(2):
        J = torch.autograd.functional.jacobian(lambda n, i=i: q(x[i:i + 1], noise=n)[0][0], e[i:i + 1])[:, 0]
        expected = -0.5 * (e[i] ** 2).sum() - 1.5 * math.log(2 * math.pi) - torch.linalg.slogdet(J)[1]
        torch.testing.assert_close(log_q[i], expected)


def test_variational_bound_tighter_than_uniform_on_8bit_mixture():
    mix = _sharp_mixture()
    g = seeded(31)
    y = mix.sample(512, generator=g)
    x = ((y - B) / A * L).floor().clamp(0, L - 1).to(torch.uint8)
    exact = discretized_mixture_log_prob(mix, x.double(), scale=A, shift=B, levels=L)
    u = torch.rand(x.shape, generator=g, dtype=torch.float64)
    uniform = dequantized_log_prob(mix.log_prob, x, u, scale=A, shift=B)

    with seeded_init(1):
        q = VariationalDequantizer(2, hidden=32, couplings=2).double()
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(250):
        u, log_q = q(x, generator=g)
        loss = -dequantized_log_prob(mix.log_prob, x, u, log_q, scale=A, shift=B).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        u, log_q = q(x, generator=g)
        variational = dequantized_log_prob(mix.log_prob, x, u, log_q, scale=A, shift=B)
    se = float((variational.var() / 512 + uniform.var() / 512).sqrt())
    # Both are lower bounds on log P(x) (exact here); measured: uniform −2.95, variational −2.15, exact −2.06
    # nats per sample. The variational bound must beat uniform by far more than 4 se (≈0.2) and stay below
    # the exact value (within 4 se of its own noise).
    assert float(variational.mean()) > float(uniform.mean()) + 4 * se
    assert float(variational.mean()) < float(exact.mean()) + 4 * float(variational.std()) / math.sqrt(512)
    assert float(uniform.mean()) < float(exact.mean())
