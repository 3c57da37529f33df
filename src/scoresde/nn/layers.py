"""Building blocks of the score U-Nets (Ho et al. 2020; Song et al. 2021, App. H), pure PyTorch.

* FIR resampling (Zhang 2019; Karras et al. 2020): :func:`upfirdn2d` with a registered filter buffer,
  no compiled extension. Up-sampling inserts zeros then filters with gain 4; down-sampling filters
  then keeps every second pixel.
* :class:`Downsample` / :class:`Upsample` (average-pool / nearest, optional conv, or FIR), :class:`Combine`
  (input-skip pyramid), :class:`ResBlock` (DDPM or BigGAN residual block, optional up/down),
  :class:`AttentionBlock` (single-head self-attention over pixels).

All layers take ``(B, C, H, W)`` of any float dtype and keep the input's device and memory format.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["default_init", "conv3x3", "conv1x1", "linear", "group_norm", "fir_filter", "upfirdn2d", "Downsample",
           "Upsample", "Combine", "ResBlock", "AttentionBlock"]


# ----------------------------------------------------------------------------- initialisation
def default_init(weight: Tensor, scale: float = 1.0) -> Tensor:
    """Variance scaling, fan-average, uniform (the DDPM initialiser); scale 0 means 1e-10 (near-zero)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    limit = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return weight.uniform_(-limit, limit)


def _init(layer, init_scale: float = 1.0):
    default_init(layer.weight, init_scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, padding: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    return _init(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding), init_scale)


def conv1x1(in_ch: int, out_ch: int, *, init_scale: float = 1.0) -> nn.Conv2d:
    return _init(nn.Conv2d(in_ch, out_ch, 1), init_scale)


def linear(in_dim: int, out_dim: int, *, init_scale: float = 1.0) -> nn.Linear:
    return _init(nn.Linear(in_dim, out_dim), init_scale)


