"""NCSN (Song & Ermon 2019, App. B.1: CondRefineNetDilated) and NCSNv2 (Song & Ermon 2020): dilated RefineNets.

Four residual stages (the 2nd halves the resolution, the 3rd and 4th dilate by 2 and 4) feed four RefineNet blocks
(Lin et al. 2017). NCSN conditions every normalisation on the noise level (conditional instance norm++); NCSNv2 is
unconditional and divides its output by σ (NCSNv2 Technique 3). Sub-module names are those of the reference code.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.models import layers as L
from pipeline.models.registry import register

NormFactory = Callable[[int], nn.Module]


class InstanceNormPlus(nn.Module):
    """Instance norm++ (NCSN App. A, Eq. 10): γ_k (IN(x)_k + α_k (μ_k − mean(μ)) / sd(μ)) + β_k, with μ_k the mean of
    channel k. Conditional (one (γ, α, β) row of `embed` per noise level, fed `y`) or unconditional (`y` ignored)."""

    def __init__(self, channels: int, num_classes: int | None = None):
        super().__init__()
        self.channels = channels
        if num_classes is None:
            self.alpha = nn.Parameter(1 + 0.02 * torch.randn(channels))
            self.gamma = nn.Parameter(1 + 0.02 * torch.randn(channels))
            self.beta = nn.Parameter(torch.zeros(channels))
        else:
            self.embed = nn.Embedding(num_classes, 3 * channels)
            with torch.no_grad():  # γ, α ~ N(1, 0.02), β = 0
                self.embed.weight[:, : 2 * channels].normal_(1, 0.02)
                self.embed.weight[:, 2 * channels:].zero_()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        means = (means - means.mean(dim=-1, keepdim=True)) / torch.sqrt(means.var(dim=-1, keepdim=True) + 1e-5)
        h = F.instance_norm(x, eps=1e-5)
        if hasattr(self, "embed"):
            gamma, alpha, beta = self.embed(y).chunk(3, dim=-1)
        else:
            gamma, alpha, beta = (p.expand(x.shape[0], -1) for p in (self.gamma, self.alpha, self.beta))
        h = h + means[..., None, None] * alpha[..., None, None]
        return gamma[..., None, None] * h + beta[..., None, None]


def conv3x3(in_ch: int, out_ch: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution then 2×2 mean pooling (the down-sampling of the NCSN residual blocks)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        # mean of the four 2×2 polyphase components, summed in the reference's order (float32 results agree bit for bit)
        return (h[..., ::2, ::2] + h[..., 1::2, ::2] + h[..., ::2, 1::2] + h[..., 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """Pre-activation residual block: norm-act-conv, norm-act-conv, plus a (projected) shortcut. With dilation d > 1
    the 'down' block keeps the resolution and dilates instead (the 'dilated' in CondRefineNetDilated)."""

    def __init__(self, in_ch: int, out_ch: int, norm: NormFactory, act: nn.Module, down: bool = False, dilation: int = 1):
        super().__init__()
        mid = in_ch if down else out_ch
        self.conv1 = conv3x3(in_ch, mid, dilation=dilation)
        self.normalize2 = norm(mid)
        if down and dilation == 1:
            self.conv2 = ConvMeanPool(mid, out_ch, 3)
            self.shortcut = ConvMeanPool(in_ch, out_ch, 1)
        else:
            self.conv2 = conv3x3(mid, out_ch, dilation=dilation)
            if down or in_ch != out_ch:
                self.shortcut = conv3x3(in_ch, out_ch, dilation=dilation)
        self.normalize1 = norm(in_ch)
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(self.act(self.normalize1(x, y)))
        h = self.conv2(self.act(self.normalize2(h, y)))
        return h + (self.shortcut(x) if hasattr(self, "shortcut") else x)


class RCUBlock(nn.Module):
    """Residual conv units: `n_blocks` × (x + [norm-]act-conv repeated `n_stages` times); norms only when conditional."""

    def __init__(self, features: int, n_blocks: int, n_stages: int, norm: NormFactory | None, act: nn.Module):
        super().__init__()
        self.n_blocks, self.n_stages, self.has_norm, self.act = n_blocks, n_stages, norm is not None, act
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                if norm is not None:
                    self.add_module(f"{i}_{j}_norm", norm(features))
                self.add_module(f"{i}_{j}_conv", conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                if self.has_norm:
                    x = getattr(self, f"{i}_{j}_norm")(x, y)
                x = getattr(self, f"{i}_{j}_conv")(self.act(x))
            x = x + residual
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: [norm-]conv each input, resize bilinearly to the finest shape, sum."""

    def __init__(self, in_planes: list[int], features: int, norm: NormFactory | None):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(c, features) for c in in_planes)
        if norm is not None:
            self.norms = nn.ModuleList(norm(c) for c in in_planes)

    def forward(self, xs: list[torch.Tensor], y: torch.Tensor | None, shape) -> torch.Tensor:
        out = 0
        for i, (x, conv) in enumerate(zip(xs, self.convs)):
            h = conv(self.norms[i](x, y) if hasattr(self, "norms") else x)
            out = out + F.interpolate(h, size=tuple(shape), mode="bilinear", align_corners=True)
        return out


