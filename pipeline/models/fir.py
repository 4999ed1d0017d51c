"""FIR up/down-sampling (StyleGAN2's upfirdn2d, used by NCSN++) as ordinary depthwise and transposed convolutions.

Song et al. 2021, App. H.1: NCSN++ resamples with the anti-aliasing FIR filter k = [1, 3, 3, 1] (Zhang 2019). The
filter is applied per channel; a zero-insertion or a full-resolution filter followed by subsampling is never built.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.speed.layout import weight_like

FACTOR = 2  # every resampling in the score networks is by 2


def fir_kernel_2d(k: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The separable 2-D filter outer(k, k), normalised to sum to `gain` (constant images keep their level × gain)."""
    k1 = torch.as_tensor(k, dtype=torch.float64)
    if k1.dim() != 1 or k1.numel() < FACTOR:
        raise ValueError(f"fir_kernel must be a 1-D list of at least {FACTOR} taps (got {list(k)})")
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum() * gain).to(torch.float32)


def _depthwise(kernel: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    """The filter repeated per channel, as the weight of a grouped convolution, in `like`'s memory layout."""
    n = kernel.shape[-1]
    return weight_like(kernel.to(device=like.device, dtype=like.dtype).reshape(1, 1, n, n).repeat(channels, 1, 1, 1), like)


def _filter(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int, stride: int = 1) -> torch.Tensor:
    """upfirdn2d without up-sampling: zero-pad (pad0 before, pad1 after), convolve with `kernel`, keep every `stride`-th."""
    c = x.shape[1]
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    # F.conv2d correlates; the FIR filter is convolved, hence the flip (a no-op for symmetric kernels)
    return F.conv2d(x, _depthwise(kernel.flip(0, 1), c, x), stride=stride, groups=c)


def upsample_2d(x: torch.Tensor, k: Sequence[float]) -> torch.Tensor:
    """×2 up-sampling with FIR filter k: zero insertion then filtering, done as one transposed depthwise convolution.

    The filter has gain FACTOR² so that the inserted zeros do not darken the image. Output: [N, C, 2H, 2W].
    """
    kernel = fir_kernel_2d(k, gain=FACTOR**2)
    n = kernel.shape[-1]
    p = n - FACTOR
    pad0 = (p + 1) // 2 + FACTOR - 1  # padding of the zero-inserted signal (StyleGAN2 convention)
    c, h, w = x.shape[1:]
    # zero-insert + pad0 + convolve with a length-n filter == transposed conv with padding n - 1 - pad0; its output
    # has 2H + 2·pad0 - n rows: 2H, or 2H + 1 for odd n (the extra row lies past the right padding pad1)
    y = F.conv_transpose2d(x, _depthwise(kernel, c, x), stride=FACTOR, padding=n - 1 - pad0, groups=c)
    return y[..., : FACTOR * h, : FACTOR * w]


def downsample_2d(x: torch.Tensor, k: Sequence[float]) -> torch.Tensor:
    """FIR filter then keep every second pixel, computed only at the kept pixels (a strided depthwise convolution)."""
    kernel = fir_kernel_2d(k)
    p = kernel.shape[-1] - FACTOR
    return _filter(x, kernel, (p + 1) // 2, p // 2, stride=FACTOR)


def naive_upsample_2d(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2 (the BigGAN block without FIR)."""
    return F.interpolate(x, scale_factor=FACTOR, mode="nearest")


def naive_downsample_2d(x: torch.Tensor) -> torch.Tensor:
    """Mean over 2×2 blocks (the BigGAN block without FIR)."""
    return F.avg_pool2d(x, FACTOR)


class FIRConv2d(nn.Module):
    """A k×k convolution fused with FIR ×2 up- or down-sampling (StyleGAN2's `upsample_conv_2d` / `conv_downsample_2d`).

    Up: transposed convolution with stride 2, then the FIR filter (gain 4) over the (2H+k-2)-sized result.
    Down: the FIR filter over a padded input, then a stride-2 convolution. Parameters: `weight` [out, in, k, k], `bias`.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False, down: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True):
        super().__init__()
        if up == down:
            raise ValueError("FIRConv2d resamples: pass exactly one of up=True or down=True")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"FIRConv2d needs an odd kernel size (got {kernel})")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.up, self.down = up, down
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ksize = self.weight.shape[-1]
        if self.up:
            kernel = fir_kernel_2d(self.fir_kernel, gain=FACTOR**2)
            p = kernel.shape[-1] - FACTOR - (ksize - 1)
            # transposed conv = zero insertion + full convolution with the (flipped-for-correlation) weight
            x = F.conv_transpose2d(x, weight_like(self.weight.flip(2, 3).transpose(0, 1), x), stride=FACTOR)
            x = _filter(x, kernel, (p + 1) // 2 + FACTOR - 1, p // 2 + 1)
        else:
            kernel = fir_kernel_2d(self.fir_kernel)
            p = kernel.shape[-1] - FACTOR + (ksize - 1)
            x = _filter(x, kernel, (p + 1) // 2, p // 2)
            x = F.conv2d(x, weight_like(self.weight, x), stride=FACTOR)
        return x if self.bias is None else x + self.bias.view(1, -1, 1, 1)
