"""Sample grids during training, logged to MLflow at every snapshot (`training.snapshot_sampling`).

These grids are MLflow artifacts only: no DVC output depends on them, so the DAG does not count this module (or the
samplers it imports) among the train stage's code dependencies (`pipeline.workflow.code_deps.SIDE_OUTPUT_ONLY`).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from pipeline.core import rng
from pipeline.core.experiment import is_points
from pipeline.core.scaling import to_uint8
from pipeline.io import grids
from pipeline.samplers import sampling


def snapshot_grid_logger(params, tracker, n: int = 16, max_steps: int = 100):
    """A callback(step, model, ema) that logs a grid of `n` samples (EMA weights, the default sampler cut to at most
    `max_steps` steps and 5 corrector steps) to MLflow as the image `snapshot_samples` at the training step."""
    s = params.sampling.model_copy(update={"num_steps": min(params.sampling.num_steps or params.model.num_scales,
                                                            max_steps),
                                           "n_steps_each": min(params.sampling.n_steps_each, 5),
                                           "compile": False})  # 16 samples from a fresh copy: compiling never pays

    def log(step: int, model, ema) -> None:
        net = copy.deepcopy(model).eval()
        if ema is not None:
            net.load_state_dict(ema.weights(net))
        gens = [rng.generator(params.seed, "snapshot-grid", i) for i in range(n)]
        with torch.no_grad():
            x, _ = sampling.draw(params, s, net, n, gens, next(net.parameters()).device)  # cuda:k, not "cuda"
        batch = x.float().cpu().numpy() if is_points(params) else to_uint8(x, params.data.centered)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / f"samples_step_{step:09d}.png"
            grids.save_grid(f, batch, is_points(params))
            tracker.log_image(f, "snapshot_samples", step=step)  # the run's image slider, by training step

    return log
