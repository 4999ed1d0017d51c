"""Sample grids as PNG files, written atomically: images tiled 8 per row (up to 64) and written with Pillow, 2-D points
as a scatter plot with matplotlib.

The tiling is torchvision's `save_image` layout (`make_grid`: `padding` pixels around every image but a lone one,
one-channel images shown as RGB; then x * 255 + 0.5 to uint8), written here because importing `torchvision.utils`
imports all of torchvision (its models, ops and torch._dynamo): about 1 s of every stage that writes a grid, for a
reshape. tests/test_grids.py checks that the PNG bytes equal torchvision's."""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.io import atomic


def tile(batch: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """(n, C, H, W) floats in [0, 1] -> one uint8 (rows, cols, 3) image: `nrow` images per row, `padding` pixels of
    `pad_value` around each, one-channel images repeated on the three channels."""
    if batch.dim() != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(f"tile: want (n, 1 or 3, H, W) images, got shape {tuple(batch.shape)}")
    batch = batch.float()
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    n, _, h, w = batch.shape
    if n == 1:  # a single image is written as it is, without padding (as make_grid does)
        padding = 0
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = torch.full((3, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for k in range(n):
        y, x = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        grid[:, y:y + h, x:x + w] = batch[k]
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def save_tiled(path, batch: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> None:
    """`tile(batch, ...)` as a PNG file at `path`, written atomically."""
    from PIL import Image

    img = Image.fromarray(tile(batch, nrow, padding, pad_value))
    with atomic.atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="png")


def save_grid(path, batch: np.ndarray, points: bool) -> None:
    """`batch`: uint8 NCHW images, or float (n, 2) points when `points`."""
    if not points:
        save_tiled(path, torch.from_numpy(batch[:64]).float() / 255, nrow=8)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(batch[:, 0], batch[:, 1], s=2)
        ax.set_aspect("equal")
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
