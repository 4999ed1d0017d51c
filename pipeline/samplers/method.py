"""Sampling methods by name (`sampling.method`): one module each under pipeline/samplers/methods/, registered here by
`@register`. `method(name)` is the one place a method name is looked up: `sampling.draw`, the controllable stage,
the curves' NFE (`pipeline.metrics.curves`) and the report's labels all go through it.

What the params schema needs of a method (the keys it reads, the SDEs and models it runs on, the keys it needs, its
curve knob) is its declaration `pipeline.names.SAMPLING_METHOD_TABLE[name]`: plain data that `pipeline.config`
reads without importing the samplers. A method's module adds the code: `sample`, `nfe_terms` (its NFE as a line in
its knob) and `label`.
"""
from __future__ import annotations

import abc
from typing import Optional

import torch

from pipeline import names


def sampling_eps(params, s) -> float:
    """The sampler's end time ε: the setting, else 1e-5 for VE and 1e-3 for VP / sub-VP (docs/papers.md §3)."""
    return s.eps or (1e-5 if params.training.sde == "vesde" else 1e-3)


def denoise_nfe(s) -> int:
    """The score evaluation `noise_removal` adds (x̂_0 at ε), for the methods that spend one on it."""
    return int(bool(s.noise_removal))


class Method(abc.ABC):
    """A sampling method: `name` (its declaration, `spec`, is names.SAMPLING_METHOD_TABLE[name]) and its code: `sample`
    and `label`, and for a method with a curve knob (spec.knob not None) `nfe_terms(s, num_scales) -> (a, b)`: setting
    `s` makes a * knob + b score evaluations per sample, knob = the value of `spec.knob` in s (None: the SDE's
    N = num_scales). `register` refuses a method without them."""

    name: str = ""

    @property
    def spec(self) -> names.SamplingMethod:
        return names.sampling_method(self.name)

    @abc.abstractmethod
    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu") -> tuple[torch.Tensor, int]:
        """Samples of `shape` with setting `s` (a SamplingConfig) and any score function `score_fn(x, t)` of the
        experiment `params` and its SDE `sde`, in the model's data range, and the number of score evaluations.
        `generator`: one per row."""

    @abc.abstractmethod
    def label(self, s) -> str:
        """How the report names setting `s` (tables, curves, figure titles)."""

    def nfe_line(self, s, num_scales: int) -> Optional[tuple[str, int, int]]:
        """(knob, a, b) with NFE = a * knob + b, or None for an adaptive method (its NFE is measured)."""
        knob = self.spec.knob
        return None if knob is None else (knob, *self.nfe_terms(s, num_scales))

    def nfe(self, s, num_scales: int) -> Optional[int]:
        """Score evaluations per sample of setting `s` with a model of num_scales levels (the SDE's N); None when
        adaptive."""
        line = self.nfe_line(s, num_scales)
        if line is None:
            return None
        knob, a, b = line
        value = getattr(s, knob)
        return a * int(num_scales if value is None else value) + b


class FewStepMethod(Method):
    """A few-step solver of `pipeline.samplers.fast_samplers`: num_steps solver steps on a time grid (`time_grid`, else
    `default_grid`) from T to ε, a discretely trained model's grid snapped to its levels, `noise_removal` returns
    x̂_0 at ε (one more NFE)."""

    default_grid = ""

    def grid_args(self, params, s, generator, device) -> dict:
        return dict(num_steps=s.num_steps, eps=sampling_eps(params, s), rho=s.rho,
                    time_grid=s.time_grid or self.default_grid, denoise=s.noise_removal,
                    generator=generator, device=device, discrete=not params.training.continuous)


METHODS = names.Registry("sampling method", names.SAMPLING_METHODS)  # name -> Method; checked by sampling.py


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: `@register` on a Method subclass makes `sampling.method: <cls.name>` run it; the name must be
    declared in names.SAMPLING_METHOD_TABLE (the schema's half of the method)."""
    if cls.name not in names.SAMPLING_METHOD_TABLE:
        raise ValueError(f"sampling method {cls.name!r} has no declaration in pipeline.names.SAMPLING_METHOD_TABLE")
    instance = cls()  # TypeError naming them when `sample` or `label` is missing (abstract)
    if instance.spec.knob is not None and not callable(getattr(instance, "nfe_terms", None)):
        raise TypeError(f"sampling method {cls.name!r} declares the curve knob {instance.spec.knob!r} but has no "
                        "nfe_terms(s, num_scales) giving its NFE on that knob")
    METHODS.register(cls.name)(instance)
    return cls


def method(name: str) -> Method:
    """The registered method `name`, or a ValueError that lists the known names: the one lookup of a method name."""
    return METHODS.lookup(name)