class BoxFilter(nn.Module):
    """The 5×5 mean of NCSN's CRP blocks, AvgPool2d(5, stride 1, padding 2) with the zero padding counted, computed as
    a depthwise convolution with weights 1/25: the same sum in another order (float32 outputs agree to rounding). On
    CPU, torch's average pooling of NCHW tensors is slow: the pooling is about 10x faster, the default suite's NCSN
    train step and forward pass (ALD sampling) about 1.18x (benchmarks/bench_box_filter.py)."""

    size = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.size
        weight = x.new_full((x.shape[1], 1, k, k), 1.0 / (k * k))
        return F.conv2d(x, weight, padding=k // 2, groups=x.shape[1])


class CRPBlock(nn.Module):
    """Chained residual pooling: x = act(x); path = x; repeat: path = conv(pool5×5([norm] path)); x += path."""

    def __init__(self, features: int, n_stages: int, norm: NormFactory | None, act: nn.Module, pool: str):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(features, features, bias=False) for _ in range(n_stages))
        if norm is not None:
            self.norms = nn.ModuleList(norm(features) for _ in range(n_stages))
        self.pool = nn.MaxPool2d(5, 1, 2) if pool == "max" else BoxFilter()
        self.act = act

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = path = self.act(x)
        for i, conv in enumerate(self.convs):
            if hasattr(self, "norms"):
                path = self.norms[i](path, y)
            path = conv(self.pool(path))
            x = path + x
        return x


class RefineBlock(nn.Module):
    """RefineNet block: RCU each input (2 units), fuse (MSF), chained pooling (CRP), output RCU (3 units if last)."""

    def __init__(self, in_planes: list[int], features: int, norm: NormFactory | None, act: nn.Module, pool: str,
                 start: bool = False, end: bool = False):
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, norm, act) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2, norm, act)
        if not start:
            self.msf = MSFBlock(in_planes, features, norm)
        self.crp = CRPBlock(features, 2, norm, act, pool)

    def forward(self, xs: list[torch.Tensor], y: torch.Tensor | None, shape) -> torch.Tensor:
        hs = [adapt(x, y) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, y, shape) if len(hs) > 1 else hs[0]
        return self.output_convs(self.crp(h, y), y)


class RefineNetDilated(nn.Module):
    """net(x, labels): labels are noise-level indices i (σ_i = σ_max (σ_min/σ_max)^(i/(N-1)), model.num_scales = N)."""

    conditional: bool
    pool: str

    def __init__(self, params):
        super().__init__()
        m, d = params.model, params.data
        if m.normalization != "InstanceNorm++":
            raise ValueError(f"model.normalization: {m.name} supports only 'InstanceNorm++' (got {m.normalization!r})")
        if d.image_size % 2:
            raise ValueError(f"data.image_size: {m.name} halves the resolution once, so it must be even (got {d.image_size})")
        ngf, ch, act = m.nf, d.num_channels, L.activation(m.nonlinearity)
        self.centered, self.scale_by_sigma, self.act = d.centered, m.scale_by_sigma, act
        self.register_buffer("sigmas", L.noise_levels(m), persistent=False)

        def norm(c):
            return InstanceNormPlus(c, m.num_scales if self.conditional else None)

        def stage(in_ch, out_ch, dilation, down):
            return nn.ModuleList([ResidualBlock(in_ch, out_ch, norm, act, down=down, dilation=dilation),
                                  ResidualBlock(out_ch, out_ch, norm, act, dilation=dilation)])

        self.begin_conv = nn.Conv2d(ch, ngf, 3, padding=1)
        self.normalizer = norm(ngf)
        self.end_conv = nn.Conv2d(ngf, ch, 3, padding=1)
        self.res1 = stage(ngf, ngf, 1, down=False)
        self.res2 = stage(ngf, 2 * ngf, 1, down=True)
        self.res3 = stage(2 * ngf, 2 * ngf, 2, down=True)
        self.res4 = stage(2 * ngf, 2 * ngf, 4, down=True)
        refine_norm = norm if self.conditional else None
        self.refine1 = RefineBlock([2 * ngf], 2 * ngf, refine_norm, act, self.pool, start=True)
        self.refine2 = RefineBlock([2 * ngf, 2 * ngf], 2 * ngf, refine_norm, act, self.pool)
        self.refine3 = RefineBlock([2 * ngf, 2 * ngf], ngf, refine_norm, act, self.pool)
        self.refine4 = RefineBlock([ngf, ngf], ngf, refine_norm, act, self.pool, end=True)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = labels.long()
        h = x if self.centered else 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
        h = self.begin_conv(h)
        layers = []
        for stage in (self.res1, self.res2, self.res3, self.res4):
            for block in stage:
                h = block(h, y)
            layers.append(h)
        l1, l2, l3, l4 = layers
        h = self.refine1([l4], y, l4.shape[2:])
        h = self.refine2([l3, h], y, l3.shape[2:])
        h = self.refine3([l2, h], y, l2.shape[2:])
        h = self.refine4([l1, h], y, l1.shape[2:])
        h = self.end_conv(self.act(self.normalizer(h, y)))
        if self.scale_by_sigma:
            h = h / self.sigmas[y].to(h.dtype).reshape(-1, *([1] * (h.dim() - 1)))
        return h


@register("ncsn")
class NCSN(RefineNetDilated):
    """NCSN v1 (CondRefineNetDilated): conditional instance norm++ everywhere, average pooling in the CRP blocks."""

    conditional, pool = True, "avg"


@register("ncsnv2")
class NCSNv2(RefineNetDilated):
    """NCSNv2: unconditional instance norm++ in the residual stages, no norms in the RefineNet blocks, max pooling,
    s(x, σ_i) = net(x) / σ_i (needs model.scale_by_sigma: true)."""

    conditional, pool = False, "max"

    def __init__(self, params):
        if not params.model.scale_by_sigma:
            raise ValueError("model.scale_by_sigma: ncsnv2 is noise-conditional only through output / σ; set it to true")
        super().__init__(params)
