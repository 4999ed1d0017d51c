"""DDPM's U-Net (Ho et al. 2020, App. B): the score U-Net with DDPM blocks, GroupNorm(32), positional embedding of t."""
from __future__ import annotations

from pipeline.models.registry import register
from pipeline.models.unet import UNet, UNetSpec


@register("ddpm")
class DDPM(UNet):
    """Reads model.nf, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv, conditional, nonlinearity,
    scale_by_sigma (output / σ_label, for SMLD training); the NCSN++ options (FIR, progressive, ...) do not apply."""

    def __init__(self, params):
        m, d = params.model, params.data
        if m.nf % 32:
            raise ValueError(f"model.nf: ddpm normalises with GroupNorm(32 groups), so nf must be a multiple of 32 (got {m.nf})")
        spec = UNetSpec(d.image_size, d.num_channels, d.centered, m.nf, tuple(m.ch_mult), m.num_res_blocks,
                        tuple(m.attn_resolutions), m.dropout, m.resamp_with_conv, m.conditional, m.nonlinearity,
                        embedding_type="positional", fourier_scale=m.fourier_scale, scale_by_sigma=m.scale_by_sigma,
                        fir=False, fir_kernel=(1, 3, 3, 1), skip_rescale=False, resblock_type="ddpm", progressive="none",
                        progressive_input="none", progressive_combine="sum", init_scale=0.0, norm_groups=32)
        super().__init__(params, spec)
