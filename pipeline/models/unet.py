"""The configurable score U-Net of Song et al. 2021 (App. H): NCSN++ / DDPM++ (`ncsnpp`), and DDPM's U-Net as a preset.

Modules live in one flat list `all_modules`, in the order of the reference implementation, so that its checkpoints
load by name; `UNetSpec` says what is in it and `forward` walks it in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pipeline.models import fir
from pipeline.models import layers as L
from pipeline.models.registry import register
from pipeline.speed.group_norm_act import group_norm_act
from pipeline.speed.layout import cpu_channels_last


@dataclass(frozen=True)
class UNetSpec:
    """Everything the U-Net reads, gathered from params (`model.*`, data size/channels/centering)."""

    image_size: int
    channels: int
    centered: bool
    nf: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    resamp_with_conv: bool
    conditional: bool
    nonlinearity: str
    embedding_type: str  # "fourier": labels are σ, embedded as Fourier features of log σ; "positional": labels are t
    fourier_scale: float
    scale_by_sigma: bool
    fir: bool
    fir_kernel: tuple[int, ...]
    skip_rescale: bool
    resblock_type: str  # "biggan" (blocks resample themselves) or "ddpm" (separate Up/Downsample layers)
    progressive: str  # output pyramid: none | output_skip | residual
    progressive_input: str  # input pyramid: none | input_skip | residual
    progressive_combine: str
    init_scale: float
    norm_groups: int | None  # None: min(C/4, 32) per layer (NCSN++); DDPM uses 32 everywhere

    @classmethod
    def ncsnpp(cls, params) -> "UNetSpec":
        m, d = params.model, params.data
        for key, value, allowed in (("normalization", m.normalization, "GroupNorm"), ("attention_type", m.attention_type, "ddpm"),
                                    ("conv_size", m.conv_size, 3)):
            if value != allowed:
                raise ValueError(f"model.{key}: {m.name} supports only {allowed!r} (got {value!r})")
        if m.embedding_type == "fourier" and not params.training.continuous:
            raise ValueError("model.embedding_type: fourier embeds log σ of continuous VE training; set training.continuous: true")
        return cls(d.image_size, d.num_channels, d.centered, m.nf, tuple(m.ch_mult), m.num_res_blocks, tuple(m.attn_resolutions),
                   m.dropout, m.resamp_with_conv, m.conditional, m.nonlinearity, m.embedding_type, m.fourier_scale,
                   m.scale_by_sigma, m.fir, tuple(m.fir_kernel), m.skip_rescale, m.resblock_type, m.progressive,
                   m.progressive_input, m.progressive_combine, m.init_scale, None)


class UNet(nn.Module):
    """net(x, labels) -> output of x's shape. Down path of `num_res_blocks` blocks per resolution, a middle
    (block, attention, block), an up path of `num_res_blocks + 1` blocks per resolution fed by skip connections."""

    def __init__(self, params, spec: UNetSpec):
        super().__init__()
        s = self.spec = spec
        n_levels = len(s.ch_mult)
        if s.image_size % 2 ** (n_levels - 1):
            raise ValueError(f"data.image_size {s.image_size} must be divisible by 2^(len(model.ch_mult) - 1) = {2 ** (n_levels - 1)}")
        self.attn_at_level = [s.image_size // 2**i in s.attn_resolutions for i in range(n_levels)]
        self.act = act = L.activation(s.nonlinearity)
        self.register_buffer("sigmas", L.noise_levels(params.model), persistent=False)
        nf, temb_dim = s.nf, 4 * s.nf

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if s.resblock_type == "ddpm":
                return L.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim, s.dropout, s.skip_rescale, s.init_scale, s.norm_groups)
            return L.ResnetBlockBigGAN(act, in_ch, out_ch, temb_dim, up, down, s.dropout, s.fir, s.fir_kernel, s.skip_rescale, s.init_scale)

        def attention(ch):
            return L.AttnBlock(ch, s.norm_groups, s.skip_rescale, s.init_scale)

        def resample(cls, in_ch, out_ch=None, with_conv=s.resamp_with_conv):
            return cls(in_ch, out_ch, with_conv=with_conv, fir_on=s.fir, fir_kernel=s.fir_kernel)

        modules: list[nn.Module] = []
        if s.embedding_type == "fourier":
            modules.append(L.GaussianFourierProjection(nf, s.fourier_scale))
        if s.conditional:  # label embedding -> Dense -> act -> Dense (DDPM App. B)
            modules += [L.dense(2 * nf if s.embedding_type == "fourier" else nf, temb_dim), L.dense(temb_dim, temb_dim)]

        modules.append(L.conv3x3(s.channels, nf))
        skip_ch, in_ch, pyramid_ch = [nf], nf, s.channels
        for level, mult in enumerate(s.ch_mult):
            for _ in range(s.num_res_blocks):
                modules.append(resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if self.attn_at_level[level]:
                    modules.append(attention(in_ch))
                skip_ch.append(in_ch)
            if level != n_levels - 1:
                modules.append(resample(L.Downsample, in_ch) if s.resblock_type == "ddpm" else resblock(in_ch, down=True))
                if s.progressive_input == "input_skip":
                    modules.append(L.Combine(pyramid_ch, in_ch, s.progressive_combine))
                    in_ch *= 2 if s.progressive_combine == "cat" else 1
                elif s.progressive_input == "residual":
                    modules.append(resample(L.Downsample, pyramid_ch, in_ch, with_conv=True))
                    pyramid_ch = in_ch
                skip_ch.append(in_ch)

        modules += [resblock(in_ch), attention(in_ch), resblock(in_ch)]

        for level in reversed(range(n_levels)):
            for _ in range(s.num_res_blocks + 1):
                modules.append(resblock(in_ch + skip_ch.pop(), nf * s.ch_mult[level]))
                in_ch = nf * s.ch_mult[level]
            if self.attn_at_level[level]:
                modules.append(attention(in_ch))
            if s.progressive == "output_skip":  # a GN-act-conv head per resolution, summed up the pyramid
                modules += [L.group_norm(in_ch, None), L.conv3x3(in_ch, s.channels, init_scale=s.init_scale)]
            elif s.progressive == "residual":
                if level == n_levels - 1:
                    modules += [L.group_norm(in_ch, None), L.conv3x3(in_ch, in_ch)]
                else:
                    modules.append(resample(L.Upsample, pyramid_ch, in_ch, with_conv=True))
                pyramid_ch = in_ch
            if level != 0:
                modules.append(resample(L.Upsample, in_ch) if s.resblock_type == "ddpm" else resblock(in_ch, up=True))
        assert not skip_ch

        if s.progressive != "output_skip":
            modules += [L.group_norm(in_ch, s.norm_groups), L.conv3x3(in_ch, s.channels, init_scale=s.init_scale)]
        self.all_modules = nn.ModuleList(modules)

    def _merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = cpu_channels_last(a)
        return (a + b) / L.SQRT2 if self.spec.skip_rescale else a + b

    def _pyramid_resample(self, x: torch.Tensor, up: bool) -> torch.Tensor:
        s = self.spec
        if up:
            return fir.upsample_2d(x, s.fir_kernel) if s.fir else fir.naive_upsample_2d(x)
        return fir.downsample_2d(x, s.fir_kernel) if s.fir else fir.naive_downsample_2d(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s, act = self.spec, self.act
        modules = iter(self.all_modules)

        def run_next(*inputs):
            # on CPU every activation is kept channels last (1-channel images are ambiguous, and convs follow inputs)
            return cpu_channels_last(next(modules)(*inputs))

        if s.embedding_type == "fourier":
            used_sigmas = labels
            temb = run_next(torch.log(labels.to(x.dtype)))
        else:
            used_sigmas = self.sigmas[labels.long()] if s.scale_by_sigma else None
            temb = L.timestep_embedding(labels, s.nf, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
            temb = temb.to(x.dtype)
        if s.conditional:
            temb = run_next(temb)
            temb = run_next(act(temb))
        else:
            temb = None
        if not s.centered:
            x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
        x = cpu_channels_last(x)  # faster CPU convolutions (layout.py); the output is returned in the standard layout

        n_levels = len(s.ch_mult)
        input_pyramid = x
        hs = [run_next(x)]
        for level in range(n_levels):
            for _ in range(s.num_res_blocks):
                h = run_next(hs[-1], temb)
                if self.attn_at_level[level]:
                    h = run_next(h)
                hs.append(h)
            if level != n_levels - 1:
                h = run_next(hs[-1]) if s.resblock_type == "ddpm" else run_next(hs[-1], temb)
                if s.progressive_input == "input_skip":
                    input_pyramid = self._pyramid_resample(input_pyramid, up=False)
                    h = run_next(input_pyramid, h)
                elif s.progressive_input == "residual":
                    input_pyramid = h = self._merge(run_next(input_pyramid), h)
                hs.append(h)

        h = run_next(hs[-1], temb)
        h = run_next(h)
        h = run_next(h, temb)

        pyramid = None
        for level in reversed(range(n_levels)):
            for _ in range(s.num_res_blocks + 1):
                h = run_next(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at_level[level]:
                h = run_next(h)
            if s.progressive == "output_skip":
                norm, conv = next(modules), next(modules)
                head = conv(group_norm_act(h, norm, act))
                pyramid = head if pyramid is None else self._pyramid_resample(pyramid, up=True) + head
            elif s.progressive == "residual":
                if level == n_levels - 1:
                    norm, conv = next(modules), next(modules)
                    pyramid = conv(group_norm_act(h, norm, act))
                else:
                    pyramid = h = self._merge(run_next(pyramid), h)
            if level != 0:
                h = run_next(h) if s.resblock_type == "ddpm" else run_next(h, temb)

        if s.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(modules), next(modules)
            h = conv(group_norm_act(h, norm, act))
        assert next(modules, None) is None, "forward did not use every module"
        if s.scale_by_sigma:  # s(x, σ) = net(x, σ) / σ: the net predicts -z (score SDE App. H.2)
            h = h / used_sigmas.to(h.dtype).reshape(-1, *([1] * (h.dim() - 1)))
        return h.contiguous()


@register("ncsnpp")
class NCSNpp(UNet):
    """NCSN++ and DDPM++ (score SDE App. H): BigGAN or DDPM blocks, FIR resampling, skip rescaling by 1/√2,
    progressive input/output pyramids, Fourier (log σ) or positional (t) label embeddings, optional output / σ."""

    def __init__(self, params):
        super().__init__(params, UNetSpec.ncsnpp(params))
