"""`sample`: eval.num_samples samples per seed with one sampler setting; one .npz, a grid PNG, NFE and timing."""
from __future__ import annotations

import time

import numpy as np
import torch
from pipeline.progress import bar as tqdm

from pipeline import atomic, checkpoint, tracking
from pipeline.cli import common
from pipeline.config import ParamsError
from pipeline.stages.common import generator, load_context


def add_arguments(p, name: str) -> None:
    common(p)
    p.add_argument("--sampler", required=True, help="sampler name: sampling.method, or a key of `samplers:`")


def make_sde(params):
    from pipeline.sde import get_sde

    m = params.model
    return get_sde(params.training.sde, sigma_min=m.sigma_min, sigma_max=m.sigma_max, beta_min=m.beta_min,
                   beta_max=m.beta_max, N=m.num_scales)


def sample_shape(params, n: int) -> tuple[int, ...]:
    d = params.data
    if d.dataset in ("gmm", "swiss_roll", "checkerboard"):
        return (n, 2)
    return (n, d.num_channels, d.image_size, d.image_size)


def sampling_eps(params, s) -> float:
    """The sampler's end time ε: the setting, else 1e-5 for VE and 1e-3 for VP / sub-VP (the reference's defaults)."""
    return s.eps or (1e-5 if params.training.sde == "vesde" else 1e-3)


def draw(params, s, net, n: int, gens, device="cpu") -> tuple[torch.Tensor, int]:
    """One batch of samples in the model's data range, and the number of score evaluations."""
    from pipeline import sampling
    from pipeline.losses import get_score_fn

    sde = make_sde(params)
    score_fn = get_score_fn(sde, net, continuous=params.training.continuous)
    shape = sample_shape(params, n)
    if s.method == "ode":
        eps = sampling_eps(params, s)
        return sampling.ode_sample(sde, score_fn, shape, rtol=s.rtol, atol=s.atol, eps=eps, method=s.ode_method,
                                   denoise=s.noise_removal, generator=gens, device=device)
    if s.method == "ald":
        x, nfe = sampling.ald_sample(sde, score_fn, shape, n_steps_each=s.n_steps_each, step_lr=s.step_lr,
                                     convention=s.step_convention, denoise=s.noise_removal, generator=gens)
        return (x * 2 - 1 if params.data.centered else x), nfe  # ALD starts from U[0,1]: its range is the data's
    eps = sampling_eps(params, s)
    return sampling.pc_sample(sde, score_fn, shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                              n_steps=s.n_steps_each, eps=eps, denoise=s.noise_removal, generator=gens,
                              probability_flow=s.probability_flow, order=s.order, num_steps=s.num_steps, device=device)


def to_uint8(x: torch.Tensor, centered: bool) -> np.ndarray:
    x = (x + 1) / 2 if centered else x
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def save_grid(path, batch: np.ndarray, points: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    with atomic.atomic_path(path, suffix=".png") as tmp:
        if points:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(batch[:, 0], batch[:, 1], s=2)
            ax.set_aspect("equal")
            fig.savefig(tmp, format="png", dpi=100)
            plt.close(fig)
        else:
            from torchvision.utils import save_image

            save_image(torch.from_numpy(batch[:64]).float() / 255, tmp, nrow=8, format="png")


def run(args) -> int:
    ctx = load_context(args)
    p = ctx.params
    settings = p.sampler_settings()
    if args.sampler not in settings:
        raise ParamsError(ctx.params_path, f"samplers.{args.sampler}", f"no such sampler; this experiment has {list(settings)}")
    s = settings[args.sampler]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = checkpoint.load_network(ctx.path("train") / "model.pt", device=device)
    points = len(sample_shape(p, 1)) == 2
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
                    x, nfe = draw(p, s, net, len(rows), gens, device)
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
            save_grid(tmp / "grid.png", arr[0], points)
            info = {"sampler": args.sampler, "settings": s.model_dump(), "nfe": float(np.mean(nfes)),
                    "num_samples": n, "num_seeds": p.eval.num_seeds, "seconds": round(seconds, 2),
                    "seconds_per_sample": seconds / (n * p.eval.num_seeds),
                    "ald_step_convention": s.step_convention if s.method == "ald" else None,
                    "mlflow_run_id": tracker.run_id}
            atomic.write_json(tmp / "info.json", info)
        tracker.log_metrics({"nfe": info["nfe"], "seconds": seconds})
        tracker.log_artifact(folder / "grid.png")
    print(f"sampled {ctx.experiment}/{args.sampler}: {n} x {p.eval.num_seeds} seeds, NFE {info['nfe']:.0f}, {seconds:.1f}s")
    return 0
