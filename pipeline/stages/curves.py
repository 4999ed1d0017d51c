"""`curves`: dataset-classifier FD against NFE (every sampler of `curves.samplers` over `curves.nfe`, from the final EMA
weights) and against training step (`curves.checkpoints`: the EMA weights kept every training.ckpt_freq steps and
the final ones; the best is picked as Score SDE does for Table 3). Writes runs/<suite>/<exp>/curves/nfe.json and
ckpt.json: one record per point with its full sampler setting, target and measured NFE, FD per seed, mean and std,
the number of samples and the checkpoint step (pipeline/metrics/curves.py has the NFE rules and the seeding)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.config import ParamsError, check_setting
from pipeline.errors import StageError
from pipeline.io import atomic, checkpoint, tracking
from pipeline.io.progress import bar as tqdm
from pipeline.metrics import curves
from pipeline.metrics.dataset_classifier import evaluator_features
from pipeline.models.checkpoint import CheckpointError, read_project_checkpoint
from pipeline.stages.common import add_common_arguments, load_context, require, run_tags
from pipeline.stages.common import device as stage_device

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="curves", help="classifier FD against NFE per sampler and against training step (best checkpoint)",
    scope="experiment", order=100, when="curves is not None and (curves.samplers or curves.checkpoints)",
    deps=("train", "evaluator"),
    metrics=("curve_nfe", "curve_ckpt"),  # both written; a curve not asked for says so in its file
    params=("seed", "sampling", "eval.batch_size", "curves"),
    gpu=True, priority=2,
    snakemake_report={
        "curve_nfe": {"category": "Metrics", "labels": {"experiment": "{exp}", "metrics": "FD against NFE"}},
        "curve_ckpt": {"category": "Metrics", "labels": {"experiment": "{exp}", "metrics": "FD against training step"}},
    },
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def reference(ev_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    ref = require(ev_dir / "ref_stats.npz", "evaluator reference statistics",
                  "run the evaluator stage of this dataset (2-D toy datasets have no curves)")
    with np.load(ref) as z:
        return z["mu"], z["sigma"]


def checkpoint_step(path: Path) -> int:
    try:
        return int(read_project_checkpoint(path)["step"])
    except CheckpointError as e:
        raise StageError(f"{e}; rerun the train stage") from None


def _problem(ctx, name: str):
    def why(s) -> str | None:
        try:
            check_setting(ctx.params, s, f"curves.samplers.{name}", ctx.params_path)
        except ParamsError as e:
            return e.message
        return None
    return why


def nfe_curves(ctx, features, ref, dev, bar) -> dict:
    p, c = ctx.params, ctx.params.curves
    model = ctx.path("train") / "model.pt"
    step = checkpoint_step(require(model, "model checkpoint", "run the train stage first"))
    net = checkpoint.load_network(model, device=dev)
    bs = c.batch_size or p.eval.batch_size
    out = {"experiment": ctx.experiment, "checkpoint_step": step, "num_samples": c.num_samples,
           "num_seeds": c.num_seeds, "nfe_targets": list(c.nfe), "nfe_by_curve": dict(c.nfe_by_curve),
           "ode_tols": list(c.ode_tols), "curves": {},
           "records": []}
    for name, base in p.curve_settings().items():
        points, skipped = curves.sweep(base, c.targets(name), c.ode_tols, p.model.num_scales, _problem(ctx, name))
        out["curves"][name] = {"method": base.method, "overrides": p.curves.samplers[name], "skipped": skipped}
        for target, s in points:
            bar.set_description(f"curve {name} NFE {target or f'tol {s.rtol:g}'}")
            rec = curves.fd_point(p, s, net, features, ref, c.num_samples, c.num_seeds, bs, dev, bar.update)
            out["records"].append({"curve": name, "target_nfe": target, "expected_nfe": curves.nfe_of(s, p.model.num_scales),
                                   "setting": s.model_dump(), "checkpoint_step": step, **rec})
    return out


def kept(ctx) -> list[tuple[int, Path]]:
    """The weights the train stage kept (train/ckpts), or a StageError when there are none."""
    files = checkpoint.kept_weights(ctx.path("ckpts"))
    if not files:
        raise StageError(f"{ctx.path('ckpts')}: no kept weights for the checkpoint curve; rerun the train stage with "
                         f"training.ckpt_freq set below training.n_iters (it is {ctx.params.training.ckpt_freq})")
    return files


def checkpoint_curve(ctx, features, ref, dev, bar) -> dict:
    p, c = ctx.params, ctx.params.curves
    s = p.checkpoint_curve_setting()
    n = c.checkpoints.num_samples or c.num_samples
    seeds = c.checkpoints.num_seeds or c.num_seeds
    model = require(ctx.path("train") / "model.pt", "model checkpoint", "run the train stage first")
    files = kept(ctx) + [(checkpoint_step(model), model)]
    bs = c.batch_size or p.eval.batch_size
    records, raw_records = [], []
    for step, f in files:
        for use_ema, out in ((True, records), (False, raw_records)):
            if not use_ema and not p.training.use_ema:
                continue  # without an EMA the plain weights are the curve
            bar.set_description(f"checkpoint curve: step {step}{'' if use_ema else ' (raw weights)'}")
            net = checkpoint.load_network(f, device=dev, use_ema=use_ema)
            out.append({"checkpoint_step": step, "checkpoint": f.relative_to(ctx.root).as_posix(),
                        "weights": "ema" if use_ema and p.training.use_ema else "raw", "setting": s.model_dump(),
                        **curves.fd_point(p, s, net, features, ref, n, seeds, bs, dev, bar.update)})
    pick = lambda r: {"checkpoint_step": r["checkpoint_step"], "fd": r["fd"], "nfe": r["nfe"]}  # noqa: E731
    out = {"experiment": ctx.experiment, "ckpt_freq": p.training.ckpt_freq, "num_samples": n, "num_seeds": seeds,
           "setting": s.model_dump(), "weights": records[0]["weights"], "records": records,
           "best": pick(curves.best_checkpoint(records)), "last": pick(records[-1])}
    if raw_records:  # the plain weights of the same checkpoints: what the EMA gains or loses, step by step
        out.update(raw_records=raw_records, raw_best=pick(curves.best_checkpoint(raw_records)),
                   raw_last=pick(raw_records[-1]))
    return out


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    if p.curves is None:
        raise ParamsError(ctx.params_path, "curves", "this experiment has no curves block (see params/README.md)")
    ev_dir = require(ctx.path("evaluator"), "dataset evaluator", f"run `python -m pipeline evaluator --dataset {p.data.dataset}`")
    ref = reference(ev_dir)
    features = lambda x: evaluator_features(ev_dir, x)[0]  # noqa: E731
    dev = stage_device()
    t0 = time.perf_counter()
    c = p.curves
    per_point = c.num_samples * c.num_seeds
    n_nfe = sum(len(curves.sweep(s, c.targets(name), c.ode_tols, p.model.num_scales, _problem(ctx, name))[0])
                for name, s in p.curve_settings().items())
    total = n_nfe * per_point
    if c.checkpoints is not None:
        n_ckpt = (len(kept(ctx)) + 1) * (2 if p.training.use_ema else 1)  # fails early when the train stage kept none
        total += n_ckpt * (c.checkpoints.num_samples or c.num_samples) * (c.checkpoints.num_seeds or c.num_seeds)
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "curves", {"curves": p.curves.model_dump(mode="json")},
                            tags=run_tags(ctx)) as tracker:
        bar = tqdm(total=total, desc="curves")
        nfe = {"experiment": ctx.experiment, "status": "not configured (curves.samplers is empty)"}
        if c.samplers:
            nfe = nfe_curves(ctx, features, ref, dev, bar)
            nfe["seconds"] = round(time.perf_counter() - t0, 2)
        ck = {"experiment": ctx.experiment, "status": "not configured (no curves.checkpoints)"}
        if c.checkpoints is not None:
            t1 = time.perf_counter()
            ck = checkpoint_curve(ctx, features, ref, dev, bar)
            ck["seconds"] = round(time.perf_counter() - t1, 2)
            tracker.log_metrics({"best_checkpoint_step": ck["best"]["checkpoint_step"],
                                 "best_checkpoint_fd": ck["best"]["fd"]["mean"], "last_checkpoint_fd": ck["last"]["fd"]["mean"]},
                                step=ck["last"]["checkpoint_step"])
            for key, recs in (("checkpoint_fd", ck["records"]), ("checkpoint_fd_raw", ck.get("raw_records", []))):
                for r in recs:  # FD against training step: the run's charts
                    tracker.log_metrics({key: r["fd"]["mean"]}, step=r["checkpoint_step"])
        bar.close()
        for key, obj in (("curve_nfe", nfe), ("curve_ckpt", ck)):
            atomic.write_json(ctx.path(key), obj)
            tracker.log_artifact(ctx.path(key))
    print(f"curves of {ctx.experiment}: {time.perf_counter() - t0:.1f}s"
          + (f"; best checkpoint step {ck['best']['checkpoint_step']} (FD {ck['best']['fd']['mean']:.4g}), "
             f"last step {ck['last']['checkpoint_step']} (FD {ck['last']['fd']['mean']:.4g})" if c.checkpoints else ""))
    return 0
