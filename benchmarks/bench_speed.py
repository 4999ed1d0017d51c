"""Where a train step and a sampling step of NCSN++ / DDPM++ spend their CPU time, how close they run to the CPU's
matmul peak, and which speed switches pay (issue 15).

    python benchmarks/bench_speed.py [--archs ncsnpp,ddpmpp] [--batch 256] [--sections peak,profile,switches,allocator]
                                     [--compile] [--reps 3]

Sections:
  peak      single-thread fp32 (and bf16) matmul GFLOP/s: the roofline the goals are stated against;
  profile   torch.profiler self CPU time of one train step and one sampling step (forward under inference_mode),
            summed by category: convolutions, GroupNorm, SiLU, attention, up/down-sampling (FIR filters, pooling,
            nearest up-sampling), optimizer (Adam), other aten ops (elementwise, copies, reductions) and Python /
            framework overhead (step time outside every aten op);
  switches  train step and forward, median CPU seconds, every variant interleaved in the same repetitions (so load
            from other processes hits all alike): baseline = what the pipeline does (channels-last activations:
            models/layout.py; GroupNorm + SiLU in one kernel: models/group_norm_act.py; foreach Adam: train.py;
            16-bit dropout masks: models/dropout.py; heap malloc: allocator.py; residual sums written into the conv
            output: models/layers.py; fp32); then NCHW activations, torch's GroupNorm and SiLU, for-loop / fused Adam,
            nn.Dropout's bernoulli_ masks, out-of-place residual sums, all of these at once, bf16 autocast, inference_mode and, with
            --compile, torch.compile (inductor) of the network. The fp32 matmul peak is measured right before and
            after every timed call; the goal lines take the median over the reps of the call's GFLOP/s over the peak
            around it (the same load from the machine's other tenants on both), and print the lower bound beside it:
            median GFLOP/s over the run's highest peak (a maximum of some 50 noisy peaks against a median of steps);
  layers    single layers: dropout fwd+bwd with either mask, GroupNorm backward (ATen channels-last, NCHW, fused
            kernel), GroupNorm + SiLU fwd+bwd (torch's modules against the fused kernel);
  allocator train step with glibc's default malloc against the pipeline's retain_freed_memory(), one process per
            setting and repetition, interleaved (user and system CPU seconds);
  batches   forward CPU seconds per image at several batch sizes (the sampler's batch).
The nets are the issue's small CPU configs (benchmarks/bench_models.py: 32×32×1, nf 32, ch_mult 1,2,2, 2 blocks,
attention at 16×16), and the default suite's Fashion-MNIST NCSN++ (params/fmnist/ncsnpp_cont.yaml) as `fmnist`.
Times are process CPU seconds of one thread (run under `taskset -c N` on a shared machine: CPU time then measures the
work, not the wait for a core); FLOPs from torch.utils.flop_counter.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from bench_models import ARCHS, labels_for
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import Params, load_params
from pipeline.models import layers as L
from pipeline.models import zoo as models
from pipeline.speed import group_norm_act as gna
from pipeline.speed.allocator import retain_freed_memory
from pipeline.speed.dropout import Dropout

ROOT = Path(__file__).resolve().parents[1]
FMNIST = ROOT / "params" / "fmnist" / "ncsnpp_cont.yaml"


# --- the machine's roofline ---------------------------------------------------------------------------------------
def matmul_peak(dtype=torch.float32, n: int = 1024, reps: int = 7) -> float:
    """Best-of-`reps` GFLOP/s of an n×n×n matmul (2 n³ FLOPs) on the current thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n ** 3 / best / 1e9


# --- the nets -----------------------------------------------------------------------------------------------------
def build(arch: str, batch: int, seed: int = 0):
    """(net, x, labels) for an issue config (bench_models.ARCHS) or the default suite's NCSN++ ('fmnist')."""
    gen = torch.Generator().manual_seed(1)
    if arch == "fmnist":
        _, params = load_params(str(FMNIST))
        torch.manual_seed(seed)
        net = models.build(params)
        x = torch.rand(batch, 1, 28, 28, generator=gen)
        labels = params.model.sigma_min * (params.model.sigma_max / params.model.sigma_min) ** torch.rand(batch, generator=gen)
        return net, x, labels
    model, continuous, centered, sde, _ = ARCHS[arch]
    params = Params(model=model, data=dict(image_size=32, num_channels=1, centered=centered),
                    training=dict(sde=sde, continuous=continuous))
    torch.manual_seed(seed)
    return models.build(params), torch.randn(batch, 1, 32, 32, generator=gen), labels_for(arch, batch, gen)


