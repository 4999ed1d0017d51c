"""Building blocks of the DDPM and NCSN++ / DDPM++ U-Nets (Ho et al. 2020, App. B; Song et al. 2021, App. H).

Sub-module names (GroupNorm_0, Conv_0, Dense_0, NIN_0, ...) are those of the reference checkpoints, so that
reference weights load by name.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.sde import VESDE
from pipeline.models import fir
from pipeline.speed.dropout import Dropout
from pipeline.speed.group_norm_act import group_norm_act
from pipeline.speed.layout import Conv2d, weight_like

SQRT2 = math.sqrt(2.0)


def activation(name: str) -> nn.Module:
    """model.nonlinearity: swish (= SiLU, the score-SDE default), elu (NCSN), relu, lrelu (slope 0.2)."""
    table = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}
    if name not in table:
        raise ValueError(f"model.nonlinearity {name!r} unknown; expected one of {sorted(table)}")
    return table[name]()


@torch.no_grad()
def ddpm_init_(weight: torch.Tensor, scale: float = 1.0, fan_in: int | None = None, fan_out: int | None = None):
    """DDPM's initialiser: uniform with variance scale / mean(fan_in, fan_out); scale 0 means 1e-10 (a zero start)."""
    scale = 1e-10 if scale == 0 else scale
    if fan_in is None:
        receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
        fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    limit = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    return weight.uniform_(-limit, limit)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    conv = Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)
    ddpm_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = Conv2d(in_ch, out_ch, 1)
    ddpm_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    ddpm_init_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def group_norm(channels: int, groups: int | None) -> nn.GroupNorm:
    """GroupNorm with ε = 1e-6; `groups` None means min(C/4, 32) (NCSN++), DDPM uses 32."""
    return nn.GroupNorm(min(channels // 4, 32) if groups is None else groups, channels, eps=1e-6)


def noise_levels(model_cfg, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SMLD noise scales σ_0 = σ_max > ... > σ_{N-1} = σ_min (label i -> σ_i): the VE SDE's levels, descending."""
    return VESDE(model_cfg.sigma_min, model_cfg.sigma_max, model_cfg.num_scales).sigmas_descending.to(dtype)


def timestep_embedding(labels: torch.Tensor, dim: int, max_positions: int = 10000,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) labels (DDPM App. B): [sin(l ω_j), cos(l ω_j)],
    ω_j = max_positions^(-j / (dim/2 - 1)). Computed in `dtype` (float32 as in the reference, float64 for float64 nets)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=labels.device) * (-math.log(max_positions) / (half - 1)))
    args = labels.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log σ (Tancik et al. 2020; score SDE App. H.2): [sin 2π W l, cos 2π W l].

    W ~ N(0, scale²) is fixed (a parameter that takes no gradient, as in the reference checkpoints).
    """

    def __init__(self, embedding_size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def add_(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """h + t written into h, where h is the fresh output of a convolution (whose backward keeps its input and weight,
    not its output, so autograd allows it): no activation-sized allocation, h stays in cache. Out of place where the
    sum would not fit h: another shape, or a dtype it would promote (a bf16 conv output plus an fp32 tensor)."""
    if t.dtype == h.dtype and torch.broadcast_shapes(h.shape, t.shape) == h.shape:
        return h.add_(t)
    return h + t


def residual(x: torch.Tensor, h: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
    """x + h, or (x + h) / √2 with skip_rescale (score SDE App. H), in place on h, a block's last conv output (add_).
    Train step at batch 256 against out of place: DDPM++ 1.04x, NCSN++ 0.99-1.02x (benchmarks/bench_speed.py, switches)."""
    h = add_(h, x)  # a fresh tensor either way
    return h.div_(SQRT2) if skip_rescale else h


class NIN(nn.Module):
    """Network-in-network: a per-pixel dense layer (a 1×1 convolution) with DDPM's weight layout W [in, out]."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(ddpm_init_(torch.empty(in_dim, num_units), init_scale, in_dim, num_units))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight_like(self.W.t()[:, :, None, None], x), self.b)


class AttnBlock(nn.Module):
    """Self-attention over all pixels (DDPM): x + NIN(softmax(q kᵀ / √C) v), optionally rescaled by 1/√2."""

    def __init__(self, channels: int, groups: int | None = None, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = group_norm_act(x, self.GroupNorm_0)
        q, k, v = (nin(h).flatten(2).transpose(1, 2) for nin in (self.NIN_0, self.NIN_1, self.NIN_2))  # [B, HW, C]
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √C) v
        return residual(x, self.NIN_3(h.transpose(1, 2).reshape(b, c, hgt, wid)), self.skip_rescale)


class Upsample(nn.Module):
    """×2 up-sampling: nearest (+3×3 conv `Conv_0`), or FIR (+ fused FIR conv `Conv2d_0`)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir_on: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir_on:
            self.Conv2d_0 = fir.FIRConv2d(in_ch, out_ch, 3, up=True, fir_kernel=fir_kernel)
            ddpm_init_(self.Conv2d_0.weight)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir_on, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir.upsample_2d(x, self.fir_kernel)
        h = fir.naive_upsample_2d(x)
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """×2 down-sampling: 2×2 mean or stride-2 3×3 conv `Conv_0` (TF 'SAME' padding), or FIR (+ fused conv `Conv2d_0`)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir_on: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir_on:
            self.Conv2d_0 = fir.FIRConv2d(in_ch, out_ch, 3, down=True, fir_kernel=fir_kernel)
            ddpm_init_(self.Conv2d_0.weight)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir_on, tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir.downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))  # TF 'SAME' for stride 2: pad right/bottom only
        return fir.naive_downsample_2d(x)


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block: GN-act-conv, + Dense(act(temb)), GN-act-dropout-conv; NIN shortcut when widths differ."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 dropout: float = 0.1, skip_rescale: bool = False, init_scale: float = 0.0, groups: int | None = None):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, groups)
        self.Dropout_0 = Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.Conv_0(group_norm_act(x, self.GroupNorm_0, self.act))
        if temb is not None:
            h = add_(h, self.Dense_0(self.act(temb))[:, :, None, None])
        h = self.Conv_1(self.Dropout_0(group_norm_act(h, self.GroupNorm_1, self.act)))
        if hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return residual(x, h, self.skip_rescale)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block (Brock et al. 2019) as in NCSN++: the block itself resamples (up or down), on both
    the residual and the 1×1-conv shortcut, with FIR or naive resampling."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir_on: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, None)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, None)
        self.Dropout_0 = Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir_on, tuple(fir_kernel)

    def _resample(self, t: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir.upsample_2d(t, self.fir_kernel) if self.fir else fir.naive_upsample_2d(t)
        return fir.downsample_2d(t, self.fir_kernel) if self.fir else fir.naive_downsample_2d(t)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = group_norm_act(x, self.GroupNorm_0, self.act)
        if self.up or self.down:
            h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = add_(h, self.Dense_0(self.act(temb))[:, :, None, None])
        h = self.Conv_1(self.Dropout_0(group_norm_act(h, self.GroupNorm_1, self.act)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return residual(x, h, self.skip_rescale)


class Combine(nn.Module):
    """Progressive-input skip (NCSN++ 'input_skip'): 1×1 conv of the image pyramid, then sum or concatenate."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y
