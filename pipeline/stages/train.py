"""`train`: fit the experiment's score model; writes model.pt (plain + EMA weights), ckpts/step_<step>.pt (the EMA
weights every training.ckpt_freq steps before the last, for the checkpoint curve), metrics (with the hardware it ran
on, the process count and the precision) and the loss curve: loss.csv, `step,loss,ema_eval_loss` with the EMA
evaluation loss every training.eval_freq steps and at the last step (blank in the other rows).

With training.num_processes > 1 or training.accelerate_config the stage re-launches itself as that many ranks through
Accelerate (pipeline/training/launch.py), so the DAG's one command gives DDP; training.mixed_precision is the precision."""
from __future__ import annotations

import contextlib
import json
import shutil

import torch

from pipeline.io import atomic, checkpoint, data, hardware, provenance, tracking
from pipeline.models.zoo import check_params
from pipeline.speed.group_norm_act import backend
from pipeline.stages.common import add_common_arguments, load_context, run_tags, tracked_params
from pipeline.training import launch
from pipeline.training.loop import KEPT_WEIGHTS, train
from pipeline.workflow.code_deps import stage_code

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="train", help="train the experiment's score model with Accelerate (resumable snapshots, EMA)",
    scope="experiment", order=40, deps=("prepared",), outs=("train",), persist=("snapshots",),
    metrics=("train_metrics",), plots=("loss_curve",),
    params=("seed", "data", "model", "training", "optim"),
    gpu=True, processes="training.num_processes",
    priority=3,  # training first: the longest stages, each the head of its experiment's chain
    snakemake_report={
        "train_metrics": {"category": "Training", "labels": {"experiment": "{exp}", "file": "metrics"}},
        "loss_curve": {"category": "Training", "labels": {"experiment": "{exp}", "file": "loss curve"}},
    },
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_training_data(ctx):
    x, _ = data.load_split(ctx.root, ctx.params.data.dataset, "train")
    if ctx.params.data.max_train:
        x = x[: ctx.params.data.max_train]
    xt, _ = data.load_split(ctx.root, ctx.params.data.dataset, "test")
    return torch.from_numpy(x), torch.from_numpy(xt)


# Keys that may change between a snapshot and its resume: they change what is logged or kept, or when training stops,
# never what a step computes. Every other key of the groups train tracks (seed, data, model, training, optim), the
# train stage's code and the prepared data are the snapshot's fingerprint; a snapshot with another one is set aside.
RESUME_SAFE = {
    "training.n_iters": "step n draws its batch and noise from (seed, n) and no schedule reads n_iters (the warm-up "
                        "is a step count, the EMA rate a constant): a longer run continues the same steps",
    "training.log_freq": "what is logged", "training.eval_freq": "when the EMA evaluation loss is logged",
    "training.snapshot_freq": "when snapshots are written", "training.snapshot_keep": "how many are kept",
    "training.snapshot_sampling": "MLflow grids only", "training.seeds": "read by the DAG only",
}


def resume_fingerprint(ctx) -> str:
    """The digest of what makes a training step: the train stage's code, the prepared data and the resolved params
    of the groups train tracks, minus RESUME_SAFE (pipeline.io.provenance)."""
    dumped = ctx.params.model_dump(mode="json")
    values = provenance.tracked_values(dumped, list(SPEC["params"]))
    for key in RESUME_SAFE:
        group, name = key.split(".")
        values[group] = {k: v for k, v in values[group].items() if k != name}
    deps = [outputs_rel(ctx, "prepared"), *stage_code("train")]
    return provenance.fingerprint(ctx.root, "train", deps, {"resolved": values})["fingerprint"]


def outputs_rel(ctx, key: str) -> str:
    return ctx.path(key).relative_to(ctx.root).as_posix()


def loss_csv(losses: list[tuple[int, float]], eval_losses: list[tuple[int, float]]) -> str:
    """`step,loss,ema_eval_loss`: one row per optimizer step, the EMA evaluation loss where it was computed."""
    ev = dict(eval_losses)
    return "step,loss,ema_eval_loss\n" + "".join(
        f"{s},{v:.6g},{format(ev[s], '.6g') if s in ev else ''}\n" for s, v in losses)


class FinalEvalHeld:
    """The tracker the training loop logs to, minus its EMA evaluation loss at the last step (64 test images): the
    stage logs the final one (256 images, train_metrics.json's) at that step instead, so the chart's last point is the
    file's number and no step has two values. loss.csv keeps the loop's values."""

    def __init__(self, tracker, last_step: int):
        self._t, self._last = tracker, last_step

    def __getattr__(self, name):
        return getattr(self._t, name)

    def log_metrics(self, metrics: dict, step: int | None = None, **kw) -> None:
        if step == self._last:
            metrics = {k: v for k, v in metrics.items() if k != "ema_eval_loss"}
        if metrics:
            self._t.log_metrics(metrics, step=step, **kw)


