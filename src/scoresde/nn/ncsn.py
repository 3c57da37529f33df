"""NCSN's noise-conditional RefineNet (Song & Ermon 2019, App. B.1) with CondInstanceNorm++.

The network is conditioned on the index ``i`` of the noise level σ_i (``noise_cond``: integer-valued tensor
of shape (B,), 0 ≤ i < num_classes) and returns the score s_θ(x, σ_i) directly (NCSN v1: no 1/σ scaling).

* :class:`CondInstanceNorm2dPlus` — conditional instance normalisation++ (Song & Ermon 2019, eq. in App. B.1),
  as :meth:`CondInstanceNorm2dPlus.forward` computes it:
  z = γ[i] ((x − μ_c)/s_c + α[i] (μ_c − m)/v) + β[i], with μ_c, s_c the per-channel spatial mean and std
  (``F.instance_norm``), m, v the mean and (biased) std of μ_c over channels, and 10⁻⁵ added to both
  variances. γ[i], β[i], α[i] are rows of one embedding, initialised to γ ~ N(1, 0.02²), β = α = 0.
* Residual blocks with dilated convolutions (ELU), four RefineNet cascades with residual conv units,
  multi-resolution fusion and chained residual pooling (Lin et al. 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CondInstanceNorm2dPlus", "RefineNet"]


class CondInstanceNorm2dPlus(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, 3 * channels)  # γ, β, α per noise level
        nn.init.normal_(self.embed.weight[:, : 2 * channels], 1.0, 0.02)
        nn.init.zeros_(self.embed.weight[:, 2 * channels:])
        with torch.no_grad():
            self.embed.weight[:, channels: 2 * channels].zero_()

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        mu = x.mean(dim=(2, 3))  # (B, C)
        m, v = mu.mean(dim=1, keepdim=True), mu.var(dim=1, keepdim=True, unbiased=False)
        mu_hat = (mu - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(x, eps=1e-5)
        gamma, beta, alpha = self.embed(idx).to(x.dtype).chunk(3, dim=-1)
        h = h + (alpha * mu_hat)[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]


class _CondSequential(nn.ModuleList):
    def forward(self, x, idx):
        for m in self:
            x = m(x, idx)
        return x


class CondResBlock(nn.Module):
    """norm → ELU → conv → norm → ELU → conv (+ 2×2 mean-pool when ``down`` and not dilated), with a
    shortcut conv when shapes change. Dilated blocks keep the resolution (Song & Ermon 2019, App. B.1)."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, *, down: bool = False, dilation: int = 1):
        super().__init__()
        self.norm1 = CondInstanceNorm2dPlus(in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, in_ch if down else out_ch, 3, padding=dilation, dilation=dilation)
        self.norm2 = CondInstanceNorm2dPlus(in_ch if down else out_ch, num_classes)
        self.conv2 = nn.Conv2d(in_ch if down else out_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.pool = down and dilation == 1
        self.shortcut = nn.Conv2d(in_ch, out_ch, 3 if down else 1, padding=dilation if down else 0,
                                  dilation=dilation) if (in_ch != out_ch or down) else None

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        h = self.conv1(F.elu(self.norm1(x, idx)))
        h = self.conv2(F.elu(self.norm2(h, idx)))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.pool:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class _RCU(nn.Module):
    """Residual conv unit: 2 × (norm → ELU → conv), residual; repeated ``n_blocks`` times."""

    def __init__(self, ch: int, num_classes: int, n_blocks: int = 2):
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNorm2dPlus(ch, num_classes) for _ in range(2 * n_blocks))
        self.convs = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=1, bias=False) for _ in range(2 * n_blocks))

    def forward(self, x, idx):
        for j in range(0, len(self.convs), 2):
            h = self.convs[j](F.elu(self.norms[j](x, idx)))
            x = x + self.convs[j + 1](F.elu(self.norms[j + 1](h, idx)))
        return x


