"""Project checkpoints of score networks ({"format": "pipeline-ckpt-v1", params, model, ema, step}): make, check, load."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pipeline.config import ParamsError, validate_schema
from pipeline.models.registry import build

FORMAT = "pipeline-ckpt-v1"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: the message names the file (where known) and what is wrong."""


class CheckpointMismatch(CheckpointError):
    """Weights that do not fit the network: a missing or extra key, or a shape mismatch (the message names the key)."""


def to_project_checkpoint(params, model_sd: dict, ema_sd: dict | None, step: int) -> dict:
    """The dict that `torch.save` writes as a project checkpoint (the train stage and `import` both write this)."""
    return {"format": FORMAT, "params": params.model_dump(mode="json"), "model": dict(model_sd),
            "ema": None if ema_sd is None else dict(ema_sd), "step": int(step)}


def check_state_dict(net: nn.Module, state: dict, what: str = "weights") -> None:
    """Raise CheckpointMismatch unless `state` has exactly the keys and shapes of net.state_dict()."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointMismatch(f"{what}: missing key {missing[0]!r} ({len(missing)} missing) for a {type(net).__name__}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointMismatch(f"{what}: unexpected key {extra[0]!r} ({len(extra)} extra) for a {type(net).__name__}")
    for k, v in expected.items():
        got = getattr(state[k], "shape", None)
        if got != v.shape:
            raise CheckpointMismatch(f"{what}: key {k!r} has shape {tuple(got) if got is not None else type(state[k]).__name__}, "
                                     f"the network expects {tuple(v.shape)}")


def read_project_checkpoint(path: str | Path) -> dict:
    """torch.load (tensors only) and check the project format; any failure is one CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt, truncated or not a tensors-only checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (convert reference checkpoints with `python -m pipeline import`)")
    for key, kind in (("params", dict), ("model", dict), ("step", int)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if ckpt.get("ema") is not None and not isinstance(ckpt["ema"], dict):
        raise CheckpointError(f"{path}: field 'ema' is neither a state dict nor None")
    return ckpt


def load(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> nn.Module:
    """The network of a project checkpoint, in eval mode, with its EMA weights (plain weights where `ema` is None)."""
    ckpt = read_project_checkpoint(path)
    try:
        net = build(validate_schema(ckpt["params"], str(path)))
    except (ParamsError, ValueError) as e:
        raise CheckpointError(f"{path}: stored params do not build a network: {e}") from None
    use = "ema" if use_ema and ckpt["ema"] is not None else "model"
    weights = ckpt[use]
    check_state_dict(net, weights, f"{path} [{use}]")
    net.load_state_dict(weights)
    return net.to(device).eval()
