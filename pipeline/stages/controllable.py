"""`controllable`: inpainting and colorization examples (Score SDE Sec. 5, App. I) with the trained model.

Takes the first eval.controllable_images test images, hides the right half (inpainting) or keeps only the gray level
(colorization, 3-channel data only), and completes them with pipeline.controllable's PC samplers in
eval.controllable_steps steps. Writes runs/<suite>/<exp>/controllable/<task>.png (rows: original | masked or gray |
completion) and info.json (per task: status, sampler, NFE, seconds, errors on the known and unknown pixels).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline import atomic, checkpoint, data, tracking
from pipeline.config import ParamsError
from pipeline.controllable import pc_colorize, pc_inpaint
from pipeline.experiment import is_points, make_sde, score_function
from pipeline.rng import generator
from pipeline.sampling import sampling_eps
from pipeline.scaling import to_model_range, to_unit
from pipeline.stages.common import add_common_arguments, device, load_context

NOT_APPLICABLE_GRAY = "not applicable: colorization needs 3-channel data, this dataset has 1 channel"


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
    from torchvision.utils import save_image

    batch = torch.cat(rows)
    with atomic.atomic_path(path, suffix=".png") as tmp:
        save_image(batch.float(), tmp, nrow=rows[0].shape[0], padding=2, pad_value=1.0, format="png")


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


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    if not p.eval.controllable:
        raise ParamsError(ctx.params_path, "eval.controllable",
                          "no tasks; set it to [inpainting] (or [inpainting, colorization] for 3-channel data)")
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
                            {"tasks": ",".join(p.eval.controllable), "num_images": len(x0),
                             "num_steps": p.eval.controllable_steps or sde.N}) as tracker, \
            atomic.atomic_dir(folder) as tmp:
        for task in p.eval.controllable:
            info, rows = run_task(task, p, sde, score_fn, x0, dev)
            if rows is not None:
                save_rows(tmp / f"{task}.png", rows)
                info["figure"] = f"{task}.png"
            infos[task] = info
            print(f"controllable {ctx.experiment}/{task}: " + (
                f"{info['num_images']} images, NFE {info['nfe']}, {info['seconds']:.1f}s" if rows is not None
                else info["status"]))
        atomic.write_json(tmp / "info.json", {"experiment": ctx.experiment, "tasks": infos,
                                              "mlflow_run_id": tracker.run_id})
        tracker.log_metrics({f"{t}.{k}": v for t, i in infos.items() for k, v in i.items()
                             if k in ("nfe", "seconds", "mse_known", "mse_unknown", "mse_gray", "mse_color")})
        tracker.log_artifacts(tmp, "controllable")
    return 0
