"""Inception Score IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), per split, from logits or probabilities."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

__all__ = ["inception_score", "inception_score_from_probs", "is_protocol"]


def _split_bounds(num_items: int, splits: int) -> list[tuple[int, int]]:
    # Split i covers rows [i N / splits, (i+1) N / splits) (StyleGAN2-ADA metrics/inception_score.py); when
    # splits divides N this is exactly the Salimans et al. code, otherwise no row is dropped.
    if splits < 1 or num_items < splits:
        raise ValueError(f"need 1 <= splits <= number of images, got splits={splits}, N={num_items}")
    return [(i * num_items // splits, (i + 1) * num_items // splits) for i in range(splits)]


def _score_of_split(log_p: np.ndarray) -> float:
    """exp of the mean over rows of KL(p(y|x) || p(y)), p(y) the split's mean of p(y|x); 0·log 0 counts as 0."""
    p = np.exp(log_p)
    log_marginal = np.log(p.mean(axis=0))
    # Entries with p = 0 contribute 0 whatever log p is (-inf for zero probabilities).
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_marginal), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def _scores(log_p: np.ndarray, splits: int) -> tuple[float, float]:
    per_split = [_score_of_split(log_p[lo:hi]) for lo, hi in _split_bounds(log_p.shape[0], splits)]
    # Mean and population std (ddof=0) over splits: the convention of every published IS ± std.
    return float(np.mean(per_split)), float(np.std(per_split))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std over splits) of the Inception Score of (N, K) classifier logits.

    p(y|x) = softmax over all K columns, computed as log_softmax in float64 as TF-GAN's
    `classifier_score_from_logits` does. splits=1 is the TF-GAN protocol used by Score SDE (one score on all
    50k samples, std 0); splits=10 is the Salimans et al. / NCSN protocol.
    """
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {array.shape}")
    return _scores(log_softmax(array, axis=1), splits)


def inception_score_from_probs(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Same as `inception_score` for (N, K) class probabilities whose rows sum to 1 (e.g. a softmax output)."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {array.shape}")
    if np.any(array < 0) or not np.allclose(array.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be non-negative with rows summing to 1")
    with np.errstate(divide="ignore"):
        log_p = np.log(array)
    return _scores(log_p, splits)


def is_protocol(splits: int) -> str:
    """How an Inception Score with `splits` splits is computed, in words (the report says it for each IS)."""
    if splits == 1:
        return "one split over all samples (TF-GAN, as Score SDE)"
    return f"mean ± std over {splits} splits (Salimans et al. 2016{', as NCSN' if splits == 10 else ''})"