def train_step(net, x, labels):
    """One train step of the pipeline's optimizer (foreach Adam, as pipeline/training/loop.py) on a stand-in loss."""
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, foreach=True)

    def step():
        opt.zero_grad(set_to_none=True)
        net(x, labels).square().mean().backward()
        opt.step()
    return step


def layout(kind: str):
    """Force the activations' layout, "nchw" (standard) or "channels_last", in place of models/layout.py's."""
    from pipeline.models import unet
    saved = unet.cpu_channels_last
    fmt = torch.channels_last if kind == "channels_last" else torch.contiguous_format

    @contextlib.contextmanager
    def ctx():
        unet.cpu_channels_last = lambda t: t.contiguous(memory_format=fmt) if t.dim() == 4 else t
        try:
            yield
        finally:
            unet.cpu_channels_last = saved
    return ctx()


@contextlib.contextmanager
def out_of_place():
    """The blocks' residual and time-embedding sums as new tensors (x + h) / √2, not written into the conv output."""
    add_, residual = L.add_, L.residual
    L.add_ = lambda h, t: h + t
    L.residual = lambda x, h, skip_rescale: (x + h) / L.SQRT2 if skip_rescale else x + h
    try:
        yield
    finally:
        L.add_, L.residual = add_, residual


def nchw():
    return layout("nchw")


@contextlib.contextmanager
def none_of_them():
    """The in-process measures all off: NCHW activations, torch's GroupNorm and SiLU, out-of-place residual sums
    (for-loop Adam and nn.Dropout are chosen in the variant; the heap malloc is process-wide: `allocator` section)."""
    with nchw(), gna.unfused(), out_of_place():
        yield


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# --- single layers ----------------------------------------------------------------------------------------------------
def layers(batch: int, reps: int) -> None:
    """Median CPU ms of single layers on a batch x 64 x 32 x 32 channels-last activation: dropout forward + backward
    (nn.Dropout's bernoulli_ masks against models/dropout.py's 16-bit masks), GroupNorm backward (G 16) in ATen's
    channels-last and NCHW kernels and in models/group_norm_act.py's, and GroupNorm + SiLU forward + backward through
    torch's modules against the fused kernel."""
    N, C, H, W, G = batch, 64, 32, 32, 16
    x = torch.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    xg = x.clone().requires_grad_()
    w = torch.randn(C)
    _, mean, rstd = torch.native_group_norm(x, w, torch.zeros(C), N, C, H * W, G, 1e-6)
    xn, dyn = x.contiguous(), dy.contiguous()
    norm, silu = torch.nn.GroupNorm(G, C, eps=1e-6), torch.nn.SiLU()
    kernel = gna.extension()
    cases = {
        "dropout 0.1 fwd+bwd, nn.Dropout (bernoulli_)": lambda: torch.autograd.grad(torch.nn.Dropout(0.1)(xg), xg, dy),
        "dropout 0.1 fwd+bwd, models/dropout.py": lambda: torch.autograd.grad(Dropout(0.1)(xg), xg, dy),
        "GroupNorm backward, channels-last": lambda: torch.ops.aten.native_group_norm_backward(
            dy, x, mean, rstd, w, N, C, H * W, G, [True, True, True]),
        "GroupNorm backward, NCHW": lambda: torch.ops.aten.native_group_norm_backward(
            dyn, xn, mean, rstd, w, N, C, H * W, G, [True, True, True]),
        "GroupNorm + SiLU fwd+bwd, torch's modules": lambda: torch.autograd.grad(silu(norm(xg)), xg, dy),
    }
    if kernel is not None:
        cases |= {
            "GroupNorm backward, models/group_norm_act.py": lambda: kernel.backward(
                dy, x, mean, rstd, w, torch.zeros(C), G, False),
            "GroupNorm + SiLU fwd+bwd, models/group_norm_act.py": lambda: torch.autograd.grad(
                gna.group_norm_act(xg, norm, silu), xg, dy)}
    for f in cases.values():
        f()
    times = {k: [] for k in cases}
    for _ in range(reps):
        for k, f in cases.items():
            times[k].append(timed(f))
    print(f"\nsingle layers, {N} x {C} x {H} x {W} float32, median of {reps} interleaved reps, CPU ms")
    for k, v in times.items():
        print(f"  {k:<48} {1e3 * statistics.median(v):8.1f}")


