"""Quality curves: sample n images with one sampler setting from one checkpoint and compute the classifier FD (a
"sweep point"), used twice: FD against NFE (every sampler of `curves.samplers` over `curves.nfe`) and FD against
training step (`curves.checkpoints`, over the EMA weights kept every `training.ckpt_freq` steps; Score SDE reports
the best-FID checkpoint in Table 3, docs/papers.md §7).

NFE of a setting (`nfe_of`), exactly as the samplers count score evaluations: each method's `nfe_line` (its module
under pipeline/samplers/methods/), a line a * knob + b in the knob its declaration names (num_steps; n_steps_each
for ald), with d = 1 when `noise_removal` adds x̂_0 at ε:
- pc, order "reference": M (p + c n); order "paper": M p + (M - 1) c n, where M = num_steps (None: model.num_scales),
  p = 1 with a predictor, c = 1 with a corrector, n = n_steps_each (the last predictor step's mean is the
  denoised sample: no extra evaluation);
- heun: order x M + d; dpm_solver single-step order k: k M + d, multistep: M + d; ddim: M + d;
- ald: L n + d with L = model.num_scales levels;
- ode: adaptive (None): its curve sweeps rtol = atol over `curves.ode_tols` and records the measured NFE.
For a target NFE the sweep's knob is the integer whose NFE is nearest to the
target (ties: the smaller). A target for which that integer is 0 is skipped, and so is a target whose knob repeats
the previous target's (each setting is evaluated once), or a setting the experiment's SDE rejects (e.g. VP reverse
diffusion with fewer than beta_max steps). The record keeps the target, the rule's NFE and the measured NFE.
Discrete models (a grid snapped to the trained levels) can take fewer steps than asked: the measured NFE says what
ran.

Seeding: sample i of seed k is drawn from `rng.generator(seed, "sample", k, i)`, the sample stage's generators, so every
point of a curve starts from the same noise (common random numbers) and a fixed-step setting's samples are the sample
stage's. The rows of all seeds share batches of `curves.batch_size` (a few samples per seed run slowly in small
batches); the adaptive ODE solver then takes one step size for the batch.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pipeline.core.experiment import is_points
from pipeline.core.rng import generator
from pipeline.core.scaling import to_uint8
from pipeline.metrics.distances import feature_stats, frechet_from_stats
from pipeline.metrics.stats import mean_std
from pipeline.samplers import sampling

Features = Callable[[np.ndarray], np.ndarray]  # uint8 images (or float points) -> feature matrix


# --- NFE <-> setting ------------------------------------------------------------------------------------------------
def _nfe_line(s, num_scales: int) -> Optional[tuple[str, int, int]]:
    """(knob, a, b) with NFE = a * knob + b for setting `s`, or None for an adaptive method (the ODE solver)."""
    return sampling.method(s.method).nfe_line(s, num_scales)


def nfe_of(s, num_scales: int) -> Optional[int]:
    """Score evaluations per sample of setting `s` (a SamplingConfig); None for an adaptive method (the ODE solver)."""
    return sampling.method(s.method).nfe(s, num_scales)


def sampler_label(s) -> str:
    """How the report names setting `s`: its method's label (the report reaches the samplers through here)."""
    return sampling.method(s.method).label(s)


def setting_for_nfe(s, target: int, num_scales: int):
    """`s` with its NFE knob set for `target` score evaluations (see the module docstring), or None when skipped."""
    line = _nfe_line(s, num_scales)
    if line is None:
        raise ValueError("the ODE solver is adaptive: sweep its tolerances (curves.ode_tols), not its NFE")
    knob, a, b = line
    k = max(1, int(np.floor((target - b) / a)))
    if abs(a * (k + 1) + b - target) < abs(a * k + b - target):
        k += 1
    if target - b <= a / 2:  # not nearer to one step than to zero (ties go to the smaller)
        return None
    return s.model_copy(update={knob: k})


