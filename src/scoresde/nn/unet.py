"""One U-Net for NCSN++ and DDPM++ (Song et al. 2021, App. H), and (with its options) DDPM's (Ho et al. 2020).

The network maps ``(x, noise_cond[, class_labels]) -> output`` of x's shape (``out_channels`` channels if
given: 2C for a mean and a learned variance, as in Nichol & Dhariwal 2021); it knows nothing about SDEs.
Blocks live in ``ModuleDict``s named by resolution (``enc["16x16_block0"]``, ``dec["8x8_up"]``) in
construction order; ``forward`` reads them by name.

Options (names of the official configs):

* ``embedding_type``: ``"fourier"`` (Gaussian Fourier features of log noise_cond, noise_cond = σ) or
  ``"positional"`` (sinusoidal, e.g. noise_cond = 999 t).
* ``resblock_type``: ``"biggan"`` (resampling inside residual blocks) or ``"ddpm"`` (separate resamplers).
* ``fir``: FIR [1, 3, 3, 1] up/down-sampling (else nearest / average pooling).
* ``progressive_input``: ``"none"``, ``"input_skip"`` (down-sampled image added through a 1×1 conv) or
  ``"residual"`` (a down-sampling conv path of the image, summed with h).
* ``progressive``: ``"none"``, ``"output_skip"`` (an output image pyramid summed across levels) or
  ``"residual"`` (an up-sampling conv path summed with h).
* ``skip_rescale`` (divide residual sums by √2), ``scale_by_sigma`` (divide the output by noise_cond = σ:
  the net then returns the score of the VE SDE, Song et al. 2021, App. H), ``dropout``, ``centered``
  (False: the net maps data in [0, 1] to [−1, 1] itself), ``num_classes`` (class conditioning added to
  the time embedding), ``norm_groups`` (None: min(C // 4, 32) groups; DDPM: 32).
* ``conditional`` (default True): False builds a network without noise conditioning (no embedding, no
  per-block projection of it); ``noise_cond`` is then ignored and may be None (the official
  ``model.conditional=False``).

Block names are part of the interface: :mod:`scoresde.interop.official` maps the official checkpoints'
``all_modules.<i>`` entries onto them by name (``embed``, ``emb_dense0``, ``emb_dense1``, ``enc[...]``,
``mid[...]``, ``dec[...]``, ``out_norm``, ``out_conv``), so renaming a block breaks that import.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.nn.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from scoresde.nn.layers import AttentionBlock, Combine, Downsample, ResBlock, Upsample, conv3x3, group_norm, linear

__all__ = ["ScoreUNet"]

_CHOICES = {
    "embedding_type": ("fourier", "positional"),
    "resblock_type": ("biggan", "ddpm"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
}


def _tag(res: int) -> str:
    return f"{res}x{res}"


class ScoreUNet(nn.Module):
    """NCSN++ / DDPM++ U-Net (Song et al. 2021, App. H); see the module docstring for the options."""

    def __init__(self, *, image_size: int = 32, in_channels: int = 3, nf: int = 128, ch_mult=(1, 2, 2, 2),
                 num_res_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.1,
                 embedding_type: str = "positional", fourier_scale: float = 16.0, resblock_type: str = "biggan",
                 fir: bool = False, fir_kernel=(1, 3, 3, 1), resamp_with_conv: bool = True,
                 progressive: str = "none", progressive_input: str = "none", progressive_combine: str = "sum",
                 skip_rescale: bool = True, scale_by_sigma: bool = False, centered: bool = True,
                 init_scale: float = 0.0, num_classes: int = 0, norm_groups: int | None = None,
                 out_channels: int | None = None, conditional: bool = True):
        super().__init__()
        self._check_options(locals())
        out_channels = in_channels if out_channels is None else out_channels
        self.image_size, self.in_channels, self.out_channels, self.centered = (image_size, in_channels,
                                                                               out_channels, centered)
        self.scale_by_sigma, self.skip_rescale = scale_by_sigma, skip_rescale
        self.progressive, self.progressive_input = progressive, progressive_input
        self.num_levels = len(ch_mult)
        self.attn_resolutions = tuple(attn_resolutions)
        self.conditional = conditional
        emb_dim = 4 * nf if conditional else None

        # noise-conditioning embedding → two dense layers (DDPM's timestep MLP)
        if conditional:
            if embedding_type == "fourier":
                self.embed = GaussianFourierEmbedding(nf, fourier_scale)
            else:
                self.embed = SinusoidalEmbedding(nf)
            self.emb_dense0 = linear(self.embed.out_dim, emb_dim)
            self.emb_dense1 = linear(emb_dim, emb_dim)
        self.class_emb = nn.Embedding(num_classes, emb_dim) if num_classes else None
        self.num_classes = num_classes

        block = dict(emb_dim=emb_dim, dropout=dropout, skip_rescale=skip_rescale, fir=fir, fir_kernel=fir_kernel,
                     norm_groups=norm_groups, init_scale=init_scale)
        attn = dict(skip_rescale=skip_rescale, norm_groups=norm_groups, init_scale=init_scale)
        resample = dict(with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel)
        biggan = resblock_type == "biggan"
        # shared parameter-free pyramid resamplers (FIR or naive)
        self.pyramid_down = Downsample(in_channels, fir=fir, fir_kernel=fir_kernel)
        self.pyramid_up = Upsample(out_channels, fir=fir, fir_kernel=fir_kernel)

        # encoder
        res = [image_size // 2**i for i in range(self.num_levels)]
        self.enc = nn.ModuleDict()
        self.enc[f"{_tag(image_size)}_conv"] = conv3x3(in_channels, nf)
        skips, ch, pyr_ch = [nf], nf, in_channels
        enc_skips = [f"{_tag(image_size)}_conv"]  # names after which h is kept for the decoder
        for level, mult in enumerate(ch_mult):
            r = _tag(res[level])
            for i in range(num_res_blocks):
                self.enc[f"{r}_block{i}"] = ResBlock(ch, nf * mult, **block)
                ch = nf * mult
                if res[level] in self.attn_resolutions:
                    self.enc[f"{r}_attn{i}"] = AttentionBlock(ch, **attn)
                skips.append(ch)
                enc_skips.append(list(self.enc)[-1])
            if level == self.num_levels - 1:
                continue
            r = _tag(res[level + 1])
            self.enc[f"{r}_down"] = (ResBlock(ch, down=True, **block) if biggan
                                     else Downsample(ch, **resample))
            if progressive_input == "input_skip":
                self.enc[f"{r}_in_skip"] = Combine(pyr_ch, ch, progressive_combine)
                ch = 2 * ch if progressive_combine == "cat" else ch
            elif progressive_input == "residual":
                self.enc[f"{r}_in_down"] = Downsample(pyr_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)
                pyr_ch = ch
            skips.append(ch)
            enc_skips.append(list(self.enc)[-1])

        self._enc_skips = frozenset(enc_skips)

        # middle
        r = _tag(res[-1])
        self.mid = nn.ModuleDict({f"{r}_block0": ResBlock(ch, **block), f"{r}_attn0": AttentionBlock(ch, **attn),
                                  f"{r}_block1": ResBlock(ch, **block)})

        # decoder
        self.dec = nn.ModuleDict()
        pyr_ch = 0
        for level in reversed(range(self.num_levels)):
            r = _tag(res[level])
            for i in range(num_res_blocks + 1):
                self.dec[f"{r}_block{i}"] = ResBlock(ch + skips.pop(), nf * ch_mult[level], **block)
                ch = nf * ch_mult[level]
            if res[level] in self.attn_resolutions:
                self.dec[f"{r}_attn"] = AttentionBlock(ch, **attn)
            if progressive == "output_skip":
                self.dec[f"{r}_out_norm"] = group_norm(ch, norm_groups)
                self.dec[f"{r}_out_conv"] = conv3x3(ch, out_channels, init_scale=init_scale)
            elif progressive == "residual" and level == self.num_levels - 1:
                self.dec[f"{r}_out_norm"] = group_norm(ch, norm_groups)
                self.dec[f"{r}_out_conv"] = conv3x3(ch, ch)
                pyr_ch = ch
            elif progressive == "residual":
                self.dec[f"{r}_out_up"] = Upsample(pyr_ch, ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)
                pyr_ch = ch
            if level:
                self.dec[f"{_tag(res[level - 1])}_up"] = (ResBlock(ch, up=True, **block) if biggan
                                                          else Upsample(ch, **resample))
        assert not skips
        if progressive != "output_skip":
            self.out_norm = group_norm(ch, norm_groups)
            self.out_conv = conv3x3(ch, out_channels, init_scale=init_scale)

    # ------------------------------------------------------------------------- checks
    @staticmethod
    def _check_options(opts):
        for name, choices in _CHOICES.items():
            if opts[name] not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {opts[name]!r}")
        size, levels = opts["image_size"], len(opts["ch_mult"])
        if not isinstance(size, int) or size < 1 or size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be a positive multiple of 2**(len(ch_mult) - 1) = {2 ** (levels - 1)} "
                             f"for ch_mult={tuple(opts['ch_mult'])}, got {size!r}")
        out = opts["out_channels"]
        if out is not None and (isinstance(out, bool) or not isinstance(out, int) or out < 1):
            raise ValueError(f"out_channels must be a positive int or None (= in_channels), got {out!r}")
        if opts["scale_by_sigma"] and opts["embedding_type"] != "fourier":
            raise ValueError("scale_by_sigma divides by noise_cond = σ, which needs embedding_type='fourier'")
        if opts["num_classes"] and not opts["conditional"]:
            raise ValueError("num_classes adds class labels to the noise embedding, which needs conditional=True")
        if opts["progressive_combine"] == "cat" and opts["progressive_input"] == "residual":
            raise ValueError("progressive_combine='cat' applies to progressive_input='input_skip' only")

    def _check_input(self, x: Tensor, noise_cond: Tensor | None):
        want = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}) for this network, "
                             f"got {tuple(x.shape)}")
        if noise_cond is None:
            if self.conditional or self.scale_by_sigma:
                raise ValueError(f"noise_cond must be a tensor of shape ({x.shape[0]},) for this network, got None")
        elif noise_cond.shape != (x.shape[0],):
            raise ValueError(f"noise_cond must have shape ({x.shape[0]},), got {tuple(noise_cond.shape)}")

    # ------------------------------------------------------------------------- forward
    def embedding(self, noise_cond: Tensor | None, class_labels: Tensor | None) -> Tensor | None:
        """The conditioning vector fed to every residual block (None for an unconditional network)."""
        if not self.conditional:
            return None
        e = self.embed(noise_cond).to(self.emb_dense0.weight.dtype)
        emb = self.emb_dense1(F.silu(self.emb_dense0(e)))
        if self.class_emb is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels of shape (B,)")
            emb = emb + self.class_emb(class_labels)
        return emb

    def forward(self, x: Tensor, noise_cond: Tensor | None, class_labels: Tensor | None = None) -> Tensor:
        """Network output for input ``x`` (B, C, H, W) and noise conditioning ``noise_cond`` (B,) (ignored,
        and may be None, when the network is unconditional)."""
        self._check_input(x, noise_cond)
        emb = self.embedding(noise_cond, class_labels)
        h = x if self.centered else 2 * x - 1
        pyramid, skips = h, []
        for name, m in self.enc.items():
            kind = name.split("_", 1)[1]
            if kind == "in_skip":
                pyramid = self.pyramid_down(pyramid)
                h = m(pyramid, h)
            elif kind == "in_down":
                pyramid = h = self._sum(m(pyramid), h)
            elif isinstance(m, ResBlock):
                h = m(h, emb)
            else:
                h = m(h)
            if name in self._enc_skips:
                skips.append(h)
        return self._decode(h, emb, skips, noise_cond)

    def _sum(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

    def _decode(self, h, emb, skips, noise_cond):
        for m in self.mid.values():
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        pyramid = None
        for name, m in self.dec.items():
            kind = name.split("_", 1)[1]
            if kind.startswith("block"):
                h = m(torch.cat([h, skips.pop()], dim=1), emb)
            elif kind == "attn":
                h = m(h)
            elif kind == "up":
                h = m(h, emb) if isinstance(m, ResBlock) else m(h)
            elif kind == "out_norm":
                out = F.silu(m(h))
            elif kind == "out_conv":
                out = m(out)
                if self.progressive == "output_skip":
                    pyramid = out if pyramid is None else self.pyramid_up(pyramid) + out
                else:  # residual path starts at the lowest resolution
                    pyramid = out
            elif kind == "out_up":
                pyramid = self._sum(m(pyramid), h)
                h = pyramid
        assert not skips
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self.out_conv(F.silu(self.out_norm(h)))
        if self.scale_by_sigma:
            h = h / noise_cond.to(h.dtype).reshape(-1, 1, 1, 1)
        return h
