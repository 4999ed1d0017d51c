"""The time-dependent (noise-conditional) classifier p_t(y | x(t)) of Score SDE App. I.1: a Wide-ResNet (Zagoruyko &
Komodakis 2016) whose residual blocks receive an embedding of the noise level, as the score networks do.

The paper's CIFAR-10 classifier is a WRN-28-10 with random Fourier features of the noise level; here the width
(`nf` × `ch_mult`), the depth (`num_res_blocks` per stage) and the Fourier scale are settings (`eval.classifier`),
so a small preset trains on Fashion-MNIST in a CPU minute. The network sees (x_in, noise label) and returns logits;
what x_in and the label are for an SDE (c_in x(t), log σ̂(t)) is `pipeline.training.noise_classifier.noise_classifier_inputs`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.models.layers import group_norm
from pipeline.speed.dropout import Dropout


class FourierEmbedding(nn.Module):
    """[sin 2π W l, cos 2π W l] with fixed W ~ N(0, scale²) (Tancik et al. 2020; Score SDE App. H.2): a buffer, so it
    moves with the module, takes no gradient and is saved with the weights."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.register_buffer("W", torch.empty(size))
        self.scale = scale

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        proj = labels[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class WideBlock(nn.Module):
    """Pre-activation wide residual block with the noise embedding added after the first convolution:
    h = conv(act(GN(x))) (stride s) + Dense(emb); h = conv(dropout(act(GN(h)))); out = h + shortcut(x)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, stride: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = group_norm(in_ch, None), group_norm(out_ch, None)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.dropout = Dropout(dropout)
        self.shortcut = (nn.Conv2d(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch
                         else nn.Identity())

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.shortcut(x)


class NoiseConditionalClassifier(nn.Module):
    """logits = net(x_in, labels): stem conv → stages of `num_res_blocks` wide blocks at widths nf × ch_mult (every
    stage after the first halves the resolution) → GN, swish, global average pool → linear. The noise label goes
    through Fourier features and a 2-layer MLP into every block."""

    def __init__(self, num_channels: int, image_size: int, num_classes: int, nf: int = 16,
                 ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1, dropout: float = 0.0,
                 fourier_scale: float = 16.0):
        super().__init__()
        self.num_channels, self.image_size, self.num_classes = num_channels, image_size, num_classes
        emb_dim = 4 * nf
        self.fourier = FourierEmbedding(nf, fourier_scale)
        self.emb = nn.Sequential(nn.Linear(2 * nf, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(num_channels, nf, 3, padding=1)
        blocks, ch = [], nf
        for i, mult in enumerate(ch_mult):
            for j in range(num_res_blocks):
                blocks.append(WideBlock(ch, nf * mult, emb_dim, 2 if (i > 0 and j == 0) else 1, dropout))
                ch = nf * mult
        self.blocks = nn.ModuleList(blocks)
        self.norm = group_norm(ch, None)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (self.num_channels, self.image_size, self.image_size), x.shape
        emb = self.emb(self.fourier(labels.to(x.dtype)))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(F.silu(self.norm(h)).mean(dim=(2, 3)))


def make_noise_classifier(config: dict, generator: torch.Generator | None = None) -> NoiseConditionalClassifier:
    """A NoiseConditionalClassifier from its config (the keyword arguments, saved with the weights); its weights and
    Fourier frequencies come from `generator` (default: seeded with 0), never from the global RNG."""
    with torch.random.fork_rng(devices=[]):  # PyTorch's default init draws from the global RNG; undo that
        net = NoiseConditionalClassifier(**config)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if net.fourier.W.is_meta:
        return net
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)  # PyTorch's default, seeded
                fan_in = nn.init._calculate_fan_in_and_fan_out(layer.weight)[0]
                nn.init.uniform_(layer.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=g)
        net.fourier.W.copy_(torch.randn(net.fourier.W.shape, generator=g) * net.fourier.scale)
        nn.init.zeros_(net.head.weight)  # start at the uniform posterior: log p = -log K at every input
        nn.init.zeros_(net.head.bias)
    return net
