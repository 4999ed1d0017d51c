"""Training throughput of a preset on whatever device is present: images/s, model FLOPs per image, utilization.

    python benchmarks/bench_train.py params/cifar10/ncsnpp_cont.yaml params/cifar10/ddpmpp_cont_vp.yaml --batch 128

Utilization = achieved FLOP/s / the device's peak (a table of peaks for common accelerators; pass --peak-tflops
for others). FLOPs are counted by torch.utils.flop_counter on one forward + backward (training FLOPs per image).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import load_params
from pipeline.core.experiment import make_sde
from pipeline.core.losses import get_loss_fn
from pipeline.models import zoo as models

# Dense peak TFLOP/s for bf16 (tensor cores) of common accelerators.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10": 125.0}


def device_peak(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def bench(path: str, batch: int, steps: int, device: str, dtype: torch.dtype | None) -> dict:
    _, p = load_params(path)
    torch.manual_seed(0)
    net = models.build(p).to(device)
    sde = make_sde(p)
    loss_fn = get_loss_fn(sde, p.training.continuous, p.training.reduce_mean, p.training.likelihood_weighting)
    opt = torch.optim.Adam(net.parameters(), lr=p.optim.lr)
    shape = (batch, p.data.num_channels, p.data.image_size, p.data.image_size)
    x = torch.rand(shape, device=device) * 2 - 1
    gen = torch.Generator(device="cpu").manual_seed(0)

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net, x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_image = counter.get_total_flops() / batch
    for _ in range(2):  # warm-up
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return {"preset": path, "parameters": models.count_parameters(net), "batch": batch, "s_per_step": dt,
            "images_per_s": batch / dt, "gflops_per_image": flops_per_image / 1e9,
            "achieved_tflops": flops_per_image * batch / dt / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (as training.mixed_precision: bf16)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = args.peak_tflops or (device_peak(name) if device == "cuda" else None)
    print(f"device: {name}; threads: {torch.get_num_threads()}; peak: {peak or 'unknown'} TFLOP/s")
    for path in args.presets:
        r = bench(path, args.batch, args.steps, device, torch.bfloat16 if args.bf16 else None)
        util = f"{100 * r['achieved_tflops'] / peak:.1f}%" if peak else "n/a (pass --peak-tflops)"
        print(f"{path}: {r['parameters']:,} params, batch {r['batch']}: {r['s_per_step']:.3f} s/step, "
              f"{r['images_per_s']:.1f} images/s, {r['gflops_per_image']:.2f} GFLOP/image (fwd+bwd), "
              f"{r['achieved_tflops']:.3f} TFLOP/s, utilization {util}")


if __name__ == "__main__":
    main()
