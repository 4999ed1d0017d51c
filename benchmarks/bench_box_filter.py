"""NCSN's CRP pooling (a 5×5 mean, zero padding counted): torch's AvgPool2d against the depthwise convolution of
pipeline/models/refinenet.py's BoxFilter, side by side in one process (interleaved repetitions, process CPU seconds,
one thread), on the default suite's NCSN (params/fmnist/ncsn.yaml: nf 16, 28×28×1) at its batch size: the pooling
alone, the train step (forward + backward) and the forward pass of ALD sampling. Prints the seconds and the ratios.

    python benchmarks/bench_box_filter.py [--params params/fmnist/ncsn.yaml] [--batch 32] [--reps 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_params  # noqa: E402
from pipeline.models import refinenet  # noqa: E402
from pipeline.models import zoo as models  # noqa: E402


def cpu_seconds(fn, n: int) -> float:
    fn()  # warm-up
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params/fmnist/ncsn.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, p = load_params(a.params, [])
    gen = torch.Generator().manual_seed(0)
    size, ch = p.data.image_size, p.data.num_channels
    x = torch.rand(a.batch, ch, size, size, generator=gen)
    y = torch.randint(0, p.model.num_scales, (a.batch,), generator=gen)
    nets = {}
    for name, pool in (("AvgPool2d", lambda: nn.AvgPool2d(5, 1, 2)), ("BoxFilter", refinenet.BoxFilter)):
        torch.manual_seed(0)
        net = models.build(p)
        for m in net.modules():
            if isinstance(m, refinenet.CRPBlock):
                m.pool = pool()
        nets[name] = net
    with torch.no_grad():
        out = {k: net(x, y) for k, net in nets.items()}
    scale = out["AvgPool2d"].abs().max().item()
    print(f"NCSN ({a.params}), batch {a.batch}: outputs differ by at most "
          f"{(out['AvgPool2d'] - out['BoxFilter']).abs().max().item():.2e} (largest output {scale:.3g})")
    feats = torch.randn(a.batch, 2 * p.model.nf, size // 2, size // 2, generator=gen)
    rows = {k: {"pool": [], "train step": [], "forward": []} for k in nets}
    for _ in range(a.reps):  # interleaved: a load change on the machine hits both alike
        for k, net in nets.items():
            pool = next(m.pool for m in net.modules() if isinstance(m, refinenet.CRPBlock))

            def step(net=net):
                net.zero_grad(set_to_none=True)
                net(x, y).square().mean().backward()

            def forward(net=net):
                with torch.no_grad():
                    net(x, y)

            rows[k]["pool"].append(cpu_seconds(lambda pool=pool: pool(feats), 10))
            rows[k]["train step"].append(cpu_seconds(step, 2))
            rows[k]["forward"].append(cpu_seconds(forward, 2))
    print(f"{'':12s} {'AvgPool2d':>12s} {'BoxFilter':>12s} {'speed-up':>9s}   (min over {a.reps} reps, CPU seconds)")
    for what in ("pool", "train step", "forward"):
        t0, t1 = (min(rows[k][what]) for k in nets)
        print(f"{what:12s} {t0:12.4f} {t1:12.4f} {t0 / t1:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
