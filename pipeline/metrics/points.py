"""Sample quality of 2-D point sets (the toy datasets): no feature network, distances between the point clouds.

- MMD² (Gretton et al. 2012, Eq. 3, the unbiased U-statistic) with a sum of Gaussian kernels
  k(x, y) = Σ_h exp(-|x - y|² / (2 h²)) over several bandwidths h, so both the mode layout (large h) and the mode
  widths (small h) count. Its expectation is exactly MMD² of the two distributions, so it is ≈ 0 (and can be
  slightly negative) for samples of the same distribution.
- Sliced Wasserstein-2 (Bonneel et al. 2015): SW₂² = ∫ W₂²(θᵀP, θᵀQ) dθ over directions θ on the unit circle, with
  L equally spaced angles in [0, π) (exact for quadratics in θ, e.g. SW₂² = |Δμ|²/2 between two translates in 2-D);
  each 1-D W₂ between equal-size samples is the mean squared difference of the sorted projections.
- Mode weights of a Gaussian mixture: the fraction of samples nearest each centre, and the fraction within r of it.
"""
from __future__ import annotations

import math

import numpy as np


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def mmd2(x: np.ndarray, y: np.ndarray, bandwidths) -> float:
    """Unbiased MMD² between samples x (n, d) and y (m, d), kernel Σ_h exp(-|x - y|²/(2h²)); n, m >= 2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least 2 points per sample")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)

    def k(d2):
        return sum(np.exp(-d2 / (2.0 * h * h)) for h in bandwidths)

    kxx, kyy = k(dxx), k(dyy)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * k(dxy).mean())


def median_bandwidths(ref: np.ndarray, factors=(1 / 16, 1 / 4, 1.0), max_points: int = 2000) -> list[float]:
    """The median heuristic h = median pairwise distance of `ref` (first max_points rows), times each factor."""
    r = np.asarray(ref, np.float64)[:max_points]
    d = np.sqrt(_sq_dists(r, r)[np.triu_indices(len(r), 1)])
    med = float(np.median(d))
    return [med * f for f in factors]


def sliced_wasserstein2(x: np.ndarray, y: np.ndarray, num_angles: int = 64) -> float:
    """SW₂ between equal-size 2-D samples, over `num_angles` equally spaced directions."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"need two (n, 2) samples of the same size, got {x.shape} and {y.shape}")
    ang = np.arange(num_angles) * (math.pi / num_angles)
    dirs = np.stack([np.cos(ang), np.sin(ang)])  # (2, L)
    px, py = np.sort(x @ dirs, axis=0), np.sort(y @ dirs, axis=0)
    return float(np.sqrt(((px - py) ** 2).mean()))


def mode_weights(x: np.ndarray, centers: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """(fraction of x nearest each centre, fraction of x within `radius` of its nearest centre)."""
    d2 = _sq_dists(np.asarray(x, np.float64), np.asarray(centers, np.float64))
    k = d2.argmin(1)
    w = np.bincount(k, minlength=len(centers)) / len(x)
    return w, float((np.sqrt(d2[np.arange(len(x)), k]) <= radius).mean())
