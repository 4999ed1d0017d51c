"""Dataset classifier on sklearn's 8x8 digits: accuracy, determinism, and Fréchet-distance sanity of its features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close_f32
from sklearn.datasets import load_digits

from pipeline.metrics.dataset_classifier import (
    dataset_classifier_accuracy,
    dataset_classifier_features,
    make_dataset_classifier,
    train_dataset_classifier,
)
from pipeline.metrics.distances import frechet_distance

NUM_TRAIN = 1200


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8), 0..16 -> 0..255
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).numpy()
    train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
    return images[train], data.target[train], images[test], data.target[test]



@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, _, _ = digits
    return train_dataset_classifier(x_train, y_train, epochs=8, batch_size=64, lr=5e-3,
                                    generator=torch.Generator().manual_seed(0))


def test_accuracy_well_above_chance(digits, trained):
    _, _, x_test, y_test = digits
    accuracy = dataset_classifier_accuracy(trained, x_test, y_test)
    assert accuracy > 0.9, accuracy  # chance is 0.1; measured 0.977


def test_features_and_logits_shapes_and_consistency(digits, trained):
    x_train, *_ = digits
    feats, logits = dataset_classifier_features(trained, x_train[:37], batch_size=10)
    assert feats.shape == (37, 128) and logits.shape == (37, 10)
    assert feats.dtype == np.float64 and logits.dtype == np.float64
    assert np.all(feats >= 0)  # post-ReLU penultimate layer
    with torch.no_grad():
        direct = trained(torch.from_numpy(x_train[:37]).float() / 255.0).double().numpy()
    # float32 in batches of 10 vs one batch of 37: rounding only, bounded relative to max|logit|; rows out of
    # order or a missing / 255 change the logits by O(1)
    assert_close_f32(logits, direct, what="batched logits")


def test_frechet_distance_sanity_on_classifier_features(digits, trained):
    x_train, _, x_test, _ = digits
    noise = np.random.default_rng(0).integers(0, 256, size=x_test.shape, dtype=np.uint8)
    train_feats, _ = dataset_classifier_features(trained, x_train)
    fd_test = frechet_distance(dataset_classifier_features(trained, x_test)[0], train_feats)
    fd_noise = frechet_distance(dataset_classifier_features(trained, noise)[0], train_feats)
    half = NUM_TRAIN // 2
    fd_halves = frechet_distance(train_feats[:half], train_feats[half:])
    # Held-out digits are close to the training digits, uniform noise is far (measured 2.2 vs 103, ratio 0.021).
    assert fd_test < 0.1 * fd_noise, (fd_test, fd_noise)
    # Two halves of one set: only the finite-sample bias of a 128-d covariance from 600 rows (measured 3.1,
    # ratio 0.030; it exceeds fd_test because both of its sets are half the size).
    assert fd_halves < 0.06 * fd_noise, (fd_halves, fd_noise)


def test_deterministic_given_generator_and_global_rng_untouched(digits):
    x_train, y_train, _, _ = digits
    state = torch.get_rng_state()
    one = train_dataset_classifier(x_train[:200], y_train[:200], epochs=1, batch_size=50,
                                   generator=torch.Generator().manual_seed(3))
    two = train_dataset_classifier(x_train[:200], y_train[:200], epochs=1, batch_size=50,
                                   generator=torch.Generator().manual_seed(3))
    three = train_dataset_classifier(x_train[:200], y_train[:200], epochs=1, batch_size=50,
                                     generator=torch.Generator().manual_seed(4))
    assert torch.equal(state, torch.get_rng_state())
    for p, q in zip(one.parameters(), two.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(one.embed.weight, three.embed.weight)


def test_rejects_bad_inputs(digits):
    x_train, y_train, _, _ = digits
    with pytest.raises(ValueError, match="uint8"):
        train_dataset_classifier(x_train.astype(np.float32), y_train, epochs=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        make_dataset_classifier(1, 10, 10)
