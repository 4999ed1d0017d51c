"""Stage-side checkpoint I/O: atomic saves, and loading with every failure turned into one StageError line.

The format itself (params, plain and EMA weights, step) lives in pipeline.models.checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import StageError
from pipeline.io import atomic
from pipeline.models.checkpoint import CheckpointError, load, to_project_checkpoint

make = to_project_checkpoint


def save(path: Path, ckpt: dict) -> None:
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)


def load_network(path: Path, device: str = "cpu", use_ema: bool = True) -> torch.nn.Module:
    """The network of a project checkpoint in eval mode (EMA weights where present)."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: model checkpoint missing; run the train stage (or `python -m pipeline import`) first")
    try:
        return load(path, device=device, use_ema=use_ema)
    except CheckpointError as e:
        raise StageError(f"{e}; rerun the train stage (delete the file first) or re-import the checkpoint") from None


def kept_weights(folder: Path) -> list[tuple[int, Path]]:
    """(step, file) of the weights kept every training.ckpt_freq steps (`folder/step_<step>.pt`), oldest first."""
    return sorted((int(f.stem.split("_")[1]), f) for f in Path(folder).glob("step_*.pt"))