def sweep(s, nfe: list[int], ode_tols: list[float], num_scales: int,
          problem: Optional[Callable[[object], Optional[str]]] = None) -> tuple[list[tuple], list[dict]]:
    """The curve's points [(target NFE or None, setting)]: the ODE over its tolerances, the rest over `nfe`; and the
    skipped targets [{"target_nfe", "reason"}]. problem(setting) -> why a setting is invalid (None: valid)."""
    if _nfe_line(s, num_scales) is None:  # adaptive: the ODE solver's tolerances
        return [(None, s.model_copy(update={"rtol": tol, "atol": tol})) for tol in ode_tols], []
    out, skipped, seen = [], [], set()
    for target in nfe:
        t = setting_for_nfe(s, target, num_scales)
        if t is None:
            _, a, b = _nfe_line(s, num_scales)
            skipped.append({"target_nfe": target, "reason": f"below the smallest NFE ({a + b})"})
            continue
        key = nfe_of(t, num_scales)
        if key in seen:
            skipped.append({"target_nfe": target, "reason": f"same setting as the previous point (NFE {key})"})
            continue
        why = problem(t) if problem is not None else None
        if why:
            skipped.append({"target_nfe": target, "reason": why})
            continue
        seen.add(key)
        out.append((target, t))
    return out, skipped


# --- one point ------------------------------------------------------------------------------------------------------
def draw_samples(params, s, net, n: int, seeds, batch_size: int, device="cpu") -> tuple[np.ndarray, list[float]]:
    """n samples per seed index in `seeds` (uint8 images, or float points), shape (len(seeds), n, ...), and each
    seed's mean NFE over its rows. Rows of all seeds share batches of `batch_size` (a sample depends only on its own
    generator, so batching changes no fixed-step sample; the adaptive ODE solver's step sizes see the whole batch)."""
    rows = [(k, i) for k in seeds for i in range(n)]
    chunks, row_nfe = [], []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        gens = [generator(params.seed, "sample", k, i) for k, i in part]
        with torch.no_grad():
            x, nfe = sampling.draw(params, s, net, len(part), gens, device)
        chunks.append(x.float().cpu().numpy() if is_points(params) else to_uint8(x, params.data.centered))
        row_nfe += [float(nfe)] * len(part)
    out = np.concatenate(chunks)
    per_seed = np.asarray(row_nfe).reshape(len(seeds), n).mean(axis=1)
    return out.reshape(len(seeds), n, *out.shape[1:]), per_seed.tolist()


def stat(values: list[float]) -> dict:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std if np.isfinite(std) else None, "n": len(values), "values": values}


def fd_point(params, s, net, features: Features, ref: tuple[np.ndarray, np.ndarray], num_samples: int,
             num_seeds: int, batch_size: int, device="cpu", on_batch=None) -> dict:
    """FD (mean, std and per-seed values over `num_seeds` seeds of `num_samples` samples) and measured NFE of
    setting `s` with network `net`; `ref` = (mu, sigma) of the reference features."""
    t0 = time.perf_counter()
    x, nfe = draw_samples(params, s, net, num_samples, range(num_seeds), batch_size, device)
    fd = []
    for k in range(num_seeds):
        feats = features(x[k])
        # one BLAS thread: scipy's sqrtm of a 128 x 128 product took 0.6-5.6 s with 2 threads on a loaded 2-core
        # machine and 0.05-0.07 s with one (same value)
        with threadpool_limits(limits=1, user_api="blas"):
            fd.append(frechet_from_stats(*feature_stats(feats), *ref))
    if on_batch is not None:
        on_batch(num_samples * num_seeds)
    return {"fd": stat(fd), "nfe": stat(nfe), "num_samples": num_samples, "num_seeds": num_seeds,
            "seconds": round(time.perf_counter() - t0, 2)}


def best_checkpoint(records: list[dict]) -> dict:
    """The record with the lowest mean FD; ties go to the later checkpoint (more training for the same quality)."""
    if not records:
        raise ValueError("no checkpoint records")
    return min(records, key=lambda r: (r["fd"]["mean"], -r["checkpoint_step"]))
