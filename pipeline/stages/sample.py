"""`sample`: eval.num_samples samples per seed with one sampler setting; one .npz, a grid PNG, NFE and timing.

With eval.num_processes > 1 the stage re-launches itself as that many ranks (pipeline/training/launch.py). The batches of
eval.batch_size samples are dealt out whole (`launch.shard`), each sample drawn from its own generator (pipeline/core/rng.py),
gathered and written by the main process: 1 and N processes give the same samples."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from pipeline.config import ParamsError
from pipeline.core.experiment import is_points
from pipeline.core.rng import generator
from pipeline.core.scaling import to_uint8
from pipeline.io import atomic, checkpoint, grids, hardware, tracking
from pipeline.io.progress import bar as tqdm
from pipeline.samplers import sampling
from pipeline.stages.common import add_common_arguments, load_context, run_tags, sampler_params, tracked_params, trained
from pipeline.training import launch

SPEC = dict(  # this stage's declaration, read by the DAG and the CLI (pipeline/workflow/commands.py)
    command="sample", help="draw eval.num_samples samples with one sampler setting (.npz + grid PNG)",
    scope="sampler", order=50, deps=("train",), outs=("samples",),
    params=("seed", "sampling", "eval.num_samples", "eval.num_seeds", "eval.batch_size", "samplers.{sampler}"),
    gpu=True, processes="eval.num_processes", priority=2,
    snakemake_report={"samples": {"patterns": ["{figure}.png"], "category": "Samples",
                                  "labels": {"experiment": "{exp}", "sampler": "{sampler}"}}},
)


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
    n_proc = p.eval.num_processes
    model_path = ctx.path("train") / "model.pt"
    if launch.wants_launch(n_proc, None):
        launch.check_request(ctx.root, n_proc, None, "eval.num_processes", ctx.params_path)
        checkpoint.load_network(model_path)  # a missing or corrupt model is reported once, before any rank starts
        return launch.relaunch(launch.stage_argv("sample", args, ["--sampler", args.sampler]), n_proc, "no", None,
                               ctx.root)
    from accelerate.state import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process
    note = launch.check_world(state.num_processes, n_proc, "eval.num_processes", ctx.params_path)
    if main and note:
        print(note)
    dev = state.device
    net = checkpoint.load_network(model_path, device=dev)
    points = is_points(p)
    n, bs = p.eval.num_samples, p.eval.batch_size
    # every (seed, first row) batch of the one-process run; this rank draws every num_processes-th one
    mine = launch.shard([(k, b) for k in range(p.eval.num_seeds) for b in range(0, n, bs)],
                        state.num_processes, state.process_index)
    done = []
    t0 = time.perf_counter()
    run_ctx = (tracking.stage_run(ctx.root, ctx.suite, ctx.experiment, f"sample/{args.sampler}",
                                  {**sampler_params(s.model_dump()), **tracked_params(ctx, SPEC["params"][2:5])},
                                  tags=run_tags(ctx, args.sampler, s.method), system_metrics=True,
                                  processes=state.num_processes,
                                  description=f"Samples of `{ctx.experiment}` with the sampler `{args.sampler}`; its "
                                              "FD and the other metrics are on the result run "
                                              f"`{tracking.run_name(ctx.experiment, 'evaluate/' + args.sampler)}`.")
               if main else contextlib.nullcontext())
    with run_ctx as tracker:
        bar = tqdm(total=sum(min(n, b + bs) - b for _, b in mine), disable=not main,
                   desc=f"sample {args.sampler}" + (f" (rank 0 of {state.num_processes})" if state.num_processes > 1 else ""))
        for k, start in mine:
            rows = range(start, min(n, start + bs))
            gens = [generator(p.seed, "sample", k, i) for i in rows]  # one generator per sample index
            with torch.no_grad():
                x, nfe = sampling.draw(p, s, net, len(rows), gens, dev)
            done.append((k, start, x.float().cpu().numpy() if points else to_uint8(x, p.data.centered), nfe))
            bar.update(len(rows))
        bar.close()
        done = sorted(gather_object(done), key=lambda r: (r[0], r[1]))  # every rank's batches, in the 1-process order
        seconds = time.perf_counter() - t0
        if not main:
            return 0
        out = [np.concatenate([r[2] for r in done if r[0] == k]) for k in range(p.eval.num_seeds)]
        nfes = [float(np.mean([r[3] for r in done if r[0] == k])) for k in range(p.eval.num_seeds)]
        folder = ctx.path("samples", args.sampler)
        with atomic.atomic_dir(folder) as tmp:
            arr = np.stack(out)
            atomic.save_npz(tmp / "samples.npz", **({"points": arr} if points else {"images": arr}), nfe=np.asarray(nfes))
            grids.save_grid(tmp / "grid.png", arr[0], points)
            info = {"sampler": args.sampler, "settings": s.model_dump(), "nfe": float(np.mean(nfes)),
                    "num_samples": n, "num_seeds": p.eval.num_seeds, "seconds": round(seconds, 2),
                    "seconds_per_sample": seconds / (n * p.eval.num_seeds),
                    "ald_step_convention": s.step_convention if "step_convention" in sampling.method(s.method).spec.keys
                    else None,
                    "mixed_precision": "no",  # the samplers integrate in float32 (no autocast)
                    "train_mixed_precision": p.training.mixed_precision,
                    "hardware": hardware.describe(state.num_processes),
                    **tracker.record()}
            atomic.write_json(tmp / "info.json", info)
        step = trained(ctx).get("step")  # the grid at the model's training step
        tracker.log_metrics({"nfe": info["nfe"], "seconds": seconds}, step=step)
        tracker.log_image(folder / "grid.png", "samples", step=step)
    print(f"sampled {ctx.experiment}/{args.sampler}: {n} x {p.eval.num_seeds} seeds, NFE {info['nfe']:.0f}, {seconds:.1f}s")
    return 0
