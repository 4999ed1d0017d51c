"""Inception-v3 "2015-12-05" pool_3 features and logits from clean-fid's TorchScript file, with clean-fid's preprocessing.

Never downloads: the weights file is found by `resolve_inception_weights` or `InceptionWeightsMissing` says how to
supply it.
"""

from __future__ import annotations

import os
import platform
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid.downloads_helper import inception_url as INCEPTION_URL
from cleanfid.resize import build_resizer

__all__ = [
    "INCEPTION_FILENAME",
    "INCEPTION_ENV_VAR",
    "INCEPTION_PARAM",
    "INCEPTION_URL",
    "INCEPTION_MODES",
    "InceptionWeightsMissing",
    "cleanfid_cache_path",
    "resolve_inception_weights",
    "load_inception",
    "inception_features",
]

INCEPTION_FILENAME = "inception-2015-12-05.pt"
INCEPTION_ENV_VAR = "PIPELINE_INCEPTION_WEIGHTS"
INCEPTION_PARAM = "eval.inception_weights"
INCEPTION_MODES = ("clean", "legacy_tensorflow")
FEATURE_DIM = 2048  # pool_3
NUM_LOGITS = 1008  # softmax layer of the 2015-12-05 graph (1001 ImageNet classes + 7 unused)
INPUT_SIZE = 299


class InceptionWeightsMissing(Exception):
    """The Inception TorchScript file is not on disk; offline we never download it."""


def cleanfid_cache_path() -> Path:
    """Where clean-fid keeps the file it downloads: cleanfid.features.feature_extractor passes "/tmp" ("./" on
    Windows) to InceptionV3W, which joins it with "inception-2015-12-05.pt"."""
    folder = "./" if platform.system() == "Windows" else "/tmp"
    return Path(folder) / INCEPTION_FILENAME


def _candidate(path: str | os.PathLike) -> Path:
    candidate = Path(path).expanduser()
    return candidate / INCEPTION_FILENAME if candidate.is_dir() else candidate


def resolve_inception_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """Path of `inception-2015-12-05.pt`: `weights_path` if given (a file or a folder holding it), else
    $PIPELINE_INCEPTION_WEIGHTS, else clean-fid's cache. An explicit path is the only one tried, so a wrong
    `eval.inception_weights` is an error and never silently replaced by another file."""
    if weights_path is not None:
        tried = [("argument weights_path / " + INCEPTION_PARAM, _candidate(weights_path))]
    else:
        tried = []
        env_value = os.environ.get(INCEPTION_ENV_VAR)
        if env_value:
            tried.append((f"${INCEPTION_ENV_VAR}", _candidate(env_value)))
        tried.append(("clean-fid cache", cleanfid_cache_path()))
    for _, candidate in tried:
        if candidate.is_file():
            return candidate
    lines = "\n".join(f"  - {source}: {candidate}" for source, candidate in tried)
    if not os.environ.get(INCEPTION_ENV_VAR) and weights_path is None:
        lines += f"\n  (${INCEPTION_ENV_VAR} is not set)"
    raise InceptionWeightsMissing(
        f"Inception-v3 weights '{INCEPTION_FILENAME}' not found; tried:\n{lines}\n"
        f"This pipeline never downloads it. Download it on a machine with internet from\n  {INCEPTION_URL}\n"
        f"and supply it by one of: the parameter `{INCEPTION_PARAM}: /path/to/{INCEPTION_FILENAME}`, "
        f"the environment variable {INCEPTION_ENV_VAR}=/path/to/{INCEPTION_FILENAME}, "
        f"or copying it to {cleanfid_cache_path()} (clean-fid's own cache)."
    )


