"""Reference checkpoints -> project state dicts: score_sde_pytorch (`ddpm`, `ncsnpp`), ermongroup/ncsn, ermongroup/ncsnv2.

The project networks use the reference module names, so the mapping is the identity once the DataParallel prefix
`module.` is stripped; `sigmas` (a buffer the reference stores) is derived from params here and only checked.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pipeline.models.checkpoint import CheckpointError, CheckpointMismatch, check_state_dict, check_torch_file

__all__ = ["CheckpointMismatch", "UntrustedCheckpoint", "convert", "convert_ncsn", "convert_ncsnv2", "convert_score_sde",
           "read_reference_checkpoint"]

DERIVED_BUFFERS = ("sigmas",)
FOURIER_W = "all_modules.0.W"  # GaussianFourierProjection.W: a parameter without gradient, hence not in the EMA


class UntrustedCheckpoint(CheckpointError):
    """The file holds Python objects beyond tensors; unpickling it could run code."""


def read_reference_checkpoint(path: str | Path, trust: bool = False) -> Any:
    """torch.load a reference checkpoint with weights_only=True; arbitrary unpickling only when `trust` is set.

    A file that torch.save cannot have written (empty, truncated, random bytes, text) is refused before torch.load,
    whose weights-only refusal would otherwise read as "Python objects besides tensors" for it too."""
    path = check_torch_file(path, "; check the path, or download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a whole, well-formed pickle that names more than tensors
        if not trust:
            raise UntrustedCheckpoint(
                f"{path}: the checkpoint holds Python objects besides tensors, and loading it could run arbitrary code; "
                "if you trust its source, pass --trust-checkpoint") from None
    except Exception as e:  # noqa: BLE001 - zip, storage and EOF errors
        raise _corrupt(path, e) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever unpickling the objects raises
        raise _corrupt(path, e) from None


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return CheckpointError(f"{path}: corrupt PyTorch checkpoint ({first}); download it again")


def _other_layout(obj: Any) -> str:
    """The fix for a checkpoint laid out by another code base than --format names."""
    if isinstance(obj, dict) and "model" in obj:
        return "it looks like a score_sde_pytorch checkpoint: pass --format score_sde"
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], dict):
        return "it looks like an ermongroup checkpoint: pass --format ncsn or ncsnv2"
    return "check --format"


def _strip_prefix(state: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{what}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _split_buffers(state: dict) -> tuple[dict, dict]:
    """(weights, derived buffers): the buffers are checked against params once the weights fit the network."""
    buffers = {name: state.pop(name) for name in DERIVED_BUFFERS if name in state}
    return state, buffers


def _check(net: nn.Module | None, model_sd: dict, ema_sd: dict | None, buffers: dict) -> None:
    """The keys and shapes first (the first mismatching key names another network), then the noise levels."""
    if net is None:
        return
    try:
        check_state_dict(net, model_sd, "model")
        if ema_sd is not None:
            check_state_dict(net, ema_sd, "ema")
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{e}; the checkpoint holds another network than the params describe (check model.* "
                                 "in the params file, and --format)") from None
    for name, stored in buffers.items():
        ours = getattr(net, name, None)
        if ours is not None and (stored.shape != ours.shape
                                 or not torch.allclose(stored.double(), ours.double(), rtol=1e-5, atol=0)):
            raise CheckpointMismatch(
                f"{name}: the checkpoint's {stored.numel()} noise levels [{float(stored.max()):g} .. {float(stored.min()):g}] "
                f"differ from params ({ours.numel()} levels [{float(ours.max()):g} .. {float(ours.min()):g}]): "
                "check model.sigma_max, sigma_min, num_scales")


def convert_score_sde(ckpt: Any, net: nn.Module | None = None) -> tuple[dict, dict | None, int]:
    """score_sde_pytorch `checkpoint_*.pth` {model, ema: {shadow_params: [...]}, optimizer, step} -> (model, ema, step).

    shadow_params follow the order of the trainable parameters, which is the order of the parameter keys in `model`.
    """
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError("not a score_sde_pytorch checkpoint: expected a dict with 'model', 'ema', 'step' "
                              f"(got {type(ckpt).__name__}); {_other_layout(ckpt)}")
    model_sd, buffers = _split_buffers(_strip_prefix(ckpt["model"], "model"))
    ema_sd = None
    ema = ckpt.get("ema")
    if ema is not None:
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if not isinstance(shadow, (list, tuple)):
            raise CheckpointError("ema: expected a dict with a 'shadow_params' list")
        trainable = [k for k in model_sd if k != FOURIER_W or model_sd[k].dim() != 1]
        if len(shadow) != len(trainable):
            raise CheckpointMismatch(f"ema: {len(shadow)} shadow parameters for {len(trainable)} trainable model parameters")
        ema_sd = dict(model_sd)
        for name, value in zip(trainable, shadow):
            if not isinstance(value, torch.Tensor) or value.shape != model_sd[name].shape:
                raise CheckpointMismatch(f"ema: shadow parameter for {name!r} has shape {tuple(getattr(value, 'shape', ()))}, "
                                         f"the model has {tuple(model_sd[name].shape)}")
            ema_sd[name] = value
    _check(net, model_sd, ema_sd, buffers)
    return model_sd, ema_sd, int(ckpt.get("step", 0))


def _optimizer_step(optim_state: Any) -> int:
    """The Adam step count, for checkpoints that store no step of their own (ermongroup/ncsn)."""
    try:
        steps = [s["step"] for s in optim_state["state"].values() if "step" in s]
        return int(max(float(s) for s in steps)) if steps else 0
    except (TypeError, KeyError, AttributeError):
        return 0


def convert_ncsn(obj: Any, net: nn.Module | None = None) -> tuple[dict, None, int]:
    """ermongroup/ncsn `checkpoint.pth` [model state dict, optimizer state] -> (model, None, step); NCSN keeps no EMA."""
    if not isinstance(obj, (list, tuple)) or not obj:
        raise CheckpointError("not an ermongroup/ncsn checkpoint: expected a list [state_dict, optimizer] "
                              f"(got {type(obj).__name__}); {_other_layout(obj)}")
    model_sd, buffers = _split_buffers(_strip_prefix(obj[0], "model"))
    _check(net, model_sd, None, buffers)
    return model_sd, None, _optimizer_step(obj[1]) if len(obj) > 1 else 0


def convert_ncsnv2(obj: Any, net: nn.Module | None = None) -> tuple[dict, dict | None, int]:
    """ermongroup/ncsnv2 `checkpoint_*.pth` [model, optimizer, epoch, step(, ema shadow {name: tensor})] -> (model, ema, step)."""
    if not isinstance(obj, (list, tuple)) or not obj:
        raise CheckpointError("not an ermongroup/ncsnv2 checkpoint: expected a list [state_dict, optimizer, epoch, step, "
                              f"ema] (got {type(obj).__name__}); {_other_layout(obj)}")
    model_sd, buffers = _split_buffers(_strip_prefix(obj[0], "model"))
    ema_sd = None
    if len(obj) > 4 and obj[4] is not None:
        shadow = _strip_prefix(obj[4], "ema")
        ema_sd = dict(model_sd)
        for name, value in shadow.items():
            if name not in model_sd:
                raise CheckpointMismatch(f"ema: unexpected key {name!r}")
            if value.shape != model_sd[name].shape:
                raise CheckpointMismatch(f"ema: key {name!r} has shape {tuple(value.shape)}, the model has {tuple(model_sd[name].shape)}")
            ema_sd[name] = value
    _check(net, model_sd, ema_sd, buffers)
    step = obj[3] if len(obj) > 3 else 0
    return model_sd, ema_sd, int(step)


def convert(obj: Any, model_name: str, net: nn.Module | None = None) -> tuple[dict, dict | None, int]:
    """Dispatch on model.name: ncsn and ncsnv2 from the ermongroup repositories, ddpm and ncsnpp from score_sde_pytorch."""
    table = {"ncsn": convert_ncsn, "ncsnv2": convert_ncsnv2, "ddpm": convert_score_sde, "ncsnpp": convert_score_sde}
    if model_name not in table:
        raise CheckpointError(f"no reference checkpoint format for model {model_name!r}; expected one of {sorted(table)}")
    return table[model_name](obj, net)
