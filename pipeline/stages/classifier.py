"""`classifier`: train the noise-conditional classifier p_t(y | x(t)) of class-conditional sampling (Score SDE Sec. 5,
App. I.1) on the prepared training split perturbed by the experiment's SDE, t ~ U(ε, T). Independent of the score
model, so it runs beside `train`. Not the evaluator's dataset classifier (`pipeline.metrics.dataset_classifier`); the
command, this module, the DAG stage (classifier-<exp>), its folder and `eval.classifier` keep the short name for
compatibility.

Writes runs/<suite>/<exp>/classifier/classifier.pt (config + weights) and metrics.json (seconds, first / last losses,
test accuracy at each of eval.classifier.test_times on the first eval.classifier.test_images test images).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from pipeline.config import ParamsError
from pipeline.core.experiment import is_points, make_sde
from pipeline.core.rng import generator
from pipeline.core.scaling import to_model_range
from pipeline.io import atomic, checkpoint, data, tracking
from pipeline.models.noise_classifier import make_noise_classifier
from pipeline.stages.common import add_common_arguments, device, load_context, run_tags, tracked_params
from pipeline.training.noise_classifier import accuracy_at_times, train_noise_classifier

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="classifier",
    help="train the noise-conditional classifier p_t(y | x(t)) for class-conditional sampling",
    # it needs the prepared data and the SDE, not the score model: it runs beside `train`
    scope="experiment", order=90, when="'class_conditional' in eval.controllable", deps=("prepared",),
    outs=("classifier",),
    params=("seed", "data", "training.sde", "model.sigma_min", "model.sigma_max", "model.beta_min", "model.beta_max",
            "eval.classifier"),
    gpu=True, priority=1,
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def noise_classifier_config(p, num_classes: int) -> dict:
    """The keyword arguments of `make_noise_classifier` for the experiment's data and `eval.classifier`."""
    c = p.eval.classifier
    return {"num_channels": p.data.num_channels, "image_size": p.data.image_size, "num_classes": num_classes,
            "nf": c.nf, "ch_mult": list(c.ch_mult), "num_res_blocks": c.num_res_blocks, "dropout": c.dropout,
            "fourier_scale": c.fourier_scale}


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    if "class_conditional" not in p.eval.controllable:
        raise ParamsError(ctx.params_path, "eval.controllable",
                          "the classifier serves class_conditional only; add it to eval.controllable")
    if is_points(p):
        raise ParamsError(ctx.params_path, "eval.controllable", f"class_conditional needs image data, "
                                                                 f"{p.data.dataset} is 2-D points")
    x, y = data.load_split(ctx.root, p.data.dataset, "train")
    if p.data.max_train:
        x, y = x[: p.data.max_train], y[: p.data.max_train]
    xt, yt = data.load_split(ctx.root, p.data.dataset, "test")
    c = p.eval.classifier
    xt, yt = xt[: c.test_images], yt[: c.test_images]
    dev = device()
    if dev == "cpu":  # small batches: one thread is faster on a shared 2-core machine (1000 steps measured under load:
        torch.set_num_threads(1)  # 83 CPU-s with 1 thread, 522 CPU-s and 530 s wall with 2)
    num_classes = int(max(y.max(), yt.max())) + 1
    config = noise_classifier_config(p, num_classes)
    sde = make_sde(p)
    as_input = lambda a: to_model_range(torch.from_numpy(np.ascontiguousarray(a)), p.data.centered).to(dev)  # noqa: E731
    labels = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64)).to(dev)  # noqa: E731
    folder = ctx.path("classifier")
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "classifier", tracked_params(ctx, SPEC["params"]),
                            tags=run_tags(ctx)) as tracker, \
            atomic.atomic_dir(folder) as tmp:
        net = make_noise_classifier(config, generator(p.seed, "classifier", "init")).to(dev)
        t0 = time.perf_counter()
        losses = train_noise_classifier(sde, net, as_input(x), labels(y), c.n_iters, c.batch_size, c.lr, p.seed,
                                        progress=not args.no_progress and sys.stderr.isatty())
        seconds = time.perf_counter() - t0
        acc = accuracy_at_times(sde, net, as_input(xt), labels(yt), c.test_times, p.seed)
        checkpoint.save_noise_classifier(tmp / checkpoint.NOISE_CLASSIFIER_FILE, config, net)
        k = max(1, len(losses) // 10)
        metrics = {"experiment": ctx.experiment, "sde": p.training.sde, "num_classes": num_classes,
                   "n_iters": c.n_iters, "batch_size": c.batch_size, "seconds": round(seconds, 2),
                   "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
                   "chance_loss": float(np.log(num_classes)), "test_images": len(xt),
                   "test_accuracy": {f"{t:g}": a for t, a in acc.items()}, **tracker.record()}
        atomic.write_json(tmp / "metrics.json", metrics)
        tracker.log_metrics({"seconds": metrics["seconds"], "loss_last": metrics["loss_last"],
                             **{f"test_accuracy_t{t:g}": a for t, a in acc.items()}})
    print(f"classifier {ctx.experiment}: {c.n_iters} steps, {seconds:.1f}s, loss {metrics['loss_first']:.3f} -> "
          f"{metrics['loss_last']:.3f}, test accuracy " + ", ".join(f"t={t:g}: {a:.3f}" for t, a in acc.items()))
    return 0
