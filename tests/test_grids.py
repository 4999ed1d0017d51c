"""pipeline/io/grids.py tiles images as torchvision's save_image does, without importing torchvision: the PNG bytes
are compared with torchvision's for grayscale and RGB batches, full and ragged last rows, both pad values."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io import grids


def torchvision_png(batch, **kw) -> bytes:
    from torchvision.utils import save_image

    buf = io.BytesIO()
    save_image(batch, buf, format="png", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("n,c,nrow,pad_value", [(64, 1, 8, 0.0), (13, 1, 8, 0.0), (6, 3, 4, 1.0), (1, 3, 8, 1.0),
                                                 (10, 1, 3, 1.0)])
def test_png_bytes_equal_torchvision(tmp_path, n, c, nrow, pad_value):
    g = torch.Generator().manual_seed(n * 10 + c)
    batch = torch.rand(n, c, 7, 5, generator=g)
    batch[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.5])[:c]  # the ends of the range and a rounding midpoint
    grids.save_tiled(tmp_path / "g.png", batch, nrow=nrow, padding=2, pad_value=pad_value)
    assert (tmp_path / "g.png").read_bytes() == torchvision_png(batch, nrow=nrow, padding=2, pad_value=pad_value)


def test_uint8_grid_round_trips_the_pixels(tmp_path):
    """save_grid: uint8 images come back unchanged at their places in the tiled PNG (8 per row, 2-pixel padding)."""
    x = np.random.default_rng(0).integers(0, 256, size=(70, 1, 4, 3), dtype=np.uint8)
    grids.save_grid(tmp_path / "s.png", x, points=False)
    img = np.asarray(Image.open(tmp_path / "s.png"))
    assert img.shape == (8 * 6 + 2, 8 * 5 + 2, 3)  # 64 images kept, 8 x 8
    for k in (0, 9, 63):
        y, xx = 2 + (k // 8) * 6, 2 + (k % 8) * 5
        assert (img[y:y + 4, xx:xx + 3, 1] == x[k, 0]).all()


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="want"):
        grids.tile(torch.zeros(2, 2, 4, 4))
