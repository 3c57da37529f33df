import pytest
import torch
from torch import nn

from scoresde.ema import EMA


def _net(dtype):
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_foreach_ema_equals_plain_loop(dtype):
    net, d = _net(dtype), 0.9
    ema = EMA(net, decay=d)
    reference = [p.detach().clone() for p in net.parameters()]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=dtype))
        net.train()(torch.randn(8, 3, generator=g, dtype=dtype))  # moves batch-norm buffers
        ema.update(net)
        reference = [d * r + (1 - d) * p.detach() for r, p in zip(reference, net.parameters(), strict=True)]
    # one lerp per step vs the textbook formula: equal up to a few ulps of the parameter scale (~10)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for r, p in zip(reference, ema.module.parameters(), strict=True):
        torch.testing.assert_close(p, r, rtol=tol, atol=tol)
    for b_ema, b in zip(ema.module.buffers(), net.buffers(), strict=True):
        assert torch.equal(b_ema, b)


def test_state_dict_roundtrip_and_bad_decay():
    net = _net(torch.float32)
    ema = EMA(net, 0.999)
    other = EMA(_net(torch.float32), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.999
    for a, b in zip(other.module.parameters(), ema.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay must be"):
        EMA(net, 1.0)
