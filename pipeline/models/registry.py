"""Model registry: networks are looked up by `model.name` and built from the params block only."""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.config import ParamsError
from pipeline.names import Registry

_MODELS = Registry("model")  # name -> network class (Callable[[params], nn.Module])
register = _MODELS.register  # class decorator: `@register("ncsnpp")` makes the network buildable as `model.name: ncsnpp`


def names() -> list[str]:
    return sorted(_MODELS)


def build(params) -> nn.Module:
    """Build `params.model.name` from the validated params (reads `params.model` and `params.data`)."""
    if params.model.name not in _MODELS:
        raise ValueError(f"unknown model {params.model.name!r}; expected one of {names()}")
    return _MODELS[params.model.name](params)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def check_params(params, path: str) -> None:
    """A known `model.name` whose network builds with these settings (on the meta device: no memory, no time), so
    that e.g. a DDPM `nf` that is not a multiple of 32 fails when the DAG is generated, before any work."""
    if params.model.name not in _MODELS:
        raise ParamsError(path, "model.name", f"unknown model {params.model.name!r}; expected one of {names()}")
    try:
        with torch.device("meta"):
            build(params)
    except ValueError as e:
        raise ParamsError(path, "model", str(e).splitlines()[0]) from None
