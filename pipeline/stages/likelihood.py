"""`likelihood`: test-set bits/dim with the probability-flow ODE (Score SDE Sec. 4.3, App. D): dequantized,
eval.bpd_num_repeats passes, mean ± standard error, NFE recorded."""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.core.experiment import is_points, make_sde, score_function
from pipeline.core.likelihood import bits_per_dim, bpd_offset, log_likelihood
from pipeline.core.rng import generator
from pipeline.core.scaling import to_model_range
from pipeline.io import atomic, checkpoint, data, tracking
from pipeline.io.progress import bar as tqdm
from pipeline.metrics.stats import mean_stderr
from pipeline.stages.common import add_common_arguments, device, load_context, run_tags, tracked_params, trained

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="likelihood", help="test-set bits/dim with the probability-flow ODE",
    scope="experiment", order=70, when="eval.enable_bpd", deps=("train", "prepared"), metrics=("likelihood",),
    params=("seed", "eval.bpd_num_repeats", "eval.bpd_max_images", "eval.bpd_estimator", "eval.bpd_rtol",
            "eval.bpd_atol", "eval.batch_size"),
    gpu=True, priority=1,
    snakemake_report={"likelihood": {"category": "Metrics", "labels": {"experiment": "{exp}", "metrics": "bits/dim"}}},
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    x, _ = data.load_split(ctx.root, p.data.dataset, "test")
    if p.eval.bpd_max_images:
        x = x[: p.eval.bpd_max_images]
    dev = device()
    net = checkpoint.load_network(ctx.path("train") / "model.pt", device=dev)
    sde = make_sde(p)
    score_fn = score_function(p, sde, net)
    points = is_points(p)
    dims = int(np.prod(x.shape[1:]))
    per_image = np.zeros((p.eval.bpd_num_repeats, len(x)))
    nfes = []
    t0 = time.perf_counter()
    bs = p.eval.batch_size
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "likelihood", tracked_params(ctx, SPEC["params"]),
                            tags=run_tags(ctx)) as tracker:
        bar = tqdm(total=len(x) * p.eval.bpd_num_repeats, desc="bits/dim")
        for r in range(p.eval.bpd_num_repeats):
            for start in range(0, len(x), bs):
                idx = range(start, min(len(x), start + bs))
                gens = [generator(p.seed, "bpd", r, i) for i in idx]
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
        bar.close()
        pass_means = per_image.mean(1)
        mean, se = mean_stderr(per_image.mean(0))  # standard error over test images (each averaged over passes)
        key = "nll_nats_per_dim" if points else "bpd"
        metrics = {key: {"mean": mean, "stderr": se if np.isfinite(se) else None, "n_images": int(len(x)),
                         "num_repeats": p.eval.bpd_num_repeats, "per_pass": pass_means.tolist(),
                         # per test image, averaged over passes: two experiments' values pair up (same images,
                         # same dequantization noise), which the report's claims use (pipeline/report/claims.py)
                         "per_image": per_image.mean(0).tolist()},
                   "nfe": float(np.mean(nfes)), "estimator": p.eval.bpd_estimator,
                   "seconds": round(time.perf_counter() - t0, 2), **tracker.record()}
        tracker.log_metrics({key: mean, f"{key}_stderr": se, "nfe": metrics["nfe"], "seconds": metrics["seconds"]},
                            step=trained(ctx).get("step"))
        atomic.write_json(ctx.path("likelihood"), metrics)
    print(f"likelihood {ctx.experiment}: {key} {mean:.4f} ± {se:.4f} (NFE {metrics['nfe']:.0f})")
    return 0
