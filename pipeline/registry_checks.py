"""Cross-field checks that need the registries (model names, sampler settings): run when params load."""
from __future__ import annotations

from pipeline.config import ParamsError, SamplingConfig


def check(params, path: str) -> None:
    from pydantic import ValidationError

    from pipeline import models

    if params.model.name not in models.names():
        raise ParamsError(path, "model.name", f"unknown model {params.model.name!r}; expected one of {models.names()}")
    import torch

    try:  # settings a network cannot be built with (e.g. DDPM nf not a multiple of 32) fail here, before any work
        with torch.device("meta"):
            models.build(params)
    except ValueError as e:
        raise ParamsError(path, "model", str(e).splitlines()[0]) from None
    base = params.sampling.model_dump()
    settings = {"sampling": params.sampling}
    for name, over in params.samplers.items():
        if not isinstance(over, dict):
            raise ParamsError(path, f"samplers.{name}", "expected a mapping of sampling.* overrides")
        try:
            settings[f"samplers.{name}"] = SamplingConfig(**{**base, **over})
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ParamsError(path, f"samplers.{name}.{key}", msg) from None
    if params.sampling.method in params.samplers:
        raise ParamsError(path, f"samplers.{params.sampling.method}", "this name is taken by the default sampler (sampling.method)")
    for where, s in settings.items():
        _check_sampler(params, s, where, path)


def _check_sampler(params, s: SamplingConfig, where: str, path: str) -> None:
    sde = params.training.sde
    if s.method == "ald" and sde != "vesde":
        raise ParamsError(path, f"{where}.method", "annealed Langevin dynamics (ald) needs training.sde: vesde")
    if s.method == "pc":
        if s.predictor == "none" and s.corrector == "none":
            raise ParamsError(path, f"{where}.predictor", "a PC sampler needs a predictor or a corrector (both are none)")
        if s.predictor == "ancestral_sampling" and sde == "subvpsde":
            raise ParamsError(path, f"{where}.predictor", "ancestral_sampling is defined for vesde and vpsde only")