class _CRP(nn.Module):
    """Chained residual pooling: x ← x + conv(avgpool5(norm(h))) repeated, h carried along."""

    def __init__(self, ch: int, num_classes: int, n_stages: int = 2):
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNorm2dPlus(ch, num_classes) for _ in range(n_stages))
        self.convs = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=1, bias=False) for _ in range(n_stages))

    def forward(self, x, idx):
        x = F.elu(x)
        h = x
        for norm, conv in zip(self.norms, self.convs, strict=True):
            h = conv(F.avg_pool2d(norm(h, idx), 5, stride=1, padding=2))
            x = x + h
        return x


class RefineBlock(nn.Module):
    """RefineNet block: RCU per input → fuse (norm, conv, up-sample to the largest, sum) → CRP → RCU."""

    def __init__(self, in_chs: list[int], out_ch: int, num_classes: int, *, end: bool = False):
        super().__init__()
        self.rcus = nn.ModuleList(_RCU(c, num_classes) for c in in_chs)
        self.fuse_norms = nn.ModuleList(CondInstanceNorm2dPlus(c, num_classes) for c in in_chs)
        self.fuse_convs = nn.ModuleList(nn.Conv2d(c, out_ch, 3, padding=1) for c in in_chs)
        self.crp = _CRP(out_ch, num_classes)
        self.out = _RCU(out_ch, num_classes, n_blocks=3 if end else 1)

    def forward(self, xs: list[Tensor], idx: Tensor, size) -> Tensor:
        h = 0
        for x, rcu, norm, conv in zip(xs, self.rcus, self.fuse_norms, self.fuse_convs, strict=True):
            y = conv(norm(rcu(x, idx), idx))
            h = h + F.interpolate(y, size=size, mode="bilinear", align_corners=True)
        return self.out(self.crp(h, idx), idx)


class RefineNet(nn.Module):
    """NCSN (Song & Ermon 2019): 4 residual stages (one down-sampling, then dilations 2 and 4) and 4
    RefineNet cascades; ``num_classes`` noise levels; returns the score of x at σ_i."""

    def __init__(self, *, nf: int = 128, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 centered: bool = False):
        super().__init__()
        if image_size % 2:
            raise ValueError(f"image_size must be even, got {image_size}")
        k = num_classes
        self.in_channels, self.image_size, self.num_classes, self.centered = in_channels, image_size, k, centered
        self.begin = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.res1 = _CondSequential([CondResBlock(nf, nf, k), CondResBlock(nf, nf, k)])
        self.res2 = _CondSequential([CondResBlock(nf, 2 * nf, k, down=True), CondResBlock(2 * nf, 2 * nf, k)])
        self.res3 = _CondSequential([CondResBlock(2 * nf, 2 * nf, k, down=True, dilation=2),
                                     CondResBlock(2 * nf, 2 * nf, k, dilation=2)])
        self.res4 = _CondSequential([CondResBlock(2 * nf, 2 * nf, k, down=True, dilation=4),
                                     CondResBlock(2 * nf, 2 * nf, k, dilation=4)])
        self.refine1 = RefineBlock([2 * nf], 2 * nf, k)
        self.refine2 = RefineBlock([2 * nf, 2 * nf], 2 * nf, k)
        self.refine3 = RefineBlock([2 * nf, 2 * nf], nf, k)
        self.refine4 = RefineBlock([nf, nf], nf, k, end=True)
        self.out_norm = CondInstanceNorm2dPlus(nf, k)
        self.out_conv = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: Tensor, noise_cond: Tensor) -> Tensor:
        want = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")
        if noise_cond.shape != (x.shape[0],):
            raise ValueError(f"noise_cond must have shape ({x.shape[0]},), got {tuple(noise_cond.shape)}")
        idx = noise_cond.round().long() if noise_cond.is_floating_point() else noise_cond.long()
        h = self.begin(x if self.centered else 2 * x - 1)
        l1 = self.res1(h, idx)
        l2 = self.res2(l1, idx)
        l3 = self.res3(l2, idx)
        l4 = self.res4(l3, idx)
        r = self.refine1([l4], idx, l4.shape[2:])
        r = self.refine2([l3, r], idx, l3.shape[2:])
        r = self.refine3([l2, r], idx, l2.shape[2:])
        r = self.refine4([l1, r], idx, l1.shape[2:])
        return self.out_conv(F.elu(self.out_norm(r, idx)))
