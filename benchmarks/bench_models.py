"""Seconds per training step (forward + backward + Adam) and per forward pass of each score network, batch 256, small
CPU config (nf 32, ch_mult 1,2,2, 2 blocks per resolution, 32×32×1); with a score_sde_pytorch checkout, the
reference NCSN++ / DDPM++ / DDPM side by side (same weights, interleaved repetitions) and the speed-up ratios.

Usage: python benchmarks/bench_models.py [--reference /path/to/score_sde_pytorch] [--reps 2] [--archs ncsnpp,ddpmpp]
The reference compiles CUDA ops when its `op` package is imported; the compile call is stubbed out here, which leaves
its CPU path (`upfirdn2d_native`) in use. SCORE_SDE_REFERENCE may name the checkout instead of --reference.
Times are process CPU seconds, one thread by default: on a shared machine, wall times of multi-threaded runs mostly
measure the wait for a free core (they varied 2x between identical steps here); wall-time speed-ups are printed too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

from pipeline.config import Params
from pipeline.models import zoo as models

SMALL = dict(nf=32, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[16], dropout=0.1, resamp_with_conv=True,
             conditional=True, nonlinearity="swish", normalization="GroupNorm", sigma_min=0.01, sigma_max=50.0,
             num_scales=1000, beta_min=0.1, beta_max=20.0, init_scale=0.0, fourier_scale=16.0, conv_size=3,
             attention_type="ddpm", fir_kernel=[1, 3, 3, 1], progressive="none", progressive_combine="sum")
ARCHS = {  # name: (model block, continuous, centered, sde, reference registry name or None)
    "ncsnpp": (dict(SMALL, name="ncsnpp", fir=True, skip_rescale=True, resblock_type="biggan", progressive_input="residual",
                    embedding_type="fourier", scale_by_sigma=True), True, False, "vesde", "ncsnpp"),
    "ddpmpp": (dict(SMALL, name="ncsnpp", fir=False, skip_rescale=True, resblock_type="biggan", progressive_input="none",
                    embedding_type="positional", scale_by_sigma=False), True, True, "vpsde", "ncsnpp"),
    "ddpm": (dict(SMALL, name="ddpm", scale_by_sigma=False), False, True, "vpsde", "ddpm"),
    "ncsn": (dict(name="ncsn", nf=32, num_scales=10, sigma_max=1.0, normalization="InstanceNorm++", nonlinearity="elu"),
             False, False, "vesde", None),
    "ncsnv2": (dict(name="ncsnv2", nf=32, num_scales=232, sigma_max=50.0, normalization="InstanceNorm++", nonlinearity="elu",
                    scale_by_sigma=True), False, False, "vesde", None),
}


def labels_for(arch: str, batch: int, gen: torch.Generator) -> torch.Tensor:
    model, continuous, _, sde, _ = ARCHS[arch]
    if model.get("embedding_type") == "fourier":  # σ(t) of the VE SDE
        return 0.01 * (50 / 0.01) ** torch.rand(batch, generator=gen)
    if continuous:  # 999 t
        return 999 * torch.rand(batch, generator=gen)
    return torch.randint(0, model.get("num_scales", 1000), (batch,), generator=gen)


def import_reference(path: str):
    """score_sde_pytorch's model registry, importable on a CPU-only machine."""
    import torch.utils.cpp_extension as cpp

    compile_ext = cpp.load
    cpp.load = lambda *args, **kwargs: None  # op/*.py compile CUDA kernels at import; the CPU path never calls them
    sys.path.insert(0, path)
    try:
        import models.ddpm  # noqa: F401
        import models.ncsnpp  # noqa: F401
        from models import utils as mutils
    finally:
        cpp.load = compile_ext
    return mutils


def reference_config(params: Params):
    """The reference reads the same keys from an ml_collections config; a namespace tree stands in for it."""
    dump = params.model_dump()
    data = dict(dump["data"], channels=dump["data"]["num_channels"])
    return SimpleNamespace(model=SimpleNamespace(**dump["model"]), data=SimpleNamespace(**data),
                           training=SimpleNamespace(**dump["training"]))


