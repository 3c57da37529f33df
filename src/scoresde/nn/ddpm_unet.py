"""The DDPM U-Net (Ho et al. 2020, App. B): :class:`ScoreUNet` with DDPM's choices fixed.

Residual blocks with a 1×1 shortcut on channel change, GroupNorm with 32 groups (eps 1e-6), stride-2
conv down-sampling with asymmetric (0, 1, 0, 1) padding, nearest + conv up-sampling, sinusoidal
embedding of the timestep (999 t for the continuous VP SDE), attention at 16×16, no skip rescaling.
``conditional=False`` drops the noise conditioning (no embedding, no per-block projection).
"""

from __future__ import annotations

from scoresde.nn.unet import ScoreUNet

__all__ = ["DDPMUNet"]


class DDPMUNet(ScoreUNet):
    """Ho et al. 2020's U-Net; every channel count must be divisible by ``norm_groups`` (32)."""

    def __init__(self, *, image_size: int = 32, in_channels: int = 3, nf: int = 128, ch_mult=(1, 2, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions=(16,), dropout: float = 0.1,
                 resamp_with_conv: bool = True, centered: bool = True, num_classes: int = 0,
                 norm_groups: int = 32, out_channels: int | None = None, conditional: bool = True):
        super().__init__(image_size=image_size, in_channels=in_channels, nf=nf, ch_mult=ch_mult,
                         num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, dropout=dropout,
                         embedding_type="positional", resblock_type="ddpm", fir=False,
                         resamp_with_conv=resamp_with_conv, progressive="none", progressive_input="none",
                         skip_rescale=False, scale_by_sigma=False, centered=centered, num_classes=num_classes,
                         norm_groups=norm_groups, out_channels=out_channels, conditional=conditional)
