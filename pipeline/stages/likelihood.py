"""`likelihood`: test-set bits/dim with the probability-flow ODE (Score SDE Sec. 4.3, App. D): dequantized,
eval.bpd_num_repeats passes, mean ± standard error, NFE recorded; of the final weights and of those the train stage
kept at eval.bpd_steps (`at_step`), on the same images and dequantization noise."""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.core.experiment import is_points, make_sde, score_function
from pipeline.core.likelihood import bits_per_dim, bpd_offset, log_likelihood
from pipeline.core.rng import generator
from pipeline.core.scaling import to_model_range
from pipeline.errors import StageError
from pipeline.io import atomic, checkpoint, data, tracking
from pipeline.io.progress import bar as tqdm
from pipeline.metrics.stats import mean_stderr
from pipeline.stages.common import add_common_arguments, device, load_context, run_tags, tracked_params, trained

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="likelihood", help="test-set bits/dim with the probability-flow ODE",
    scope="experiment", order=70, when="eval.enable_bpd", deps=("train", "prepared"), metrics=("likelihood",),
    params=("seed", "eval.bpd_num_repeats", "eval.bpd_max_images", "eval.bpd_estimator", "eval.bpd_rtol",
            "eval.bpd_atol", "eval.batch_size", "eval.bpd_steps"),
    gpu=True, priority=1,
    snakemake_report={"likelihood": {"category": "Metrics", "labels": {"experiment": "{exp}", "metrics": "bits/dim"}}},
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def _score(p, net, x, points: bool, dev, bar) -> tuple[np.ndarray, list[int]]:
    """-log p per dimension of each test image in each pass (bits/dim, or nats/dim for points) and the ODE's NFEs."""
    sde = make_sde(p)
    score_fn = score_function(p, sde, net)
    dims = int(np.prod(x.shape[1:]))
    per_image = np.zeros((p.eval.bpd_num_repeats, len(x)))
    nfes = []
    bs = p.eval.batch_size
    for r in range(p.eval.bpd_num_repeats):
        for start in range(0, len(x), bs):
            idx = range(start, min(len(x), start + bs))
            gens = [generator(p.seed, "bpd", r, i) for i in idx]  # the same noise for every model scored
            xb = torch.from_numpy(x[start: idx.stop])
            # points as they are; images uniformly dequantized, then in the model's range (docs/papers.md §4)
            z = xb.float() if points else to_model_range(xb, p.data.centered, dequantize_with=gens)
            with torch.no_grad():
                logp, _, nfe = log_likelihood(sde, score_fn, z.to(dev), eps=1e-5, rtol=p.eval.bpd_rtol,
                                              atol=p.eval.bpd_atol, estimator=p.eval.bpd_estimator, generator=gens)
            logp = logp.detach().cpu().numpy()
            if points:
                per_image[r, start: idx.stop] = -logp / dims  # nats per dimension: continuous data, no quantization
            else:
                per_image[r, start: idx.stop] = bits_per_dim(torch.from_numpy(logp), dims,
                                                             offset=bpd_offset(p.data.centered)).numpy()
            nfes.append(nfe)
            bar.update(len(idx))
    return per_image, nfes


def _record(key: str, per_image: np.ndarray, nfes: list[int], seconds: float, step) -> dict:
    mean, se = mean_stderr(per_image.mean(0))  # standard error over test images (each averaged over passes)
    return {key: {"mean": mean, "stderr": se if np.isfinite(se) else None, "n_images": int(per_image.shape[1]),
                  "num_repeats": int(per_image.shape[0]), "per_pass": per_image.mean(1).tolist(),
                  # per test image, averaged over passes: two experiments' values pair up (same images, same
                  # dequantization noise), which the report's claims use (pipeline/report/claims.py)
                  "per_image": per_image.mean(0).tolist()},
            "nfe": float(np.mean(nfes)), "step": step, "seconds": round(seconds, 2)}


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    x, _ = data.load_split(ctx.root, p.data.dataset, "test")
    if p.eval.bpd_max_images:
        x = x[: p.eval.bpd_max_images]
    dev = device()
    points = is_points(p)
    key = "nll_nats_per_dim" if points else "bpd"
    final_step = trained(ctx).get("step")
    kept = dict(checkpoint.kept_weights(ctx.path("ckpts")))
    missing = [s for s in p.eval.bpd_steps if s not in kept]
    if missing:
        raise StageError(f"{ctx.path('ckpts')}: no weights kept at step {missing[0]} (eval.bpd_steps); rerun the train "
                         f"stage with training.ckpt_freq = {p.training.ckpt_freq}")
    # the final weights (model.pt), then those kept at eval.bpd_steps, all on the same images and noise
    models = [(final_step, ctx.path("train") / "model.pt")] + [(s, kept[s]) for s in p.eval.bpd_steps]
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "likelihood", tracked_params(ctx, SPEC["params"]),
                            tags=run_tags(ctx)) as tracker:
        bar = tqdm(total=len(x) * p.eval.bpd_num_repeats * len(models), desc="bits/dim")
        records = []
        for step, path in models:
            t0 = time.perf_counter()
            net = checkpoint.load_network(path, device=dev)
            per_image, nfes = _score(p, net, x, points, dev, bar)
            rec = _record(key, per_image, nfes, time.perf_counter() - t0, step)
            records.append(rec)
            stat = rec[key]
            # MLflow's step axis is the training step: the final model and the kept weights on one curve
            tracker.log_metrics({key: stat["mean"], f"{key}_stderr": stat["stderr"], "nfe": rec["nfe"],
                                 "seconds": rec["seconds"]}, step=step)
        bar.close()
        metrics = {**records[0], "estimator": p.eval.bpd_estimator,
                   # eval.bpd_steps: the kept weights' records, by training step
                   "at_step": {str(r["step"]): r for r in records[1:]}, **tracker.record()}
        atomic.write_json(ctx.path("likelihood"), metrics)
    for r in records:
        print(f"likelihood {ctx.experiment} (step {r['step']}): {key} {r[key]['mean']:.4f} ± "
              f"{r[key]['stderr'] or float('nan'):.4f} (NFE {r['nfe']:.0f})")
    return 0
