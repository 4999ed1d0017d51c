"""Inception feature extraction against clean-fid's own code path, on a random-weight TorchScript with the same interface."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from cleanfid.fid import get_batch_features
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer
from conftest import assert_close_f32

from pipeline.metrics import inception
from pipeline.metrics.inception import (
    INCEPTION_ENV_VAR,
    INCEPTION_FILENAME,
    InceptionWeightsMissing,
    inception_features,
    load_inception,
    resolve_inception_weights,
)

# float32 features along two paths (batch splits, clean-fid's code): rounding only, relative to max|feature|.
# Measured: identical here under AVX-512, AVX2 and ATEN_CPU_CAPABILITY=default; 2e-7 relative with oneDNN off. The
# bound must also stay well below the clean vs legacy_tensorflow difference (1.1e-4 relative, test_modes_differ).
FEATURE_RTOL = 1e-5


class InceptionStandIn(nn.Module):
    """Same interface as StyleGAN2-ADA's inception-2015-12-05.pt (layers, output, forward signature), tiny body."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(16, 2048, kernel_size=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        if x.shape[2] != 299 or x.shape[3] != 299:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128.0) / 128.0).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, dim=1)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):  # the default init's draws must not touch the global RNG
        module = InceptionStandIn().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            bound = 1.0 / max(parameter[0].numel(), 1) ** 0.5 if parameter.ndim > 1 else 3.0
            # The bias of `output` gets +-3 so that dropping it visibly changes the softmax.
            nn.init.uniform_(parameter, -bound, bound, generator=generator)
    folder = tmp_path_factory.mktemp("inception")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but the real file is TorchScript
        torch.jit.script(module).save(str(folder / INCEPTION_FILENAME))
    return folder


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)


def _cleanfid_features(folder, images, mode):
    """clean-fid's path: ResizeDataset's resize + ToTensor, then InceptionV3W via get_batch_features."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # clean-fid's own torch.jit.load
        model = InceptionV3W(str(folder), download=False, resize_inside=(mode == "legacy_tensorflow")).eval()
    resize = build_resizer(mode)
    batch = torch.stack([torch.from_numpy(np.asarray(resize(img.transpose(1, 2, 0)), dtype=np.float32)
                         .transpose(2, 0, 1).copy()) for img in images])
    return get_batch_features(batch, model, torch.device("cpu"))


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_features_match_cleanfid_code_path(weights_dir, images, mode):
    feats, logits = inception_features(images, weights_dir / INCEPTION_FILENAME, mode=mode, batch_size=4)
    reference = _cleanfid_features(weights_dir, images, mode)
    assert feats.shape == (6, 2048) and feats.dtype == np.float64
    assert logits.shape == (6, 1008) and logits.dtype == np.float64
    # float32 in batches of 4 vs clean-fid's batch of 6: rounding only. 1e-5 of max|feature| keeps the bound far below
    # the clean vs legacy_tensorflow difference that test_modes_differ requires
    assert_close_f32(feats, reference, FEATURE_RTOL, what=mode)


def test_modes_differ(weights_dir, images):
    clean, _ = inception_features(images, weights_dir, mode="clean")
    legacy, _ = inception_features(images, weights_dir, mode="legacy_tensorflow")
    # PIL-bicubic vs bilinear resize must reach the features: measured 5.0e-4 on this stand-in (max|feature| 4.7),
    # ten times the FEATURE_RTOL * max|feature| agreement asserted between our path and clean-fid's.
    assert np.abs(clean - legacy).max() > 5 * FEATURE_RTOL * np.abs(clean).max()


def test_logits_are_the_networks_output_layer(weights_dir, images):
    model = load_inception(weights_dir)
    x299 = torch.from_numpy(images).float()
    x299 = F.interpolate(x299, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        probs = model(x299, return_features=False).numpy()
        probs_no_bias = model(x299, return_features=False, no_output_bias=True).numpy()
    _, logits = inception_features(images, model=model, mode="legacy_tensorflow")
    _, logits_no_bias = inception_features(images, model=model, mode="legacy_tensorflow", output_bias=False)
    def softmax(z):
        return np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    np.testing.assert_allclose(softmax(logits), probs, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(softmax(logits_no_bias), probs_no_bias, rtol=1e-4, atol=1e-7)
    assert np.abs(softmax(logits) - softmax(logits_no_bias)).max() > 1e-3


def test_deterministic_batch_independent_and_grey_repeated(weights_dir, images):
    model = load_inception(weights_dir)
    a, la = inception_features(images, model=model, batch_size=6)
    b, lb = inception_features(images, model=model, batch_size=6)
    c, _ = inception_features(images, model=model, batch_size=1)
    serial, _ = inception_features(images, model=model, batch_size=6, resize_workers=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, serial)  # threaded resizing changes nothing
    np.testing.assert_array_equal(la, lb)
    assert_close_f32(a, c, FEATURE_RTOL, what="batch 6 vs batch 1")
    grey = images[:, :1]
    g1, _ = inception_features(grey, model=model)
    g3, _ = inception_features(np.repeat(grey, 3, axis=1), model=model)
    np.testing.assert_array_equal(g1, g3)
    with pytest.raises(ValueError, match="uint8"):
        inception_features(images.astype(np.float32), model=model)


def test_missing_explicit_path_raises_with_path(tmp_path):
    missing = tmp_path / "nowhere" / INCEPTION_FILENAME
    with pytest.raises(InceptionWeightsMissing) as info:
        inception_features(np.zeros((1, 3, 8, 8), np.uint8), missing)
    message = str(info.value)
    assert str(missing) in message
    assert inception.INCEPTION_URL in message and INCEPTION_ENV_VAR in message and "eval.inception_weights" in message


def test_resolve_order_env_then_cleanfid_cache(tmp_path, monkeypatch, weights_dir):
    cache = tmp_path / "cache" / INCEPTION_FILENAME
    monkeypatch.setattr(inception, "cleanfid_cache_path", lambda: cache)
    monkeypatch.delenv(INCEPTION_ENV_VAR, raising=False)
    with pytest.raises(InceptionWeightsMissing) as info:
        resolve_inception_weights()
    assert str(cache) in str(info.value) and "is not set" in str(info.value)

    monkeypatch.setenv(INCEPTION_ENV_VAR, str(tmp_path / "bad.pt"))
    with pytest.raises(InceptionWeightsMissing) as info:
        resolve_inception_weights()
    assert str(tmp_path / "bad.pt") in str(info.value) and str(cache) in str(info.value)

    cache.parent.mkdir()
    cache.write_bytes((weights_dir / INCEPTION_FILENAME).read_bytes())
    assert resolve_inception_weights() == cache  # env var points nowhere: falls through to clean-fid's cache
    monkeypatch.setenv(INCEPTION_ENV_VAR, str(weights_dir))
    assert resolve_inception_weights() == weights_dir / INCEPTION_FILENAME  # env var beats the cache
    assert resolve_inception_weights(cache) == cache  # explicit argument beats both


def test_cleanfid_cache_location_matches_cleanfid():
    import inspect
    import platform

    import cleanfid.features

    # clean-fid 0.1.35 hands "/tmp" ("./" on Windows) to InceptionV3W as the download folder.
    assert '"/tmp"' in inspect.getsource(cleanfid.features.feature_extractor)
    if platform.system() != "Windows":
        assert str(inception.cleanfid_cache_path()) == "/tmp/" + INCEPTION_FILENAME
