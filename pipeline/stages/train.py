"""`train`: fit the experiment's score model; writes model.pt (plain + EMA weights), metrics and the loss curve."""
from __future__ import annotations

import torch

from pipeline import atomic, checkpoint, data, tracking
from pipeline.cli import common
from pipeline.stages.common import load_context


def add_arguments(p, name: str) -> None:
    common(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_training_data(ctx):
    x, _ = data.load_split(ctx.root, ctx.params.data.dataset, "train")
    if ctx.params.data.max_train:
        x = x[: ctx.params.data.max_train]
    xt, _ = data.load_split(ctx.root, ctx.params.data.dataset, "test")
    return torch.from_numpy(x), torch.from_numpy(xt)


def run(args) -> int:
    from accelerate import Accelerator

    from pipeline.train import train

    ctx = load_context(args)
    p = ctx.params
    train_x, test_x = load_training_data(ctx)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=p.training.mixed_precision)
    main = accelerator.is_main_process
    run_ctx = tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "train", p.model_dump(mode="json")) if main else _null()
    with run_ctx as tracker:
        if main and tracker is not None:
            mf = ctx.path("prepared") / "manifest.json"
            import json

            info = json.loads(mf.read_text())["splits"]["train"]
            tracker.log_dataset(f"{p.data.dataset}-train", info["sha256"], str(ctx.path("prepared")), "training")
        grid_cb = snapshot_grid(ctx, tracker) if (main and tracker is not None and p.training.snapshot_sampling) else None
        model, ema, res = train(p, train_x, test_x, ctx.path("snapshots"), tracker=tracker, accelerator=accelerator,
                                progress=not args.no_progress, on_snapshot=grid_cb)
        if not main:
            return 0
        out_dir = ctx.path("train")
        with atomic.atomic_dir(out_dir) as tmp:
            ckpt = checkpoint.make(p, {k: v.cpu() for k, v in model.state_dict().items()},
                                   ema.weights(model) if ema else None, res.step)
            checkpoint.save(tmp / "model.pt", ckpt)
        metrics = {"step": res.step, "final_loss": res.final_loss, "ema_eval_loss": res.ema_eval_loss,
                   "seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 2),
                   "resumed_from": res.resumed_from, "mlflow_run_id": tracker.run_id if tracker else None}
        atomic.write_json(ctx.path("train_metrics"), metrics)
        atomic.write_text(ctx.path("loss_curve"), "step,loss\n" + "".join(f"{s},{l:.6g}\n" for s, l in res.losses))
        if tracker is not None:
            tracker.log_metrics({"final_loss": res.final_loss, "ema_eval_loss": res.ema_eval_loss})
            tracker.log_artifact(ctx.path("loss_curve"))
        print(f"trained {ctx.experiment}: {res.step} steps, final loss {res.final_loss:.4f}, "
              f"EMA eval loss {res.ema_eval_loss:.4f}, {res.images_per_s:.0f} images/s")
    return 0


def snapshot_grid(ctx, tracker, n: int = 16, max_steps: int = 100):
    """A callback logging a grid of `n` samples (EMA weights, default sampler, at most `max_steps` steps) to MLflow."""
    import copy
    import tempfile
    from pathlib import Path

    from pipeline.stages import sample as sample_stage
    from pipeline.stages.common import generator

    p = ctx.params
    s = p.sampling.model_copy(update={"num_steps": min(p.sampling.num_steps or p.model.num_scales, max_steps),
                                      "n_steps_each": min(p.sampling.n_steps_each, 5)})

    def log(step: int, model, ema) -> None:
        net = copy.deepcopy(model).eval()
        if ema is not None:
            net.load_state_dict(ema.weights(net))
        gens = [generator(p.seed, "snapshot-grid", i) for i in range(n)]
        with torch.no_grad():
            x, _ = sample_stage.draw(p, s, net, n, gens, next(net.parameters()).device.type)
        points = x.dim() == 2
        batch = x.float().cpu().numpy() if points else sample_stage.to_uint8(x, p.data.centered)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / f"samples_step_{step:09d}.png"
            sample_stage.save_grid(f, batch, points)
            tracker.log_artifact(f, "snapshot_grids")

    return log


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
