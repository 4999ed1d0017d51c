"""Memory layout on CPU: oneDNN convolutions run faster on NHWC ("channels last") float32 tensors (1.1-1.8× per
convolution here, about 1.2× per U-Net training step; see benchmarks/bench_models.py)."""
from __future__ import annotations

import torch
import torch.nn as nn

CHANNELS_LAST = torch.channels_last


def cpu_channels_last(t: torch.Tensor) -> torch.Tensor:
    """float32 CPU images in channels-last layout; other tensors (CUDA, float64, not 4-D) unchanged."""
    if t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 4:
        return t.contiguous(memory_format=CHANNELS_LAST)
    return t


def weight_like(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A conv weight in the layout of its CPU input. Parameters keep their own layout (and so do their gradients and
    optimizer states); the copy costs little next to the activations."""
    if x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=CHANNELS_LAST):
        return weight.contiguous(memory_format=CHANNELS_LAST)
    return weight


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) that follows its input's layout on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight_like(self.weight, x), self.bias)
