"""Sampling an experiment: `draw(params, setting, net, n, generators)` runs the setting's method (`sampling.method`)
on the experiment's SDE and network; `sample_with_score` runs it with any score function (class-conditional
guidance). Importing this module registers every method (pipeline/samplers/methods/, one module each; the registry
is `pipeline.samplers.method`), as `pipeline.models.zoo` does for the networks.

The samplers themselves: PC, probability-flow ODE and annealed Langevin in `pipeline.samplers.sde_samplers`, the
few-step solvers in `pipeline.samplers.fast_samplers`; both are re-exported here under their old import paths.
"""
from __future__ import annotations

import torch

from pipeline.core.experiment import make_sde, sample_shape, score_function
from pipeline.samplers.fast_samplers import ddim_sample, dpm_solver_sample, heun_sample  # noqa: F401
from pipeline.samplers.method import METHODS, method, sampling_eps  # noqa: F401
from pipeline.samplers.methods import ald, ddim, dpm_solver, heun, ode, pc  # noqa: F401  (register the methods)
from pipeline.samplers.sde_samplers import (  # noqa: F401
    ALD_CONVENTIONS,
    PC_ORDERS,
    CountingScore,
    ald_sample,
    ode_sample,
    pc_sample,
)
from pipeline.speed import compiled

METHODS.check()  # every method of names.SAMPLING_METHOD_TABLE registered, and no other


def sample_with_score(params, s, sde, score_fn, shape, generator, device="cpu") -> tuple[torch.Tensor, int]:
    """Samples of `shape` with setting `s` (a SamplingConfig) and any score function on the experiment's SDE, in the
    model's data range, and the number of score evaluations. `generator`: one per row."""
    return method(s.method).sample(params, s, sde, score_fn, shape, generator, device)


def draw(params, s, net, n: int, generator, device="cpu") -> tuple[torch.Tensor, int]:
    """n samples of the experiment `params` with sampler setting `s` (a SamplingConfig), in the model's data range,
    and the number of score evaluations. `generator`: one per sample (rows independent of the batch)."""
    sde = make_sde(params)
    what = "sampling.cuda_graphs" if s.cuda_graphs else "sampling.compile"
    score_fn = score_function(params, sde, compiled.cached(net, s.compile, what, cuda_graphs=s.cuda_graphs))
    return sample_with_score(params, s, sde, score_fn, sample_shape(params, n), generator, device)
