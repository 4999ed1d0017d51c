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
        model, ema, res = train(p, train_x, test_x, ctx.path("snapshots"), tracker=tracker, accelerator=accelerator,
                                progress=not args.no_progress)
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


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
