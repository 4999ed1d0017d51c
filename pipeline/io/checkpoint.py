"""Stage-side checkpoint I/O, the one place for it: atomic saves, and loading with every failure turned into one
StageError line (`_load`), for the two networks stages save and load:

- the score network's project checkpoint (model.pt, ckpts/step_<step>.pt): the format itself (params, plain and EMA
  weights, step) lives in pipeline.models.checkpoint;
- the noise-conditional classifier p_t(y | x(t)) of class-conditional sampling (runs/<suite>/<exp>/classifier/): its
  `make_noise_classifier` config and weights. Its network code is passed in by the caller (`build`), not imported
  here, so that the score-model stages, which all import this module, do not depend on the classifier's code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import torch

from pipeline.errors import StageError
from pipeline.io import atomic
from pipeline.models.checkpoint import CheckpointError, load, to_project_checkpoint

make = to_project_checkpoint
T = TypeVar("T")


def save(path: Path, ckpt: dict) -> None:
    """torch.save `ckpt` to `path` atomically."""
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)


def _load(path: Path, read: Callable[[Path], T], missing: str, unreadable: Callable[[Exception], str],
          errors: type[Exception] | tuple[type[Exception], ...]) -> T:
    """read(path), with a missing file ("<path>: <missing>") and any of `errors` (unreadable(error)) each reported as
    one StageError line."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: {missing}")
    try:
        return read(path)
    except errors as e:
        raise StageError(unreadable(e)) from None


# --- the score network ------------------------------------------------------------------------------------------
def load_network(path: Path, device: str = "cpu", use_ema: bool = True) -> torch.nn.Module:
    """The network of a project checkpoint in eval mode (EMA weights where present)."""
    return _load(path, lambda f: load(f, device=device, use_ema=use_ema),
                 "model checkpoint missing; run the train stage (or `python -m pipeline import`) first",
                 lambda e: f"{e}; rerun the train stage (delete the file first) or re-import the checkpoint",
                 CheckpointError)


def kept_weights(folder: Path) -> list[tuple[int, Path]]:
    """(step, file) of the weights kept every training.ckpt_freq steps (`folder/step_<step>.pt`), oldest first."""
    return sorted((int(f.stem.split("_")[1]), f) for f in Path(folder).glob("step_*.pt"))


# --- the noise-conditional classifier ---------------------------------------------------------------------------
NOISE_CLASSIFIER_FILE = "classifier.pt"  # runs/<suite>/<exp>/classifier/classifier.pt: the name kept for compatibility


def save_noise_classifier(path: Path, config: dict, net: torch.nn.Module) -> None:
    """The noise classifier's `make_noise_classifier` config and its weights (on the CPU)."""
    save(path, {"config": config, "weights": {k: v.cpu() for k, v in net.state_dict().items()}})


def load_noise_classifier(path: Path, build: Callable[[dict], torch.nn.Module], device: str = "cpu") -> torch.nn.Module:
    """The noise classifier saved by `save_noise_classifier`, in eval mode on `device`; `build` is
    `pipeline.models.noise_classifier.make_noise_classifier` (see the module's docstring)."""

    def read(f: Path) -> torch.nn.Module:
        state = torch.load(f, map_location="cpu", weights_only=True)
        net = build(state["config"])
        net.load_state_dict(state["weights"])
        return net

    # any exception: a truncated file, a foreign pickle, a config that does not fit
    net = _load(path, read, "noise-conditional classifier missing; run the classifier stage first",
                lambda e: f"{path}: not a readable classifier checkpoint ({type(e).__name__}); rerun the classifier "
                          "stage (delete the file first)", Exception)
    return net.to(device).eval()
