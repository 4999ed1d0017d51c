"""Sample grids as PNG files, written atomically: images (8 per row, up to 64) with torchvision, 2-D points as a
scatter plot with matplotlib."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.io import atomic


def save_grid(path, batch: np.ndarray, points: bool) -> None:
    """`batch`: uint8 NCHW images, or float (n, 2) points when `points`."""
    with atomic.atomic_path(path, suffix=".png") as tmp:
        if points:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(batch[:, 0], batch[:, 1], s=2)
            ax.set_aspect("equal")
            fig.savefig(tmp, format="png", dpi=100)
            plt.close(fig)
        else:
            from torchvision.utils import save_image

            save_image(torch.from_numpy(batch[:64]).float() / 255, tmp, nrow=8, format="png")
