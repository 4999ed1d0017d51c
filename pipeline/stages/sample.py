"""`sample`: eval.num_samples samples per seed with one sampler setting; one .npz, a grid PNG, NFE and timing."""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline import atomic, checkpoint, grids, hardware, sampling, tracking
from pipeline.config import ParamsError
from pipeline.experiment import is_points
from pipeline.progress import bar as tqdm
from pipeline.rng import generator
from pipeline.scaling import to_uint8
from pipeline.stages.common import add_common_arguments, device, load_context


def add_arguments(p, name: str) -> None:
    add_common_arguments(p)
    p.add_argument("--sampler", required=True, help="sampler name: sampling.method, or a key of `samplers:`")


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    settings = p.sampler_settings()
    if args.sampler not in settings:
        raise ParamsError(ctx.params_path, f"samplers.{args.sampler}", f"no such sampler; this experiment has {list(settings)}")
    s = settings[args.sampler]
    dev = device()
    net = checkpoint.load_network(ctx.path("train") / "model.pt", device=dev)
    points = is_points(p)
    n, bs = p.eval.num_samples, p.eval.batch_size
    out = []
    nfes = []
    t0 = time.perf_counter()
    with tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, f"sample/{args.sampler}", s.model_dump()) as tracker:
        bar = tqdm(total=n * p.eval.num_seeds, desc=f"sample {args.sampler}")
        for k in range(p.eval.num_seeds):
            chunks, nfe_k = [], []
            for start in range(0, n, bs):
                rows = range(start, min(n, start + bs))
                gens = [generator(p.seed, "sample", k, i) for i in rows]  # one generator per sample index
                with torch.no_grad():
                    x, nfe = sampling.draw(p, s, net, len(rows), gens, dev)
                chunks.append(x.float().cpu().numpy() if points else to_uint8(x, p.data.centered))
                nfe_k.append(nfe)
                bar.update(len(rows))
            out.append(np.concatenate(chunks))
            nfes.append(float(np.mean(nfe_k)))
        bar.close()
        seconds = time.perf_counter() - t0
        folder = ctx.path("samples", args.sampler)
        with atomic.atomic_dir(folder) as tmp:
            arr = np.stack(out)
            atomic.save_npz(tmp / "samples.npz", **({"points": arr} if points else {"images": arr}), nfe=np.asarray(nfes))
            grids.save_grid(tmp / "grid.png", arr[0], points)
            info = {"sampler": args.sampler, "settings": s.model_dump(), "nfe": float(np.mean(nfes)),
                    "num_samples": n, "num_seeds": p.eval.num_seeds, "seconds": round(seconds, 2),
                    "seconds_per_sample": seconds / (n * p.eval.num_seeds),
                    "ald_step_convention": s.step_convention if s.method == "ald" else None,
                    "hardware": hardware.describe(),
                    "mlflow_run_id": tracker.run_id}
            atomic.write_json(tmp / "info.json", info)
        tracker.log_metrics({"nfe": info["nfe"], "seconds": seconds})
        tracker.log_artifact(folder / "grid.png")
    print(f"sampled {ctx.experiment}/{args.sampler}: {n} x {p.eval.num_seeds} seeds, NFE {info['nfe']:.0f}, {seconds:.1f}s")
    return 0