def load_inception(weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Load the TorchScript Inception (StyleGAN2-ADA's translation of the TF graph that clean-fid uses).

    The module has `layers` (image (N,3,299,299) in [-1,1] -> pool_3 (N,2048,1,1)), `output` (Linear 2048->1008)
    and forward(img, return_features, use_fp16, no_output_bias), which resizes to 299 inside (TF-style bilinear)
    and maps [0,255] to [-1,1] before `layers`.
    """
    path = resolve_inception_weights(weights_path)
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but the published file is TorchScript.
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(path), map_location=torch.device(device)).eval()
    for attribute in ("layers", "output"):
        if not hasattr(model, attribute):
            raise ValueError(f"{path} is not clean-fid's Inception TorchScript: it has no `{attribute}` submodule")
    return model


def _as_uint8_nchw(images: np.ndarray | torch.Tensor) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in [0, 255] (quantized samples), got dtype {array.dtype}")
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C in (1, 3), got shape {array.shape}")
    if array.shape[1] == 1:
        # Grey images become RGB by repeating the channel, as PIL's convert('RGB') does in clean-fid's loader.
        array = np.repeat(array, 3, axis=1)
    return array


def _clean_resize_one(resize, image_chw: np.ndarray) -> np.ndarray:
    # clean-fid "clean" mode: PIL bicubic resize of each float32 channel to 299x299 without quantizing after
    # (cleanfid.resize.build_resizer("clean")), clipped to [0, 255]; ResizeDataset keeps the float32 as is.
    return resize(image_chw.transpose(1, 2, 0)).transpose(2, 0, 1)


def inception_features(
    images: np.ndarray | torch.Tensor,
    weights_path: str | os.PathLike | None = None,
    mode: str = "clean",
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model=None,
    output_bias: bool = True,
    resize_workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pool_3 features (N, 2048) float64, logits (N, 1008) float64) of uint8 NCHW images.

    mode "clean": clean-fid's PIL-bicubic resize outside the net, then (x - 128) / 128 and `layers`, as
    InceptionV3W(resize_inside=False) does. mode "legacy_tensorflow": the raw [0,255] image goes to the module's
    own forward(x, return_features=True), whose TF-style bilinear resize matches the TF FID (InceptionV3W with
    resize_inside=True). Pass `model` (from `load_inception`) to skip loading the file on each call; it then runs
    on the device of its weights. In "clean" mode `resize_workers` threads (default: CPU count) resize images —
    PIL releases the GIL — and the next batch is resized while the network runs on the current one, which is
    where clean-fid uses DataLoader worker processes; the per-image arithmetic is clean-fid's, unchanged.

    Logits = `output`(pool_3) = W f + b, the pre-softmax layer of the same network. softmax over all 1008
    columns is what TF-GAN's classifier_score_from_logits does on the graph's logits (Score SDE's IS protocol).
    Salimans et al.'s original IS code (and StyleGAN2-ADA's `no_output_bias=True`) drops the bias b: pass
    output_bias=False for that protocol. The 7 extra columns are never-trained classes with ~0 probability.
    """
    if mode not in INCEPTION_MODES:
        raise ValueError(f"mode must be one of {INCEPTION_MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    array = _as_uint8_nchw(images)
    if model is None:
        model = load_inception(weights_path, device)
    weight = model.output.weight
    bias = model.output.bias if output_bias else None
    device = weight.device
    starts = range(0, array.shape[0], batch_size)
    features, logits = [], []
    workers = resize_workers if resize_workers is not None else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, torch.inference_mode():
        resize = build_resizer(mode)

        def submit_resizes(start: int) -> list:
            return [pool.submit(_clean_resize_one, resize, image) for image in array[start:start + batch_size]]

        pending = submit_resizes(0) if mode == "clean" and len(starts) else None
        for start in starts:
            if mode == "clean":
                batch = np.stack([job.result() for job in pending])
                next_start = start + batch_size
                pending = submit_resizes(next_start) if next_start < array.shape[0] else None
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                pool3 = model.layers((x - 128.0) / 128.0).reshape(x.shape[0], FEATURE_DIM)
            else:
                x = torch.from_numpy(array[start:start + batch_size]).to(device=device, dtype=torch.float32)
                pool3 = model(x, return_features=True).reshape(x.shape[0], FEATURE_DIM)
            features.append(pool3.double().cpu().numpy())
            logits.append(F.linear(pool3, weight, bias).double().cpu().numpy())
    if not features:
        return np.zeros((0, FEATURE_DIM)), np.zeros((0, weight.shape[0]))
    return np.concatenate(features), np.concatenate(logits)
