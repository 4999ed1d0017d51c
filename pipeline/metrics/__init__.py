"""Evaluation metrics: FD/KD (clean-fid), Inception-v3 features, Inception Score, dataset classifier, error bars."""

from pipeline.metrics.classifier import (
    DatasetClassifier,
    classifier_accuracy,
    classifier_features,
    make_classifier,
    train_classifier,
)
from pipeline.metrics.distances import (
    feature_stats,
    feature_subset,
    frechet_distance,
    frechet_from_stats,
    kernel_distance,
)
from pipeline.metrics.inception import (
    INCEPTION_ENV_VAR,
    INCEPTION_FILENAME,
    INCEPTION_PARAM,
    INCEPTION_URL,
    InceptionWeightsMissing,
    cleanfid_cache_path,
    inception_features,
    load_inception,
    resolve_inception_weights,
)
from pipeline.metrics.inception_score import inception_score, inception_score_from_probs
from pipeline.metrics.stats import mean_std, mean_stderr

__all__ = [
    "DatasetClassifier",
    "classifier_accuracy",
    "classifier_features",
    "make_classifier",
    "train_classifier",
    "feature_stats",
    "feature_subset",
    "frechet_distance",
    "frechet_from_stats",
    "kernel_distance",
    "INCEPTION_ENV_VAR",
    "INCEPTION_FILENAME",
    "INCEPTION_PARAM",
    "INCEPTION_URL",
    "InceptionWeightsMissing",
    "cleanfid_cache_path",
    "inception_features",
    "load_inception",
    "resolve_inception_weights",
    "inception_score",
    "inception_score_from_probs",
    "mean_std",
    "mean_stderr",
]