def group_norm(channels: int, groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6: ``groups`` fixed (DDPM: 32) or, if None, min(C // 4, 32) (NCSN++)."""
    g = groups if groups is not None else min(channels // 4, 32)
    if g < 1 or channels % g:
        raise ValueError(f"cannot split {channels} channels into {g} normalisation groups; "
                         f"use a channel count divisible by {g}")
    return nn.GroupNorm(g, channels, eps=1e-6)


# ----------------------------------------------------------------------------- FIR resampling
def fir_filter(taps) -> Tensor:
    """Separable 2-D FIR filter from 1-D taps (e.g. [1, 3, 3, 1]), normalised to sum 1."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim != 1 or k.numel() < 1:
        raise ValueError(f"fir_kernel must be a non-empty 1-D sequence of taps, got {taps!r}")
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Zero-insertion up-sampling by ``up``, padding, FIR filtering, then decimation by ``down``.

    Each channel is filtered independently with a depthwise convolution (the filter is flipped, i.e.
    a true convolution). ``pad = (before, after)`` applies to both spatial axes.
    """
    B, C, H, W = x.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1)).reshape(B, C, H * up, W * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = kernel.flip((0, 1)).to(dtype=x.dtype)[None, None].expand(C, 1, *kernel.shape)
    return F.conv2d(x, w, stride=down, groups=C)


def fir_upsample(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel * factor**2, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def naive_upsample(x: Tensor, factor: int = 2) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample(x: Tensor, factor: int = 2) -> Tensor:
    return F.avg_pool2d(x, factor, stride=factor)


class _FIR(nn.Module):
    """Holds an FIR filter as a non-persistent buffer (moves with ``.to``; not in the state dict)."""

    def __init__(self, fir: bool, fir_kernel):
        super().__init__()
        self.fir = fir
        self.register_buffer("kernel", fir_filter(fir_kernel) if fir else None, persistent=False)

    def up(self, x: Tensor) -> Tensor:
        return fir_upsample(x, self.kernel) if self.fir else naive_upsample(x)

    def down(self, x: Tensor) -> Tensor:
        return fir_downsample(x, self.kernel) if self.fir else naive_downsample(x)


class Downsample(_FIR):
    """Halve H and W. Without FIR: a stride-2 3×3 conv after padding (0, 1, 0, 1) (DDPM), or 2×2 average
    pooling; with FIR: filter-then-decimate, or filter (pad 2) then a stride-2 3×3 conv (Karras et al. 2020)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool = False, fir: bool = False,
                 fir_kernel=(1, 3, 3, 1)):
        super().__init__(fir, fir_kernel)
        out_ch = out_ch or in_ch
        self.with_conv = with_conv
        if with_conv:
            self.conv = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif out_ch != in_ch:
            raise ValueError(f"Downsample without conv cannot change channels ({in_ch} -> {out_ch})")

    def forward(self, x: Tensor) -> Tensor:
        if not self.with_conv:
            return self.down(x)
        if self.fir:
            p = self.kernel.shape[0] - 2 + self.conv.kernel_size[0] - 1
            return self.conv(upfirdn2d(x, self.kernel, pad=((p + 1) // 2, p // 2)))
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(_FIR):
    """Double H and W by nearest-neighbour or FIR up-sampling, optionally followed by a 3×3 conv.

    (With FIR and a conv the official code meant a fused transposed conv that does not run; here the
    FIR up-sampling is followed by a 'same' 3×3 conv.)
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool = False, fir: bool = False,
                 fir_kernel=(1, 3, 3, 1)):
        super().__init__(fir, fir_kernel)
        out_ch = out_ch or in_ch
        self.with_conv = with_conv
        if with_conv:
            self.conv = conv3x3(in_ch, out_ch)
        elif out_ch != in_ch:
            raise ValueError(f"Upsample without conv cannot change channels ({in_ch} -> {out_ch})")

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        return self.conv(h) if self.with_conv else h


class Combine(nn.Module):
    """Input-skip combiner: a 1×1 conv of the image pyramid, summed with or concatenated to ``h``."""

    def __init__(self, in_ch: int, out_ch: int, method: str = "sum"):
        super().__init__()
        if method not in ("sum", "cat"):
            raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {method!r}")
        self.conv, self.method = conv1x1(in_ch, out_ch), method

    def forward(self, pyramid: Tensor, h: Tensor) -> Tensor:
        y = self.conv(pyramid)
        return y + h if self.method == "sum" else torch.cat([y, h], dim=1)


# ----------------------------------------------------------------------------- blocks
class ResBlock(_FIR):
    """Residual block GN → act → [resample] → conv → +Dense(act(emb)) → GN → act → dropout → conv, plus a
    shortcut (Ho et al. 2020, App. B; the BigGAN variant with up/down resampling, Song et al. 2021, App. H).

    The shortcut is a 1×1 conv when channels change (or, for BigGAN blocks, when resampling); the sum is
    divided by √2 when ``skip_rescale``.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, *, emb_dim: int | None, dropout: float = 0.0,
                 skip_rescale: bool = True, up: bool = False, down: bool = False, fir: bool = False,
                 fir_kernel=(1, 3, 3, 1), norm_groups: int | None = None, init_scale: float = 0.0):
        super().__init__(fir and (up or down), fir_kernel)
        out_ch = out_ch or in_ch
        if up and down:
            raise ValueError("a ResBlock resamples up or down, not both")
        self.up_, self.down_, self.skip_rescale = up, down, skip_rescale
        self.norm0 = group_norm(in_ch, norm_groups)
        self.conv0 = conv3x3(in_ch, out_ch)
        self.emb_proj = linear(emb_dim, out_ch) if emb_dim else None
        self.norm1 = group_norm(out_ch, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.skip = conv1x1(in_ch, out_ch) if (in_ch != out_ch or up or down) else None

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = F.silu(self.norm0(x))
        if self.up_:
            h, x = self.up(h), self.up(x)
        elif self.down_:
            h, x = self.down(h), self.down(x)
        h = self.conv0(h)
        if self.emb_proj is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H·W pixels with 1×1-conv q, k, v and output projections
    (Ho et al. 2020, App. B), residual; the sum is divided by √2 when ``skip_rescale``."""

    def __init__(self, channels: int, *, skip_rescale: bool = False, norm_groups: int | None = None,
                 init_scale: float = 0.0):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.q, self.k, self.v = conv1x1(channels, channels), conv1x1(channels, channels), conv1x1(channels, channels)
        self.proj = conv1x1(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(2, 3) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √C) v, over pixels
        h = self.proj(a.transpose(2, 3).reshape(B, C, H, W))
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out
