"""Pixel ranges: uint8 data <-> the model's range ([0, 1], or [-1, 1] when `centered`), with the uniform
dequantization of Score SDE App. D (docs/papers.md §4). Training, sampling, likelihood and controllable generation
all convert through these functions."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.core import rng


def dequantize(x: torch.Tensor, generator) -> torch.Tensor:
    """Uniform dequantization to [0, 1): (k + u) / 256 for uint8 levels k, or (255 x + u) / 256 for x = k / 255;
    u ~ U[0, 1) per element (one generator per row, or one for the batch)."""
    u = rng.rand(x.shape, generator, device=x.device, dtype=torch.float32 if x.dtype == torch.uint8 else x.dtype)
    if x.dtype == torch.uint8:
        return (x.to(u.dtype) + u) / 256.0
    return (255.0 * x + u) / 256.0


def to_model_range(x_uint8: torch.Tensor, centered: bool, dequantize_with=None) -> torch.Tensor:
    """uint8 -> [0, 1] (k / 255, or dequantized with the generator(s) `dequantize_with`), then [-1, 1] if `centered`."""
    x = dequantize(x_uint8, dequantize_with) if dequantize_with is not None else x_uint8.float() / 255.0
    return x * 2.0 - 1.0 if centered else x


def to_unit(x: torch.Tensor, centered: bool, clamp: bool = True) -> torch.Tensor:
    """Model range -> [0, 1] pixel scale (clamped for display and storage; unclamped for error measures)."""
    x = (x + 1) / 2 if centered else x
    return x.clamp(0, 1) if clamp else x


def to_uint8(x: torch.Tensor, centered: bool) -> np.ndarray:
    """Model range -> uint8 levels round(255 x) of the clamped [0, 1] image, as a numpy array on the CPU."""
    return (to_unit(x, centered) * 255).round().to(torch.uint8).cpu().numpy()
