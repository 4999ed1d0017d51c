"""Fréchet and kernel distances, Inception Score and error bars against closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cleanfid.fid import fid_from_feats
from scipy.stats import entropy

from pipeline.metrics.distances import (
    feature_stats,
    feature_subset,
    frechet_distance,
    frechet_from_stats,
    kernel_distance,
)
from pipeline.metrics.inception_score import inception_score, inception_score_from_probs
from pipeline.metrics.stats import mean_std, mean_stderr


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _sqrt_spd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_from_stats_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    # Diagonal covariances commute: tr(S1 + S2 - 2 (S1 S2)^{1/2}) = Σ (√s1 - √s2)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    got = frechet_from_stats(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_from_stats_general_covariances():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), _spd(rng, d), _spd(rng, d)
    # tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2}, the symmetric form, computed by eigendecompositions.
    root1 = _sqrt_spd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrt_spd(root1 @ s2 @ root1))
    assert frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_from_stats(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # inside clean-fid, scipy < 1.18
def test_feature_stats_unbiased_covariance_and_same_fd_as_features():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 4)), rng.normal(1.0, 2.0, size=(60, 4))
    mu, sigma = feature_stats(a)
    centred = a - a.mean(axis=0)
    np.testing.assert_allclose(mu, a.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, centred.T @ centred / (50 - 1), rtol=1e-12)  # ddof = 1
    assert frechet_distance(a, b) == pytest.approx(frechet_from_stats(*feature_stats(a), *feature_stats(b)), rel=1e-12)
    assert frechet_distance(a, b) == fid_from_feats(a, b)  # clean-fid's own function, not a re-implementation


def test_frechet_same_distribution_small_shifted_large():
    rng = np.random.default_rng(3)
    d, n = 8, 4000
    cov_root = np.linalg.cholesky(_spd(rng, d))
    def sample():
        return rng.normal(size=(n, d)) @ cov_root.T
    same = frechet_distance(sample(), sample())
    shifted = frechet_distance(sample(), sample() + 1.0)
    # Shift by 1 in each of d dims: FD = ||Δμ||² = d exactly for the populations; sampling error ~ 1%.
    assert shifted == pytest.approx(d, rel=0.05)
    # Same law: only the O(d²/n) sampling bias remains (measured same / shifted = 0.002).
    assert same < 0.005 * shifted


# ---------------------------------------------------------------- kernel distance


def _mmd2_unbiased_cubic(x: np.ndarray, y: np.ndarray) -> float:
    """Hand-written loops: 1/(m(m-1)) Σ_{i≠j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m² Σ_{i,j} k(x_i,y_j)."""
    m, d = x.shape
    def k(u, v):
        return (float(u @ v) / d + 1.0) ** 3
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2.0 * cross / m**2


def test_kernel_distance_equals_unbiased_mmd_on_whole_sets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(7, 3))
    # One subset of size m = N: a permutation of each set, and the estimator is permutation invariant.
    got = kernel_distance(x, y, num_subsets=1, max_subset_size=100)
    assert got == pytest.approx(_mmd2_unbiased_cubic(x, y), rel=1e-10)


def test_kernel_distance_unbiased_near_zero_for_same_distribution():
    rng = np.random.default_rng(5)
    d, n = 16, 400
    same = [kernel_distance(rng.normal(size=(n, d)), rng.normal(size=(n, d)), num_subsets=2, max_subset_size=200,
                            generator=torch.Generator().manual_seed(i)) for i in range(20)]
    shifted = kernel_distance(rng.normal(size=(n, d)), rng.normal(0.5, 1.0, size=(n, d)), num_subsets=2,
                              max_subset_size=200)
    mean, stderr = mean_stderr(same)
    # Unbiased: the mean over 20 independent replicates lies within 3 standard errors of 0 (measured
    # -0.0034 = 2.1 standard errors; a biased V-statistic would sit at about +2 tr(Σ_k)/m, far above) ...
    assert abs(mean) < 3 * stderr
    # ... and is tiny next to a 0.5 shift per dimension (measured 1.06; ratio 3e-3).
    assert abs(mean) < 0.02 * shifted and shifted > 0


def test_kernel_distance_seeded_and_leaves_global_rng_alone():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 5)), rng.normal(size=(250, 5))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = kernel_distance(x, y, num_subsets=3, max_subset_size=50, generator=torch.Generator().manual_seed(1))
    again = kernel_distance(x, y, num_subsets=3, max_subset_size=50, generator=torch.Generator().manual_seed(1))
    other = kernel_distance(x, y, num_subsets=3, max_subset_size=50, generator=torch.Generator().manual_seed(2))
    assert first == again and first != other
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_feature_subset_rows_without_replacement():
    feats = np.arange(200, dtype=np.float64).reshape(100, 2)
    subset = feature_subset(feats, 30, torch.Generator().manual_seed(0))
    assert subset.shape == (30, 2)
    rows = subset[:, 0] / 2
    assert np.all(np.diff(rows) > 0) and np.all(rows == np.round(rows))  # distinct original rows, in order
    np.testing.assert_array_equal(subset, feature_subset(feats, 30, torch.Generator().manual_seed(0)))
    np.testing.assert_array_equal(feature_subset(feats, 500), feats)


# ---------------------------------------------------------------- Inception Score


def _one_hot_logits(labels: np.ndarray, num_classes: int, confidence: float = 60.0) -> np.ndarray:
    logits = np.zeros((labels.size, num_classes))
    logits[np.arange(labels.size), labels] = confidence
    return logits


@pytest.mark.parametrize("k", [1, 2, 7, 10])
def test_is_confident_uniform_over_k_classes_is_k(k):
    labels = np.tile(np.arange(k), 30)  # every split of 3k rows holds each class 3 times
    mean, std = inception_score(_one_hot_logits(labels, 10), splits=10)
    # p(y|x) one-hot (up to e^-60), p(y) uniform on k classes: KL = log k for every x, IS = k.
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-10)


def test_is_designed_case_and_probs_path():
    # Half the images certain of class 0, half uniform over {0, 1}: p(y) = (3/4, 1/4);
    # KL = log(4/3) and (1/2) log(4/3) respectively, so IS = exp((3/4) log(4/3)) = (4/3)^(3/4).
    probs = np.array([[1.0, 0.0], [0.5, 0.5]] * 10)
    expected = (4.0 / 3.0) ** 0.75
    assert inception_score_from_probs(probs, splits=1)[0] == pytest.approx(expected, rel=1e-12)
    assert inception_score_from_probs(probs, splits=5)[0] == pytest.approx(expected, rel=1e-12)
    logits = np.log(np.clip(probs, 1e-300, None))
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_is_mean_and_std_over_splits():
    # Split 1 spread over 2 classes, split 2 over 5 classes: scores 2 and 5, mean 3.5, population std 1.5.
    labels = np.concatenate([np.tile(np.arange(2), 5), np.tile(np.arange(5), 2)])
    mean, std = inception_score(_one_hot_logits(labels, 6), splits=2)
    assert mean == pytest.approx(3.5, rel=1e-12) and std == pytest.approx(1.5, rel=1e-12)


def test_is_random_logits_match_scipy_entropy_and_shift_invariance():
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=3.0, size=(40, 12))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    marginal = probs.mean(axis=0)
    expected = math.exp(np.mean([entropy(p, marginal) for p in probs]))  # scipy's KL(p || q)
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-10)
    assert inception_score_from_probs(probs, splits=1)[0] == pytest.approx(expected, rel=1e-10)
    shifted = logits + rng.normal(size=(40, 1)) * 100  # softmax is invariant to a per-row constant
    assert inception_score(shifted, splits=4)[0] == pytest.approx(inception_score(logits, splits=4)[0], rel=1e-10)


def test_is_rejects_bad_input():
    with pytest.raises(ValueError):
        inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError):
        inception_score_from_probs(np.full((4, 2), 0.7), splits=1)


# ---------------------------------------------------------------- error bars


def test_mean_std_and_stderr_conventions():
    values = [1.0, 2.0, 3.0, 4.0]
    assert mean_std(values) == pytest.approx((2.5, math.sqrt(5.0 / 3.0)), rel=1e-14)  # ddof = 1
    assert mean_std(values, ddof=0) == pytest.approx((2.5, math.sqrt(1.25)), rel=1e-14)
    assert mean_stderr(values) == pytest.approx((2.5, math.sqrt(5.0 / 3.0) / 2.0), rel=1e-14)
    mean, std = mean_std([3.0])
    assert mean == 3.0 and math.isnan(std)
    assert math.isnan(mean_stderr([3.0])[1])
    with pytest.raises(ValueError):
        mean_std([])
