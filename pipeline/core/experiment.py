"""An experiment's math objects from its validated params: the SDE, the score function of its network, the shape
of a batch of samples. The one place these are built, so training, sampling and likelihood agree."""
from __future__ import annotations

from pipeline.core.losses import get_score_fn
from pipeline.core.sde import SDE, get_sde
from pipeline.names import TOY_DATASETS


def make_sde(params) -> SDE:
    """`training.sde` with the model block's σ / β range and N = model.num_scales (docs/papers.md §1)."""
    m = params.model
    return get_sde(params.training.sde, sigma_min=m.sigma_min, sigma_max=m.sigma_max, beta_min=m.beta_min,
                   beta_max=m.beta_max, N=m.num_scales)


def score_function(params, sde: SDE, net):
    """score_fn(x, t) of `net` under the experiment's conditioning convention (continuous or discrete)."""
    return get_score_fn(sde, net, continuous=params.training.continuous)


def is_points(params) -> bool:
    """2-D toy data (float points) rather than uint8 images."""
    return params.data.dataset in TOY_DATASETS


def sample_shape(params, n: int) -> tuple[int, ...]:
    """(n, 2) for 2-D toys, else (n, C, H, W)."""
    d = params.data
    return (n, 2) if is_points(params) else (n, d.num_channels, d.image_size, d.image_size)
