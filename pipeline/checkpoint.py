"""The project checkpoint (`model.pt`): params, plain and EMA weights, step; written atomically."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline import atomic
from pipeline.errors import StageError

FORMAT = "pipeline-ckpt-v1"


def make(params, model_sd: dict, ema_sd: dict | None, step: int) -> dict:
    return {"format": FORMAT, "params": params.model_dump(mode="json"), "model": model_sd, "ema": ema_sd, "step": int(step)}


def save(path: Path, ckpt: dict) -> None:
    with atomic.atomic_path(path, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)


def read(path: Path) -> dict:
    """Load and check a project checkpoint; a missing, truncated or foreign file is one clear StageError."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: model checkpoint missing; run the train stage (or `python -m pipeline import`) first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types on corrupt zips
        raise StageError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}); delete it and rerun the train stage") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise StageError(f"{path}: not a {FORMAT} checkpoint; convert reference checkpoints with `python -m pipeline import`")
    return ckpt


def load_network(path: Path, device: str = "cpu", use_ema: bool = True):
    """(params, network in eval mode) with the EMA weights where present."""
    from pipeline import models
    from pipeline.config import validate

    ckpt = read(path)
    params = validate(ckpt["params"], str(path), Path(path).stem)
    net = models.build(params)
    weights = ckpt["ema"] if (use_ema and ckpt.get("ema") is not None) else ckpt["model"]
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise StageError(f"{path}: weights do not fit model {params.model.name!r}: {str(e).splitlines()[0]}") from None
    return params, net.to(device).eval()
