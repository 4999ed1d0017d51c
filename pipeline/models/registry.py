"""Model registry: networks are looked up by `model.name` and built from the params block only."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: `@register("ncsnpp")` makes the network buildable as `model.name: ncsnpp`."""

    def wrap(cls):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = cls
        return cls

    return wrap


def names() -> list[str]:
    return sorted(_MODELS)


def build(params) -> nn.Module:
    """Build `params.model.name` from the validated params (reads `params.model` and `params.data`)."""
    return _MODELS[params.model.name](params)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
