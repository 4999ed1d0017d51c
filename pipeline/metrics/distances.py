"""Fréchet distance (FID/FD) and kernel distance (KID/KD) between feature sets, computed by clean-fid's own functions.

Feature arrays are (N, D) float numpy arrays (Inception pool_3 or dataset-classifier penultimate features).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from scipy import linalg

__all__ = [
    "feature_stats",
    "frechet_from_stats",
    "frechet_distance",
    "kernel_distance",
    "feature_subset",
]


def _as_feature_matrix(feats: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(feats, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, D) array with N >= 2, got shape {array.shape}")
    return array


def _cleanfid():
    """clean-fid's fid module, imported on first use: it imports all of torchvision (about 1.5 s of a stage's start),
    which the stages that import this module only for its types (report, sample) never need."""
    from cleanfid import fid

    return fid


@contextlib.contextmanager
def _quiet_sqrtm():
    # clean-fid 0.1.35 passes scipy's deprecated `disp` to sqrtm; scipy is pinned below 1.18 where it still exists.
    # Post-ReLU features with never-active units have singular covariances, for which sqrtm warns; clean-fid itself
    # checks the result (non-finite -> eps on the diagonal, a large imaginary part -> ValueError).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*singular.*", category=linalg.LinAlgWarning)
        yield


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian statistics (mu, sigma) of an (N, D) feature set, as clean-fid computes them.

    sigma is the unbiased sample covariance (np.cov, ddof=1), the convention of clean-fid's `fid_from_feats`
    and of the TF FID code, so cached reference statistics give the same FD as the raw features.
    """
    array = _as_feature_matrix(feats, "feats")
    return np.mean(array, axis=0), np.cov(array, rowvar=False)


def frechet_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d² = ||mu1 - mu2||² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})   (Heusel et al. 2017, Eq. 6),
    evaluated by clean-fid's `frechet_distance` (scipy sqrtm with its eps fallback for singular products).
    """
    with _quiet_sqrtm():
        return float(_cleanfid().frechet_distance(np.asarray(mu1, np.float64), np.asarray(sigma1, np.float64),
                                                   np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64)))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets (clean-fid `fid_from_feats`)."""
    a = _as_feature_matrix(feats_a, "feats_a")
    b = _as_feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    with _quiet_sqrtm():
        return float(_cleanfid().fid_from_feats(a, b))


def _seed_from(generator: torch.Generator | None) -> int:
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def kernel_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> float:
    """Kernel (Inception) distance: unbiased MMD² with the cubic kernel k(x, y) = (xᵀy / D + 1)³.

    Bińkowski et al. 2018 (KID), averaged over `num_subsets` random subsets of size m = min(N_a, N_b,
    max_subset_size), exactly as clean-fid's `kernel_distance`. clean-fid draws its subsets from NumPy's global
    RNG; we seed that RNG from `generator` (default: a generator seeded with 0) and restore its previous state
    afterwards, so the result is reproducible and no global random state changes.
    """
    a = _as_feature_matrix(feats_a, "feats_a")
    b = _as_feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1 or max_subset_size < 2:
        raise ValueError("need num_subsets >= 1 and max_subset_size >= 2")
    saved_state = np.random.get_state()
    try:
        np.random.seed(_seed_from(generator))
        return float(_cleanfid().kernel_distance(a, b, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(saved_state)


def feature_subset(feats: np.ndarray, max_size: int, generator: torch.Generator | None = None) -> np.ndarray:
    """At most `max_size` rows of `feats`, drawn without replacement, in their original order.

    Reference statistics are cached as (mu, sigma) for FD plus such a subset for KD, so a 50k-image reference
    set need not be kept whole (clean-fid uses at most 1000 rows per KD subset anyway).
    """
    array = _as_feature_matrix(feats, "feats")
    if array.shape[0] <= max_size:
        return array.copy()
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(array.shape[0], generator=generator)[:max_size].sort().values.numpy()
    return array[rows]
