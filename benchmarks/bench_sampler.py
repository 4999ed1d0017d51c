"""Sampler overhead outside the network (PC step time minus network forward time) for a ~1M-parameter conv score
model on CPU, and probability-flow ODE NFE at two tolerances with an exact 784-D Gaussian score.

Usage: python benchmarks/bench_sampler.py [--batch 8] [--steps 25] [--threads 1] [--sections small,nfe,pipeline]
(--steps must exceed beta_max = 20 for the VP table-based samplers.)

Section `pipeline` (issue 15): every sampler method of the default suite run through `sampling.draw` exactly as the
sample stage runs it (per-sample generators, no_grad), once with the preset's network and once with a cheap
stand-in (`x / 2`, no parameters): overhead = CPU time per NFE of the cheap run / that of the net run; and the
probability-flow ODE's per-evaluation round trip between scipy's float64 NumPy state and the float32 tensor.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import load_params
from pipeline.core import rng
from pipeline.core.losses import get_score_fn
from pipeline.core.mixtures import GaussianMixture
from pipeline.core.sde import VESDE, VPSDE, subVPSDE
from pipeline.models import zoo as models
from pipeline.samplers import sampling
from pipeline.samplers.sampling import ode_sample, pc_sample


class SmallConvScoreNet(nn.Module):
    """A plain residual conv net with a sinusoidal noise embedding: about 1.0M parameters at width 96."""

    def __init__(self, channels: int = 1, width: int = 96, blocks: int = 6):
        super().__init__()
        self.width = width
        self.embed = nn.Sequential(nn.Linear(width, width), nn.SiLU())
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm1": nn.GroupNorm(8, width), "conv1": nn.Conv2d(width, width, 3, padding=1),
                           "emb": nn.Linear(width, width), "norm2": nn.GroupNorm(8, width),
                           "conv2": nn.Conv2d(width, width, 3, padding=1)}) for _ in range(blocks))
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = labels.float()[:, None] * freqs
        emb = self.embed(torch.cat([torch.sin(args), torch.cos(args)], 1))
        h = self.conv_in(x)
        for b in self.blocks:
            r = b["conv1"](self.act(b["norm1"](h))) + b["emb"](emb)[:, :, None, None]
            h = h + b["conv2"](self.act(b["norm2"](r)))
        return self.conv_out(self.act(h))


class TimedModel(nn.Module):
    """Wraps a network and accumulates the wall time of its forward calls."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.seconds, self.calls = net, 0.0, 0

    def forward(self, x, labels):
        start = time.perf_counter()
        out = self.net(x, labels)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def overhead(sde, predictor, corrector, batch, steps, per_row, repeats=2):
    """Best of `repeats`: (per-step sampler time outside the net in ms, per-step net time in ms)."""
    net = SmallConvScoreNet().eval()
    best = None
    for r in range(repeats):
        timed = TimedModel(net)
        score = get_score_fn(sde, timed, continuous=True)
        gen = rng.per_row_generators(r, 0, batch) if per_row else torch.Generator().manual_seed(r)
        start = time.perf_counter()
        with torch.no_grad():
            pc_sample(sde, score, (batch, 1, 28, 28), predictor, corrector, 0.16, 1, 1e-3, True, gen, num_steps=steps)
        total = time.perf_counter() - start
        result = ((total - timed.seconds) / steps * 1e3, timed.seconds / steps * 1e3)
        best = result if best is None or result[0] < best[0] else best
    return best


ROOT = Path(__file__).resolve().parents[1]
PIPELINE_SAMPLERS = [  # (preset, label, sampling overrides): the default suite's samplers, fewer steps
    ("ncsnpp_cont", "PC reverse diffusion + Langevin, 20 steps", dict(num_steps=20)),
    ("ddpmpp_cont_vp", "PC Euler-Maruyama, 20 steps", dict(num_steps=20)),
    ("ddpmpp_cont_subvp", "probability-flow ODE RK45, tol 1e-3", {}),
    ("ncsnpp_cont", "Heun (EDM), 10 steps", dict(method="heun", num_steps=10)),
    ("ddpmpp_cont_vp", "DPM-Solver-2, 10 steps", dict(method="dpm_solver", num_steps=10, solver_order=2)),
    ("ddpmpp_cont_vp", "DDIM eta 0, 20 steps", dict(method="ddim", num_steps=20)),
]


class Cheap(nn.Module):
    """A stand-in network with (almost) no cost: the sampler's own work is what remains."""

    def forward(self, x, labels):
        return x * 0.5


