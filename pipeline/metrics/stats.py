"""Error bars for numbers repeated over runs or splits: mean ± standard deviation and mean ± standard error."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["mean_std", "mean_stderr"]


def _as_values(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("need at least one value")
    return array


def mean_std(values: Iterable[float], ddof: int = 1) -> tuple[float, float]:
    """(mean, standard deviation) of repeated measurements.

    ddof=1 (default) is the sample standard deviation sqrt(Σ(x - x̄)² / (n - 1)), the usual reading of
    "mean ± std over 5 runs" (Score SDE, Table 1). Pass ddof=0 for the population form np.std, which the
    Inception Score uses across its splits (Salimans et al. 2016 code). With n <= ddof the std is nan.
    """
    array = _as_values(values)
    mean = float(array.mean())
    if array.size <= ddof:
        return mean, math.nan
    return mean, float(array.std(ddof=ddof))


def mean_stderr(values: Iterable[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) = (x̄, s / sqrt(n)), with s the ddof=1 sample std; nan when n = 1."""
    array = _as_values(values)
    mean, std = mean_std(array, ddof=1)
    return mean, std / math.sqrt(array.size)