# --- allocator: one process per setting (glibc's defaults cannot be restored in-process) ------------------------------
def allocator_probe(arch: str, batch: int, steps: int) -> None:
    """Child process: time `steps` train steps (after one warm-up) under this process's malloc settings; print
    'user sys' CPU seconds per step."""
    step = train_step(*build(arch, batch))
    step()
    t0 = os.times()
    for _ in range(steps):
        step()
    t1 = os.times()
    print(f"{(t1.user - t0.user) / steps} {(t1.system - t0.system) / steps}")


def allocator(arch: str, batch: int, reps: int) -> None:
    """glibc's default malloc against the pipeline's retain_freed_memory(), train step, processes interleaved."""
    res = {"retain_freed_memory (pipeline)": [], "glibc default": []}
    for _ in range(reps):
        for name in res:
            cmd = [sys.executable, __file__, "--archs", arch, "--batch", str(batch), "--probe",
                   "heap" if name.startswith("retain") else "default"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
            res[name].append((float(out[-2]), float(out[-1])))
    print(f"\n{arch}: train step by malloc setting, batch {batch}, one process per rep, median of {reps}, CPU s per step")
    base = None
    for name, v in res.items():
        u, sy = statistics.median(a for a, _ in v), statistics.median(b for _, b in v)
        base = base or u + sy
        print(f"  {name:<32} user {u:7.3f}  system {sy:6.3f}  total {u + sy:7.3f}  {base / (u + sy):5.2f}x")


def flops(net, x, labels) -> tuple[float, float]:
    """(train step FLOPs: forward + backward, forward FLOPs)."""
    with FlopCounterMode(display=False) as c:
        net(x, labels).square().mean().backward()
    train = c.get_total_flops()
    net.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as c, torch.no_grad():
        net(x, labels)
    return train, c.get_total_flops()


# --- profile --------------------------------------------------------------------------------------------------------
CATEGORIES = ("convolutions", "GroupNorm", "SiLU", "attention", "up/down-sampling", "optimizer", "other aten ops",
              "Python / framework")


def _is_resampling_conv(shapes) -> bool:
    """A depthwise 4-tap FIR filter (weight [C, 1, k, k] with k = len(fir_kernel) = 4; the nets' convs are 1×1 / 3×3)."""
    return any(len(s) == 4 and s[1] == 1 and s[2] == s[3] == 4 for s in shapes if isinstance(s, (list, tuple)))


def category(name: str, shapes) -> str:
    n = name.lower()
    if re.search(r"group_norm", n):
        return "GroupNorm"
    if "silu" in n:
        return "SiLU"
    if re.search(r"attention|softmax|bmm", n):
        return "attention"
    if re.search(r"upsample|avg_pool|pad", n):
        return "up/down-sampling"
    if "conv" in n:
        return "up/down-sampling" if _is_resampling_conv(shapes) else "convolutions"
    return "other aten ops"


def breakdown(fn) -> tuple[dict, float]:
    """Self CPU seconds per category of one call of fn() (after a warm-up call), and the step's total."""
    from torch.profiler import ProfilerActivity, profile, record_function
    fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("step"):
            fn()
    out = defaultdict(float)
    total = 0.0
    for ev in prof.events():
        self_s = ev.self_cpu_time_total / 1e6
        if ev.name == "step":
            total = ev.cpu_time_total / 1e6
        anc, in_opt = ev.cpu_parent, ev.name.startswith("Optimizer.")
        while anc is not None and not in_opt:
            in_opt = anc.name.startswith("Optimizer.")
            anc = anc.cpu_parent
        if ev.name.startswith("pipeline::"):  # models/group_norm_act.py's fused kernels
            out[category(ev.name, ev.input_shapes)] += self_s
        elif not ev.name.startswith("aten::"):  # record_function scopes, autograd engine wrappers, profiler marks
            out["optimizer" if in_opt else "Python / framework"] += self_s
        elif in_opt:
            out["optimizer"] += self_s
        else:
            out[category(ev.name, ev.input_shapes)] += self_s
    return dict(out), total


def profile_arch(arch: str, batch: int) -> None:
    net, x, labels = build(arch, batch)
    train = train_step(net, x, labels)

    def sample():
        with torch.inference_mode():
            net(x, labels)

    net.train()
    tr, tr_total = breakdown(train)
    net.eval()
    fw, fw_total = breakdown(sample)
    print(f"\n{arch}: profile of one train step and one sampling step (forward), batch {batch}, self CPU time "
          f"(profiler on: about {tr_total:.2f} s / {fw_total:.2f} s)")
    print(f"  {'category':<20} {'train s':>8} {'share':>7} {'forward s':>10} {'share':>7}")
    for c in CATEGORIES:
        print(f"  {c:<20} {tr.get(c, 0):8.3f} {100 * tr.get(c, 0) / tr_total:6.1f}% {fw.get(c, 0):10.3f} "
              f"{100 * fw.get(c, 0) / fw_total:6.1f}%")


# --- switches -------------------------------------------------------------------------------------------------------
def timed(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def switches(arch: str, batch: int, reps: int, use_compile: bool, parts: str) -> None:
    base, x, labels = build(arch, batch)
    train_flops, fwd_flops = flops(base, x, labels)
    none = contextlib.nullcontext

    def variant(opt_kw=None, ctx=none, compile_=False, bernoulli=False):
        net = copy.deepcopy(base).train()
        if bernoulli:  # nn.Dropout's own forward: a bernoulli_ draw per mask element
            for m in net.modules():
                if isinstance(m, Dropout):
                    m.__class__ = torch.nn.Dropout
        call = torch.compile(net) if compile_ else net
        opt = torch.optim.Adam(net.parameters(), lr=2e-4, **(opt_kw or {"foreach": True}))

        def step():
            with ctx():
                loss = call(x, labels).float().square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    trains = {} if "train" not in parts else {
              "baseline (pipeline: channels-last, fused GN+SiLU, foreach Adam, 16-bit dropout, heap malloc, in-place sums, fp32)":
              variant(),
              "none of them (NCHW, torch's GN+SiLU, for-loop Adam, nn.Dropout, out-of-place sums)":
              variant({"foreach": False}, ctx=none_of_them, bernoulli=True),
              "NCHW activations": variant(ctx=nchw),
              "Adam for-loop (torch's CPU default)": variant({"foreach": False}),
              "fused Adam": variant({"fused": True}),
              "nn.Dropout (bernoulli_ masks)": variant(bernoulli=True),
              "torch's GroupNorm + SiLU (no fused kernel)": variant(ctx=gna.unfused),
              "residual sums out of place (x + h) / sqrt 2": variant(ctx=out_of_place),
              "bf16 autocast": variant(ctx=bf16)}
    net_eval = copy.deepcopy(base).eval()

    def fwd(mode=torch.no_grad, ctx=none, call=net_eval):
        def f():
            with mode(), ctx():
                call(x, labels)
        return f
    fwds = {} if "forward" not in parts else {
            "baseline (pipeline: no_grad, channels-last, fused GN+SiLU, fp32)": fwd(), "inference_mode": fwd(torch.inference_mode),
            "none of them (NCHW, torch's GN+SiLU, out-of-place sums)": fwd(ctx=none_of_them),
            "NCHW activations": fwd(ctx=nchw), "torch's GroupNorm + SiLU (no fused kernel)": fwd(ctx=gna.unfused),
            "residual sums out of place (x + h) / sqrt 2": fwd(ctx=out_of_place), "bf16 autocast": fwd(ctx=bf16)}
    if use_compile and trains:
        trains["torch.compile (inductor)"] = variant(compile_=True)
    if use_compile and fwds:
        fwds["torch.compile (inductor), no_grad"] = fwd(call=torch.compile(copy.deepcopy(base).eval()))
    for group in (trains, fwds):  # warm-up: oneDNN kernels per shape, compilation
        for name, f in group.items():
            t = time.perf_counter()
            f()
            if "compile" in name:
                print(f"  ({arch}: first call of '{name}' incl. compilation: {time.perf_counter() - t:.1f} s wall)", flush=True)
    times = {(id(g), k): [] for g in (trains, fwds) for k in g}
    peaks = {key: [] for key in times}  # the roofline right before and after each timed call: the same load as it
    for _ in range(reps):
        for group in (trains, fwds):
            for name, f in group.items():
                before = matmul_peak(reps=3)
                times[id(group), name].append(timed(f))
                peaks[id(group), name].append(max(before, matmul_peak(reps=3)))
    print(f"\n{arch}: {models.count_parameters(base):,} params, batch {batch}; {train_flops / 1e9:.1f} GFLOP per train step, "
          f"{fwd_flops / 1e9:.1f} GFLOP per forward; median of {reps} interleaved reps, CPU s")
    run_peak = max(max(p) for p in peaks.values())
    print(f"  fp32 matmul peak (1024^3, best of 3) measured right before and after each timed call: "
          f"{min(min(p) for p in peaks.values()):.1f} to {run_peak:.1f} GFLOP/s over the run")
    print(f"  'of peak': median over the reps of the call's GFLOP/s / the peak measured around it (the goal's figure); "
          f"'of run max': median GFLOP/s / the run's highest peak ({run_peak:.1f}), a lower bound: a maximum of noisy peaks")
    print(f"  {'variant':<72} {'s':>7} {'vs base':>8} {'GFLOP/s':>8} {'of peak':>8} {'of run max':>11}")
    for label, group, fl in (("train step", trains, train_flops), ("forward", fwds, fwd_flops)):
        if not group:
            continue
        print(f"  -- {label}")
        med = {k: statistics.median(times[id(group), k]) for k in group}
        paired = {k: statistics.median(fl / t / 1e9 / p for t, p in zip(times[id(group), k], peaks[id(group), k]))
                  for k in group}
        b = next(iter(med.values()))
        for k, v in med.items():
            print(f"  {k:<72} {v:7.3f} {b / v:7.2f}x {fl / v / 1e9:8.1f} {100 * paired[k]:7.1f}% "
                  f"{100 * fl / v / 1e9 / run_peak:10.1f}%")
        fp32 = [k for k in med if "bf16" not in k]
        best = min(fp32, key=med.get)
        frac = paired[next(iter(med))]
        bf = [fl / med[k] / 1e9 / run_peak for k in med if "bf16" in k]
        print(f"  goal (issue 15): {label} >= 70% of the fp32 matmul peak: the pipeline's fp32 baseline {100 * frac:.1f}% "
              f"of the peak around it -> {'met' if frac >= 0.7 else 'NOT met'} ({100 * fl / b / 1e9 / run_peak:.1f}% of "
              f"the run's highest peak, the lower bound); fastest fp32 variant '{best}' "
              f"{100 * fl / med[best] / 1e9 / run_peak:.1f}% of the highest"
              + (f"; bf16 autocast {100 * bf[0]:.1f}% of the highest fp32 peak" if bf else ""))


def batches(arch: str, sizes: list[int], reps: int) -> None:
    print(f"\n{arch}: forward under inference_mode, CPU ms per image by batch size (median of {reps})")
    for b in sizes:
        net, x, labels = build(arch, b)
        net.eval()

        def f():
            with torch.inference_mode():
                net(x, labels)
        f()
        print(f"  batch {b:>4}: {1e3 * statistics.median(timed(f) for _ in range(reps)) / b:7.2f} ms/image", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="ncsnpp,ddpmpp,fmnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sections", default="peak,profile,switches,layers,allocator")
    ap.add_argument("--batch-sizes", default="8,32,128")
    ap.add_argument("--parts", default="train,forward", help="switches: train step, forward or both")
    ap.add_argument("--compile", action="store_true", help="add torch.compile variants (minutes of compilation)")
    ap.add_argument("--probe", choices=("heap", "default"), help=argparse.SUPPRESS)  # allocator section's child
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        if args.probe == "heap":
            retain_freed_memory()
        return allocator_probe(args.archs, args.batch, steps=2)
    retain_freed_memory()  # as every pipeline stage does (pipeline/cli.py)
    sections = args.sections.split(",")
    archs = args.archs.split(",")
    print(f"{args.threads} thread(s); CPU seconds (process time); batch {args.batch}. This machine is shared with other "
          "processes: compare ratios measured in the same run, not absolute seconds across runs.")
    if "peak" in sections:
        peak, bf = matmul_peak(), matmul_peak(torch.bfloat16)
        print(f"matmul peak, 1024^3, best of 7: fp32 {peak:.1f} GFLOP/s, bf16 {bf:.1f} GFLOP/s ({bf / peak:.2f}x fp32)")
    if "profile" in sections:
        for a in archs:
            profile_arch(a, args.batch)
    if "switches" in sections:
        for a in archs:
            switches(a, args.batch, args.reps, args.compile, args.parts)
    if "layers" in sections:
        layers(args.batch, max(args.reps, 5))
    if "allocator" in sections:
        for a in archs:
            allocator(a, args.batch, args.reps)
    if "batches" in sections:
        for a in archs:
            batches(a, [int(s) for s in args.batch_sizes.split(",")], args.reps)


if __name__ == "__main__":
    main()
