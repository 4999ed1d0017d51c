"""`controllable`: inpainting, colorization and class-conditional examples (Score SDE Sec. 5, App. I) with the trained
model.

Takes the first eval.controllable_images test images, hides the right half (inpainting) or keeps only the gray level
(colorization, 3-channel data only), and completes them with pipeline.samplers.controllable's PC samplers in
eval.controllable_steps steps. Writes runs/<suite>/<exp>/controllable/<task>.png (rows: original | masked or gray |
completion) and info.json (per task: status, sampler, NFE, seconds, errors on the known and unknown pixels).

class_conditional: eval.class_conditional.samples_per_class samples of every class with the score plus the gradient of
the classifier stage's log p_t(y | x) (times guidance_scale), drawn by `Params.class_conditional_sampler`; the PNG has
one row per class. info.json gives the accuracy of the samples' classes under the dataset's evaluator classifier (the
FD's feature net), overall and per class, and the noise classifier's own test accuracy at a few t.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from pipeline import names
from pipeline.config import ParamsError
from pipeline.core.experiment import is_points, make_sde, score_function
from pipeline.core.rng import generator
from pipeline.core.scaling import to_model_range, to_uint8, to_unit
from pipeline.io import atomic, checkpoint, data, grids, tracking
from pipeline.metrics.dataset_classifier import EVALUATOR_FILE, evaluator_features
from pipeline.models.noise_classifier import make_noise_classifier
from pipeline.samplers import sampling
from pipeline.samplers.controllable import conditional_score_fn, pc_colorize, pc_inpaint
from pipeline.samplers.sampling import sampling_eps
from pipeline.stages.common import add_common_arguments, device, load_context, require, run_tags, sampler_params, tracked_params, trained
from pipeline.training.noise_classifier import logp_fn

NOT_APPLICABLE_GRAY = "not applicable: colorization needs 3-channel data, this dataset has 1 channel"


SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="controllable",
    help="inpainting / colorization examples from a few test images, class-conditional samples (PNG grids)",
    scope="experiment", order=80, when="eval.controllable", deps=("train", "prepared"),
    deps_if={"'class_conditional' in eval.controllable": ("classifier", "evaluator")},  # guidance; accuracy
    outs=("controllable",),
    params=("seed", "sampling", "eval.controllable", "eval.controllable_images", "eval.controllable_steps",
            "eval.class_conditional"),
    gpu=True,
    snakemake_report={"controllable": {"patterns": ["{task}.png"], "category": "Controllable generation",
                                       "labels": {"experiment": "{exp}", "task": "{task}"}}},
)


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)


def right_half_mask(shape) -> torch.Tensor:
    """1 = known: the left half of the columns (width // 2 of them); broadcasts over batch and channels."""
    mask = torch.zeros(1, 1, *shape[-2:])
    mask[..., : shape[-1] // 2] = 1.0
    return mask


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """The gray level (channel mean), repeated on the 3 channels."""
    return x.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def save_rows(path, rows: list[torch.Tensor]) -> None:
    """One PNG: each tensor (n, C, H, W) in [0, 1] is a row of n images."""
    grids.save_tiled(path, torch.cat(rows), nrow=rows[0].shape[0], padding=2, pad_value=1.0)


def _mse(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    where = where.expand_as(a)
    return float(((a - b) ** 2 * where).sum() / where.sum().clamp(min=1))


def run_task(task: str, p, sde, score_fn, x0: torch.Tensor, device: str) -> tuple[dict, list[torch.Tensor] | None]:
    """Complete x0 (model range) for one task; returns (info, PNG rows in [0, 1]) or (info, None) if not applicable."""
    s = p.controllable_sampler()
    eps = sampling_eps(p, s)
    steps = p.eval.controllable_steps or sde.N
    info = {"status": "done", "num_images": int(x0.shape[0]), "num_steps": int(steps), "predictor": s.predictor,
            "corrector": s.corrector, "snr": s.snr if s.corrector != "none" else None, "order": s.order,
            "eps": eps}
    gens = [generator(p.seed, "controllable", task, i) for i in range(x0.shape[0])]  # CPU: same draws on any device
    kw = dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each, eps=eps,
              generator=gens, denoise=s.noise_removal, num_steps=steps, order=s.order)
    unit0 = to_unit(x0, p.data.centered)
    t0 = time.perf_counter()
    if task == "inpainting":
        mask = right_half_mask(x0.shape).to(device)
        with torch.no_grad():
            x, nfe = pc_inpaint(sde, score_fn, x0, mask, **kw)
        out, raw = to_unit(x, p.data.centered), to_unit(x, p.data.centered, clamp=False)
        shown = unit0 * mask + 0.5 * (1 - mask)  # hidden pixels drawn mid-gray
        info.update(known="left half of the columns", mse_known=_mse(raw, unit0, mask),
                    mse_unknown=_mse(raw, unit0, 1 - mask))
    elif task == "colorization":
        if p.data.num_channels != 3:
            return {"status": NOT_APPLICABLE_GRAY}, None
        gray = grayscale(x0)
        with torch.no_grad():
            x, nfe = pc_colorize(sde, score_fn, gray, **kw)
        out, raw = to_unit(x, p.data.centered), to_unit(x, p.data.centered, clamp=False)
        shown = to_unit(gray, p.data.centered)
        everywhere = torch.ones_like(unit0[:, :1])
        info.update(known="gray level (channel mean)", mse_gray=_mse(raw.mean(1, keepdim=True),
                                                                      unit0.mean(1, keepdim=True), everywhere),
                    mse_color=_mse(raw, unit0, everywhere))
    else:  # the params schema admits only the two tasks above
        raise ValueError(f"unknown controllable task {task!r}")
    info.update(nfe=int(nfe), seconds=round(time.perf_counter() - t0, 2))
    return info, [unit0.cpu(), shown.cpu(), out.cpu()]


def sample_with_score(p, s, sde, score_fn, shape, gens, device: str) -> tuple[torch.Tensor, int]:
    """Samples of shape `shape` with any score function and the setting `s` (a method that takes any score: the
    params validation rules out the others, names.SAMPLING_METHOD_TABLE), as `sampling.draw` does for the
    unconditional score."""
    return sampling.sample_with_score(p, s, sde, score_fn, shape, gens, device)


def class_conditional(ctx, sde, score_fn, device: str) -> tuple[dict, list[torch.Tensor]]:
    """Class-conditional samples (Score SDE Eq. 48-49) and their accuracy under the evaluator's dataset classifier; returns
    (info, one PNG row per class in [0, 1])."""
    p = ctx.params
    cc = p.eval.class_conditional
    folder = ctx.path("classifier")
    clf = checkpoint.load_noise_classifier(require(folder / checkpoint.NOISE_CLASSIFIER_FILE, "noise-conditional classifier",
                                                   f"run `python -m pipeline classifier --params {ctx.params_path}`"),
                                           make_noise_classifier, device)
    clf_metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    evaluator = require(ctx.path("evaluator") / EVALUATOR_FILE, "evaluator classifier",
                        f"run `python -m pipeline evaluator --dataset {p.data.dataset}`").parent
    k, n = clf.num_classes, cc.samples_per_class
    labels = torch.arange(k, device=device).repeat_interleave(n)  # row c of the grid: class c
    s = p.class_conditional_sampler()
    score = conditional_score_fn(score_fn, logp_fn(sde, clf), labels, cc.guidance_scale)
    gens = [generator(p.seed, "controllable", "class_conditional", i, device=device) for i in range(k * n)]
    shape = (k * n, p.data.num_channels, p.data.image_size, p.data.image_size)
    t0 = time.perf_counter()
    x, nfe = sample_with_score(p, s, sde, score, shape, gens, device)
    seconds = time.perf_counter() - t0
    images = to_uint8(x, p.data.centered)
    _, logits = evaluator_features(evaluator, images)
    hit = logits.argmax(1) == labels.cpu().numpy()
    info = {"status": "done", "num_classes": k, "samples_per_class": n, "guidance_scale": cc.guidance_scale,
            "method": s.method, "predictor": s.predictor if "predictor" in names.sampling_method(s.method).keys else None,
            "corrector": s.corrector if "corrector" in names.sampling_method(s.method).keys else None,
            "num_steps": s.num_steps or sde.N,
            "eps": sampling_eps(p, s), "nfe": int(nfe), "seconds": round(seconds, 2),
            "evaluator_accuracy": float(hit.mean()),
            "evaluator_accuracy_per_class": [float(hit[c * n:(c + 1) * n].mean()) for c in range(k)],
            "class_names": list(names.DATASET_TABLE[p.data.dataset].class_names or [str(c) for c in range(k)]),
            "classifier_test_accuracy": clf_metrics.get("test_accuracy"),
            "classifier_seconds": clf_metrics.get("seconds"), "classifier_run_id": clf_metrics.get("mlflow_run_id")}
    unit = to_unit(x, p.data.centered).cpu()
    return info, [unit[c * n:(c + 1) * n] for c in range(k)]


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    if not p.eval.controllable:
        raise ParamsError(ctx.params_path, "eval.controllable",
                          "no tasks; set it to [inpainting] (or [inpainting, colorization] for 3-channel data, "
                          "[class_conditional] for labelled data)")
    if is_points(p):
        raise ParamsError(ctx.params_path, "eval.controllable",
                          f"needs image data; {p.data.dataset} is 2-D points (remove the key)")
    x, _ = data.load_split(ctx.root, p.data.dataset, "test")
    x = x[: p.eval.controllable_images]
    dev = device()
    if dev == "cpu":  # a batch of 8 small images: one thread is faster than two on a shared 2-core machine
        torch.set_num_threads(1)  # (NCSN++ nf 16, 28x28, batch 8: 74 ms per call with 1 thread, 485 ms with 2, loaded)
    net = checkpoint.load_network(ctx.path("train") / "model.pt", device=dev)
    sde = make_sde(p)
    score_fn = score_function(p, sde, net)
    x0 = to_model_range(torch.from_numpy(np.ascontiguousarray(x)), p.data.centered).to(dev)
    folder = ctx.path("controllable")
    infos = {}
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, "controllable",
                            {**sampler_params(p.sampling.model_dump()),
                             **tracked_params(ctx, [k for k in SPEC["params"] if k != "sampling"]),
                             "eval.controllable_steps": p.eval.controllable_steps or sde.N},
                            tags=run_tags(ctx)) as tracker, \
            atomic.atomic_dir(folder) as tmp:
        for task in p.eval.controllable:
            if task == "class_conditional":
                info, rows = class_conditional(ctx, sde, score_fn, dev)
                save_rows(tmp / f"{task}.png", rows)
                info["figure"] = f"{task}.png"
                infos[task] = info
                print(f"controllable {ctx.experiment}/{task}: {len(rows)} classes x {info['samples_per_class']}, "
                      f"NFE {info['nfe']}, {info['seconds']:.1f}s, evaluator accuracy {info['evaluator_accuracy']:.3f}")
                continue
            info, rows = run_task(task, p, sde, score_fn, x0, dev)
            if rows is not None:
                save_rows(tmp / f"{task}.png", rows)
                info["figure"] = f"{task}.png"
            infos[task] = info
            print(f"controllable {ctx.experiment}/{task}: " + (
                f"{info['num_images']} images, NFE {info['nfe']}, {info['seconds']:.1f}s" if rows is not None
                else info["status"]))
        atomic.write_json(tmp / "info.json", {"experiment": ctx.experiment, "tasks": infos,
                                              **tracker.record()})
        tracker.log_metrics({f"{t}.{k}": v for t, i in infos.items() for k, v in i.items()
                             if k in ("nfe", "seconds", "mse_known", "mse_unknown", "mse_gray", "mse_color",
                                      "evaluator_accuracy")}, step=trained(ctx).get("step"))
        tracker.log_artifacts(tmp, "controllable")
    return 0
