"""Dropout whose CPU masks cost a quarter of a random draw per element.

On CPU, `nn.Dropout` draws each mask element with `bernoulli_`, about 8 ns per element here: 7 % of an NCSN++ train
step at the papers' dropout 0.1 (benchmarks/bench_speed.py). `Dropout` instead draws 64 random bits per 4 elements
from the same generator (torch's default CPU generator, so snapshots resume it exactly) and keeps an element when its
16 bits, read as a signed integer r, satisfy r ≥ round(p · 2^16) − 2^15. The drop probability is then
p' = round(p · 2^16) / 2^16 (|p' − p| ≤ 2^-17; 0.1000061 for p = 0.1) and kept elements are scaled by 1 / (1 − p'),
so E[dropout(x)] = x exactly, as for inverted dropout. On CUDA, in eval mode, for p = 0, for anything but a
dense floating-point tensor and under torch.compile (inductor draws its own masks) it is `nn.Dropout` itself. Same
module name and (empty) state dict as `nn.Dropout`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = 16
LEVELS = 2 ** BITS


def _is_dense(x: torch.Tensor) -> bool:
    """Strides a permutation of a contiguous layout (NCHW or channels-last): every storage slot used exactly once."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout multipliers of x's shape and layout: 1 / (1 − p') where kept, 0 where dropped."""
    drop_levels = round(p * LEVELS)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2 ** 63, 2 ** 63 - 1)
    r = bits.view(torch.int16)[:n].as_strided(x.shape, x.stride())  # iid 16-bit integers laid out like x
    keep = r >= drop_levels - LEVELS // 2
    return keep.to(x.dtype).mul_(LEVELS / (LEVELS - drop_levels))


class Dropout(nn.Dropout):
    """nn.Dropout with cheap CPU masks (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0 or x.device.type != "cpu" or not x.is_floating_point()
                or not _is_dense(x) or self.inplace or self.p >= 1 or torch.compiler.is_compiling()):
            return F.dropout(x, self.p, self.training, self.inplace)
        return x * keep_mask(x, self.p)
