"""Sampler overhead outside the network (PC step time minus network forward time) for a ~1M-parameter conv score
model on CPU, and probability-flow ODE NFE at two tolerances with an exact 784-D Gaussian score.

Usage: python benchmarks/bench_sampler.py [--batch 8] [--steps 25] [--threads 1]
(--steps must exceed beta_max = 20 for the VP table-based samplers.)
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn

from pipeline import rng
from pipeline.losses import get_score_fn
from pipeline.mixtures import GaussianMixture
from pipeline.sampling import ode_sample, pc_sample
from pipeline.sde import VESDE, VPSDE, subVPSDE


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