def pipeline_overhead(batch: int, reps: int) -> None:
    print(f"\nsampler overhead in the pipeline's path (sampling.draw, {batch} per-sample generators, default suite "
          f"nets at init), CPU s per NFE, median of {reps} interleaved reps")
    print(f"{'preset':<18} {'sampler':<42} {'NFE net/cheap':>14} {'net ms/NFE':>11} {'cheap ms/NFE':>13} {'overhead':>9}")
    for preset, label, over in PIPELINE_SAMPLERS:
        _, p = load_params(str(ROOT / "params" / "fmnist" / f"{preset}.yaml"))
        torch.manual_seed(0)
        net = models.build(p).eval()
        s = p.sampling.model_copy(update=over)
        per_nfe = {"net": [], "cheap": []}
        nfes = {}
        for _ in range(reps + 1):  # the first round warms up
            for key, model in (("net", net), ("cheap", Cheap())):
                gens = [rng.generator(p.seed, "sample", 0, i) for i in range(batch)]
                t = time.process_time()
                with torch.no_grad():
                    _, nfe = sampling.draw(p, s, model, batch, gens)
                per_nfe[key].append((time.process_time() - t) / nfe)
                nfes[key] = nfe
        net_s, cheap_s = (statistics.median(v[1:]) for v in per_nfe.values())
        print(f"{preset:<18} {label:<42} {nfes['net']:>6}/{nfes['cheap']:<7} {1e3 * net_s:11.2f} {1e3 * cheap_s:13.3f} "
              f"{100 * cheap_s / net_s:8.2f}%", flush=True)
    shape = (batch, 1, 28, 28)
    y = np.random.default_rng(0).standard_normal(math.prod(shape))
    t, n = time.process_time(), 200
    for _ in range(n):  # ode_sample's ode_func: NumPy float64 -> float32 tensor ... tensor -> NumPy float64
        x = torch.from_numpy(y.reshape(shape)).to(dtype=torch.float32)
        x.detach().cpu().numpy().reshape(-1).astype(np.float64)
    print(f"probability-flow ODE round trip per evaluation (float64 NumPy <-> float32 tensor, {batch}x784 values): "
          f"{1e6 * (time.process_time() - t) / n:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", default="small,nfe,pipeline")
    parser.add_argument("--pipeline-batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "pipeline" in args.sections:
        pipeline_overhead(args.pipeline_batch, args.reps)
    if "small" not in args.sections:
        return
    params = sum(p.numel() for p in SmallConvScoreNet().parameters())
    print(f"score network: {params:,} parameters; batch {args.batch} x 1x28x28; {args.threads} CPU thread(s); "
          f"{args.steps} steps, best of 2")
    print(f"{'sampler':<52} {'net ms/step':>12} {'outside ms/step':>16} {'overhead':>9}")
    print("(net ms/step sums the step's network calls: 1 for P only, 2 for PC; overhead = outside / net)")
    for label, sde, pred, corr, per_rows in [
            ("VP  euler_maruyama (P only)", VPSDE(N=1000), "euler_maruyama", "none", (False, True)),
            ("VE  reverse_diffusion + langevin (PC)", VESDE(N=1000), "reverse_diffusion", "langevin", (False, True)),
            ("VP  ancestral_sampling + langevin (PC)", VPSDE(N=1000), "ancestral_sampling", "langevin", (False,))]:
        for per_row in per_rows:
            out, net_ms = overhead(sde, pred, corr, args.batch, args.steps, per_row)
            tag = label + (" [per-row gens]" if per_row else "")
            print(f"{tag:<52} {net_ms:12.2f} {out:16.3f} {100 * out / net_ms:8.2f}%")

    if "nfe" not in args.sections:
        return
    print("\nprobability-flow ODE (RK45) NFE, exact score of N(mu, 0.25^2 I) in 784-D, batch 16")
    mu = torch.rand(784, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    data = GaussianMixture([1.0], mu[None], [0.0625])
    print(f"{'SDE':<10} {'rtol=atol=1e-5':>15} {'rtol=atol=1e-3':>15}")
    for name, sde, eps in [("VE", VESDE(), 1e-5), ("VP", VPSDE(), 1e-3), ("sub-VP", subVPSDE(), 1e-3)]:
        nfes = [ode_sample(sde, data.score_fn(sde), (16, 784), rtol=tol, atol=tol, eps=eps,
                           generator=torch.Generator().manual_seed(1))[1] for tol in (1e-5, 1e-3)]
        print(f"{name:<10} {nfes[0]:>15} {nfes[1]:>15}")


if __name__ == "__main__":
    main()