def train_step(net, opt, x, labels) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one forward + backward + Adam step."""
    cpu, wall = time.process_time(), time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = net(x, labels).square().mean()
    loss.backward()
    opt.step()
    return time.process_time() - cpu, time.perf_counter() - wall


def forward(net, x, labels) -> tuple[tuple[float, float], torch.Tensor]:
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.no_grad():
        out = net(x, labels)
    return (time.process_time() - cpu, time.perf_counter() - wall), out


def bench(arch: str, batch: int, reps: int, reference) -> dict:
    model, continuous, centered, sde, ref_name = ARCHS[arch]
    params = Params(model=model, data=dict(image_size=32, num_channels=1, centered=centered),
                    training=dict(sde=sde, continuous=continuous))
    torch.manual_seed(0)
    nets = {"ours": models.build(params)}
    if reference is not None and ref_name is not None:
        ref = reference.get_model(ref_name)(reference_config(params))
        ref.load_state_dict(nets["ours"].state_dict(), strict=False)  # same weights (the names are the same)
        nets["reference"] = ref
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, 32, 32, generator=gen)
    labels = labels_for(arch, batch, gen)
    opts = {k: torch.optim.Adam(n.parameters(), lr=2e-4) for k, n in nets.items()}
    for k, net in nets.items():  # warm-up at the timed shapes: oneDNN creates its kernels per input shape
        net.train()
        train_step(net, opts[k], x, labels)
        forward(net, x, labels)
    times = {k: {"train": [], "forward": []} for k in nets}
    outs = {}
    for _ in range(reps):  # interleaved, so that load from other processes hits both alike
        for k, net in nets.items():
            net.train()
            times[k]["train"].append(train_step(net, opts[k], x, labels))
    for k, net in nets.items():  # same weights again before comparing outputs
        net.eval()
        if k != "ours":
            net.load_state_dict(nets["ours"].state_dict(), strict=False)
    for _ in range(reps):
        for k, net in nets.items():
            dt, outs[k] = forward(net, x, labels)
            times[k]["forward"].append(dt)
    result = {k: {f"{m}_{clock}": statistics.median(t[i] for t in v) for m, v in d.items() for i, clock in enumerate(("cpu", "wall"))}
              for k, d in times.items()}
    result["params"] = models.count_parameters(nets["ours"])
    if "reference" in outs:
        result["max_abs_diff"] = (outs["ours"].double() - outs["reference"].double()).abs().max().item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=os.environ.get("SCORE_SDE_REFERENCE"), help="score_sde_pytorch checkout")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions per measurement (median reported)")
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated subset of {','.join(ARCHS)}")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = import_reference(args.reference) if args.reference else None
    print(f"batch {args.batch}, 32x32x1, nf 32, ch_mult 1,2,2, 2 blocks; {args.threads} thread(s); median of {args.reps}; "
          f"CPU seconds; reference: {args.reference or 'none (pass --reference to compare)'}")
    print(f"{'arch':8s} {'params':>10s} {'train s':>8s} {'ref':>7s} {'speed-up':>9s} {'fwd s':>7s} {'ref':>7s} {'speed-up':>9s} "
          f"{'wall speed-ups (train, fwd)':>28s} {'max|diff|':>10s}")
    for arch in args.archs.split(","):
        r = bench(arch, args.batch, args.reps, reference)
        ours, ref = r["ours"], r.get("reference")
        cells = [f"{arch:8s}", f"{r['params']:>10,d}", f"{ours['train_cpu']:>8.2f}"]
        if ref:
            cells += [f"{ref['train_cpu']:>7.2f}", f"{ref['train_cpu'] / ours['train_cpu']:>8.2f}x", f"{ours['forward_cpu']:>7.2f}",
                      f"{ref['forward_cpu']:>7.2f}", f"{ref['forward_cpu'] / ours['forward_cpu']:>8.2f}x",
                      f"{ref['train_wall'] / ours['train_wall']:>18.2f}x, {ref['forward_wall'] / ours['forward_wall']:.2f}x",
                      f"{r['max_abs_diff']:>10.1e}"]
        else:
            cells += [f"{'-':>7s}", f"{'-':>9s}", f"{ours['forward_cpu']:>7.2f}", f"{'-':>7s}", f"{'-':>9s}", f"{'-':>28s}", f"{'-':>10s}"]
        print(" ".join(cells), flush=True)


if __name__ == "__main__":
    main()