def log_model(tracker, p, ckpt: dict, step: int) -> None:
    """The EMA weights (the ones every evaluation uses) as a project checkpoint, the run's artifact `model/model.pt`:
    `pipeline.io.checkpoint.load_network(mlflow.artifacts.download_artifacts("runs:/<id>/model/model.pt"))` loads it."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.pt"
        checkpoint.save(f, checkpoint.make(p, ckpt["ema"] or ckpt["model"], None, step))
        tracker.log_artifact(f, "model")


def run(args, on_step=None, on_snapshot_write=None) -> int:
    """Train and write the outputs. on_step / on_snapshot_write: `pipeline.training.loop.train`'s fault-injection hooks."""
    ctx = load_context(args)
    p = ctx.params
    check_params(p, ctx.params_path)
    t = p.training
    launch.check_precision(t.mixed_precision, ctx.params_path)
    train_x, test_x = load_training_data(ctx)
    if launch.wants_launch(t.num_processes, t.accelerate_config):
        launch.check_request(ctx.root, t.num_processes, t.accelerate_config, "training.num_processes", ctx.params_path)
        del train_x, test_x  # each rank loads its own copy
        argv = launch.stage_argv("train", args, ["--no-progress"] if args.no_progress else [])
        return launch.relaunch(argv, t.num_processes, t.mixed_precision, t.accelerate_config, ctx.root)
    accelerator = launch.make_accelerator(p)
    main = accelerator.is_main_process
    note = launch.check_world(accelerator.num_processes, t.num_processes, "training.num_processes", ctx.params_path)
    other = launch.launcher_mixed_precision(t.mixed_precision)
    if main and note:
        print(note)
    if main and other:
        print(f"warning: the launcher's mixed precision {other!r} is ignored: training.mixed_precision = "
              f"{t.mixed_precision!r} is the switch")
    run_ctx = (tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "train", tracked_params(ctx, SPEC["params"]),
                                  tags=run_tags(ctx), system_metrics=True, processes=accelerator.num_processes,
                                  description=f"Training of `{ctx.experiment}` ({ctx.params_path}): {p.model.name} on "
                                              f"{p.data.dataset}, {p.training.sde}, {t.n_iters} steps. The EMA weights "
                                              "are the artifact `model/model.pt` (see the tag `pipeline.model_uri`).")
               if main else contextlib.nullcontext())
    with run_ctx as tracker:
        if main and tracker is not None:
            mf = ctx.path("prepared") / "manifest.json"
            info = json.loads(mf.read_text())["splits"]["train"]
            tracker.log_dataset(f"{p.data.dataset}-train", info["sha256"], str(ctx.path("prepared")), "training")
        grid_cb = None
        if main and tracker is not None and p.training.snapshot_sampling:
            # loaded only when used: the grids are MLflow artifacts (code_deps.SIDE_OUTPUT_ONLY), so neither this module
            # nor the samplers it calls are dependencies of model.pt
            from pipeline.training.snapshot_grid import snapshot_grid_logger

            grid_cb = snapshot_grid_logger(p, tracker)
        fingerprint = resume_fingerprint(ctx)
        model, ema, res = train(p, train_x, test_x, ctx.path("snapshots"), tracker=tracker and FinalEvalHeld(tracker, t.n_iters),
                                accelerator=accelerator,
                                progress=not args.no_progress, on_snapshot=grid_cb, on_step=on_step,
                                on_snapshot_write=on_snapshot_write, fingerprint=fingerprint)
        if not main:
            return 0
        out_dir = ctx.path("train")
        with atomic.atomic_dir(out_dir) as tmp:
            ckpt = checkpoint.make(p, {k: v.cpu() for k, v in model.state_dict().items()},
                                   {k: v.cpu() for k, v in ema.weights(model).items()} if ema else None, res.step)
            checkpoint.save(tmp / "model.pt", ckpt)
            if p.training.ckpt_freq:  # the kept weights before the last step (model.pt is the last one)
                for step, f in checkpoint.kept_weights(ctx.path("snapshots") / KEPT_WEIGHTS):
                    if step < res.step and step % p.training.ckpt_freq == 0:
                        (tmp / "ckpts").mkdir(exist_ok=True)
                        shutil.copyfile(f, tmp / "ckpts" / f.name)
        metrics = {"step": res.step, "final_loss": res.final_loss, "ema_eval_loss": res.ema_eval_loss,
                   "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 2),
                   "resumed_from": res.resumed_from, "hardware": hardware.describe(accelerator.num_processes),
                   "mixed_precision": accelerator.mixed_precision, "group_norm_act": backend(),
                   "snapshot_fingerprint": fingerprint, **tracker.record()}
        atomic.write_json(ctx.path("train_metrics"), metrics)
        atomic.write_text(ctx.path("loss_curve"), loss_csv(res.losses, res.eval_losses))
        if tracker is not None:
            # at the last step, as train_metrics.json has them: no step-0 point, the chart ends on the file's number
            tracker.log_metrics({"final_loss": res.final_loss, "ema_eval_loss": res.ema_eval_loss,
                                 "seconds": metrics["seconds"]}, step=res.step)
            tracker.set_tags({"group_norm_act": metrics["group_norm_act"], "snapshot_fingerprint": fingerprint,
                              "pipeline.model_uri": f"runs:/{tracker.run_id}/model/model.pt"})
            tracker.log_artifact(ctx.path("loss_curve"))
            log_model(tracker, p, ckpt, res.step)
        print(f"trained {ctx.experiment}: {res.step} steps, final loss {res.final_loss:.4f}, "
              f"EMA eval loss {res.ema_eval_loss:.4f}, {res.images_per_s:.0f} images/s")
    return 0
