"""The GPU check of issue 13: does every path run on CUDA, and how fast. Run through `benchmarks/gpu_check.sh`.

Sections (each timed, each a row block of the final table; JSON with every number to --out):
  peak     measured dense matmul TFLOP/s, bf16 and fp32 (TF32 off), n = 8192: the "peak" the fractions below use
  smoke    the smoke suite end to end on the GPU (`dvc repro pipelines/smoke/dvc.yaml` in a temporary copy)
  train    200 training steps of params/cifar10/ncsnpp_cont.yaml at batch 128, bf16 autocast and fp32: images/s and
           achieved FLOP/s (torch.utils.flop_counter on one step) / measured peak of that dtype
  sample   1,000 samples with the library's `sampling.draw` (the sample stage's call, per-row CPU generators):
           ALD on params/cifar10/ncsn.yaml and PC on params/cifar10/ncsnpp_cont.yaml (untrained weights: this checks
           placement and speed, not quality), with fewer steps than the papers so the check fits in 8 minutes; the
           table extrapolates to the papers' step counts and 50,000 samples
  switches (with --switches) issue 15's speed switches on the GPU, each against the eager run of the same work: train steps with
           `training.compile` (fp32 and bf16: images/s, fraction of that dtype's peak) and PC sampling with
           `sampling.compile` and with `sampling.cuda_graphs` (compile mode "reduce-overhead": every fixed-shape
           network call replayed as one CUDA graph): samples/s, compilation time reported apart

`--device cpu --tiny` runs every section but `smoke` on small versions of the same presets in seconds (tests/test_device.py
runs it); without CUDA and without `--device cpu`, it exits 2 with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_params  # noqa: E402
from pipeline.core.experiment import make_sde, sample_shape  # noqa: E402
from pipeline.core.losses import get_loss_fn  # noqa: E402
from pipeline.core.rng import generator  # noqa: E402
from pipeline.models import zoo as models  # noqa: E402
from pipeline.samplers import sampling  # noqa: E402
from pipeline.speed import compiled  # noqa: E402

TRAIN_PRESET, ALD_PRESET = "params/cifar10/ncsnpp_cont.yaml", "params/cifar10/ncsn.yaml"
TINY = {TRAIN_PRESET: ["model.nf=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1", "model.attn_resolutions=[4]",
                       "data.image_size=8", "model.num_scales=50"],
        ALD_PRESET: ["model.nf=8", "data.image_size=8", "model.num_scales=3"]}
# The switches section's compiled runs under --tiny: one resolution, no attention. Inductor compiles the two-level tiny
# net above in about 50 s of CPU with a cold cache (35 s here on an idle 2-core machine), one level in 21 s; the dry run
# checks that the switch compiles for real and is timed against eager, and a GPU run compiles the real preset.
TINY_SWITCHES = [*TINY[TRAIN_PRESET], "model.ch_mult=[1]", "model.attn_resolutions=[]"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Measured TFLOP/s of an n x n x n matmul (2 n³ FLOPs), best of `reps` after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def train_throughput(path: str, sets: list[str], batch: int, steps: int, device: str, bf16: bool,
                     compile_: bool = False) -> dict:
    """`steps` optimizer steps of the preset's loss (the train loop's math, without its I/O), after 3 warm-up steps
    (with `compile_`, the network through compiled.CompiledNet as `training.compile` runs it; warm-up = compilation)."""
    from torch.utils.flop_counter import FlopCounterMode

    _, p = load_params(path, sets)
    torch.manual_seed(0)
    net = models.build(p).to(device).train()
    loss_fn = get_loss_fn(make_sde(p), p.training.continuous, p.training.reduce_mean, p.training.likelihood_weighting)
    opt = torch.optim.Adam(net.parameters(), lr=p.optim.lr)
    x = torch.rand(sample_shape(p, batch), device=device) * 2 - 1
    gens = [generator(0, "gpu-check", i) for i in range(batch)]
    amp = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    forward = compiled.CompiledNet(net, "training.compile") if compile_ else net

    def step():
        with amp:
            loss = loss_fn(forward, x, gens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    with FlopCounterMode(display=False) as fc:
        loss_fn(net, x, gens).backward()  # the eager network's FLOPs (the counter does not see inside compiled code)
    flops = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warmup = time.perf_counter() - t0
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    dt = time.perf_counter() - t0
    if compile_ and not forward.compiled:
        raise RuntimeError(f"training.compile fell back to eager: {forward.fallback_reason}")
    return {"preset": path, "dtype": "bf16" if bf16 else "fp32", "compile": compile_, "warmup_seconds": warmup,
            "batch": batch, "steps": steps, "seconds": dt,
            "images_per_s": batch * steps / dt, "tflop_per_step": flops / 1e12, "tflops": flops * steps / dt / 1e12,
            "final_loss": loss.item(), "params": sum(q.numel() for q in net.parameters())}


def sample_throughput(path: str, sets: list[str], n: int, device: str, warmup: bool = False) -> dict:
    """n samples through `sampling.draw` in one batch, as the sample stage draws them; with `warmup`, timed on a
    second draw after a first one (compilation, CUDA graph capture), whose time is reported apart."""
    _, p = load_params(path, sets)
    torch.manual_seed(0)
    net = models.build(p).to(device).eval()
    s = p.sampling
    gens = [generator(p.seed, "sample", 0, i) for i in range(n)]
    first = 0.0
    with torch.no_grad():
        for _ in range(2 if warmup else 1):
            sync(device)
            t0 = time.perf_counter()
            x, nfe = sampling.draw(p, s, net, n, gens, device)
            sync(device)
            dt = time.perf_counter() - t0
            first = first or dt
    if x.device.type != torch.device(device).type:
        raise RuntimeError(f"{path}: samples came back on {x.device}, not {device}")
    switch = "cuda_graphs" if s.cuda_graphs else "compile" if s.compile else "eager"
    wrapper = net.__dict__.get("_pipeline_compiled", {}).get(s.cuda_graphs)
    if switch != "eager" and not (wrapper and wrapper.compiled):
        raise RuntimeError(f"sampling.{switch} fell back to eager: {wrapper and wrapper.fallback_reason}")
    return {"preset": path, "method": s.method, "switch": switch, "n": n, "nfe": nfe, "seconds": dt,
            "first_draw_seconds": first, "samples_per_s": n / dt, "finite": bool(torch.isfinite(x).all()),
            "shape": list(x.shape)}


def smoke_suite(timeout: int) -> dict:
    """`dvc repro` of the smoke suite in a temporary copy of the working tree (tracked + untracked, not ignored)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "repo"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
        for f in filter(None, files):
            if (ROOT / f).is_file():
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, repo / f)
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", DVC_NO_ANALYTICS="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.email=g@g", "-c", "user.name=g", "commit", "-qm", "copy"]):
            subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
        if not (repo / ".dvc").exists():
            subprocess.run(["dvc", "init", "-q"], cwd=repo, env=env, check=True)
        r = subprocess.run(["dvc", "repro", "pipelines/smoke/dvc.yaml"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=timeout)
        out = {"returncode": r.returncode, "seconds": time.perf_counter() - t0}
        hw = repo / "runs/smoke/smoke/samples/pc/info.json"
        if hw.exists():
            out["sample_hardware"] = json.loads(hw.read_text()).get("hardware")
        if r.returncode:
            out["tail"] = (r.stdout + r.stderr)[-2000:]
    return out


def table(res: dict) -> str:
    rows = ["| check | result |", "|---|---|"]
    pk = res.get("peak", {})
    for k, v in pk.items():
        rows.append(f"| matmul peak {k} | {v:.1f} TFLOP/s |")
    if "smoke" in res:
        s = res["smoke"]
        rows.append(f"| smoke suite (dvc repro) | {'ok' if s['returncode'] == 0 else 'FAILED'} in {s['seconds']:.0f} s |")
    sw = res.get("switches", {})
    eager_train = {t["dtype"]: t for t in res.get("train", [])}
    for t in res.get("train", []) + sw.get("train", []):
        frac = t["tflops"] / pk[t["dtype"]] if pk.get(t["dtype"]) else float("nan")
        label = f"{t['dtype']} + training.compile" if t.get("compile") else t["dtype"]
        gain = (f", {t['images_per_s'] / eager_train[t['dtype']]['images_per_s']:.2f}x eager "
                f"(warm-up incl. compilation {t['warmup_seconds']:.0f} s)" if t.get("compile") and t["dtype"] in eager_train else "")
        rows.append(f"| train {Path(t['preset']).stem} {label} b{t['batch']} x{t['steps']} | "
                    f"{t['images_per_s']:.0f} images/s, {t['tflops']:.1f} TFLOP/s = {100 * frac:.0f}% of measured "
                    f"{t['dtype']} peak ({t['tflop_per_step']:.2f} TFLOP/step){gain} |")
    for s in res.get("sample", []):
        full = s["paper_nfe"] / s["nfe"] * s["seconds"] * 50000 / s["n"]
        rows.append(f"| sample {s['method']} {Path(s['preset']).stem} n={s['n']} | NFE {s['nfe']}, {s['seconds']:.1f} s "
                    f"({s['samples_per_s']:.1f}/s, finite: {s['finite']}); 50k at NFE {s['paper_nfe']}: "
                    f"~{full / 3600:.1f} h |")
    eager_sample = next((s for s in sw.get("sample", []) if s["switch"] == "eager"), None)
    for s in sw.get("sample", []):
        gain = f", {s['samples_per_s'] / eager_sample['samples_per_s']:.2f}x eager" if eager_sample else ""
        rows.append(f"| sample {s['method']} {Path(s['preset']).stem} {s['switch']} n={s['n']} NFE {s['nfe']} | "
                    f"{s['samples_per_s']:.1f} samples/s{gain} (first draw incl. compilation {s['first_draw_seconds']:.0f} s,"
                    f" finite: {s['finite']}) |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small nets, few steps: a dry run of every section in seconds")
    ap.add_argument("--skip", action="append", default=[], choices=["peak", "smoke", "train", "sample", "switches"])
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--pc-steps", type=int, default=50, help="PC predictor steps (the paper: 1000)")
    ap.add_argument("--ald-steps-each", type=int, default=5, help="ALD steps per noise level (the paper: 100)")
    ap.add_argument("--switches", action="store_true",
                    help="add the switches section (compilation: minutes; `--switches --skip smoke --skip sample` "
                         "fits one 10-minute run)")
    ap.add_argument("--switch-steps", type=int, default=50, help="train steps per compiled variant")
    ap.add_argument("--switch-dtypes", default="bf16,fp32",
                    help="training.compile runs of the switches section (none: no training run)")
    ap.add_argument("--switch-sampling", default="compile,cuda_graphs",
                    help="sampling switches of the switches section (each against an eager run)")
    ap.add_argument("--switch-pc-steps", type=int, default=10, help="PC steps per sampling switch")
    ap.add_argument("--smoke-timeout", type=int, default=240)
    ap.add_argument("--out", default=None, help="write every number as JSON here")
    a = ap.parse_args(argv)
    dtypes, sampling = ([] if a.switch_dtypes == "none" else a.switch_dtypes.split(",")), a.switch_sampling.split(",")
    if not set(dtypes) <= {"bf16", "fp32"} or not set(sampling) <= {"compile", "cuda_graphs"}:
        print(f"gpu_check: --switch-dtypes {a.switch_dtypes} / --switch-sampling {a.switch_sampling}: give bf16,fp32 / "
              "compile,cuda_graphs or a part of them", file=sys.stderr)
        return 2
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or `--device cpu --tiny` for a dry run", file=sys.stderr)
        return 2
    if a.tiny:
        a.train_steps, a.batch, a.num_samples, a.pc_steps, a.ald_steps_each = 2, 4, 4, 3, 1
        a.switch_steps, a.switch_pc_steps = 2, 2
    res: dict = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
                 "torch": torch.__version__, "tiny": a.tiny}
    t_all = time.perf_counter()
    if "peak" not in a.skip:
        n, reps = (256, 2) if a.tiny else (8192, 10)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 peak is true fp32 (the training below runs that way)
        res["peak"] = {"bf16": matmul_peak(a.device, torch.bfloat16, n, reps),
                       "fp32": matmul_peak(a.device, torch.float32, n, reps)}
        print(f"peak: {res['peak']}", flush=True)
    if "smoke" not in a.skip and not a.tiny:
        res["smoke"] = smoke_suite(a.smoke_timeout)
        print(f"smoke: {res['smoke']}", flush=True)
    if "train" not in a.skip:
        sets = TINY[TRAIN_PRESET] if a.tiny else []
        res["train"] = [train_throughput(TRAIN_PRESET, sets, a.batch, a.train_steps, a.device, bf16)
                        for bf16 in (True, False)]
        print(f"train: {res['train']}", flush=True)
    if "sample" not in a.skip:
        res["sample"] = []
        for path, over, paper_nfe in ((ALD_PRESET, [f"sampling.n_steps_each={a.ald_steps_each}"], None),
                                      (TRAIN_PRESET, [f"sampling.num_steps={a.pc_steps}"], 2000)):
            r = sample_throughput(path, (TINY[path] if a.tiny else []) + over, a.num_samples, a.device)
            r["paper_nfe"] = paper_nfe or r["nfe"] // a.ald_steps_each * 100  # ALD: L levels x 100 steps
            res["sample"].append(r)
            print(f"sample: {r}", flush=True)
    if a.switches and "switches" not in a.skip:
        sets = TINY_SWITCHES if a.tiny else []
        sw = res["switches"] = {"train": [train_throughput(TRAIN_PRESET, sets, a.batch, a.switch_steps, a.device, bf16,
                                                           compile_=True) for bf16 in (True, False)
                                          if ("bf16" if bf16 else "fp32") in dtypes], "sample": []}
        print(f"switches, train: {sw['train']}", flush=True)
        for switch in ("eager", *(x for x in ("compile", "cuda_graphs") if x in sampling)):
            over = [f"sampling.num_steps={a.switch_pc_steps}", f"sampling.compile={switch == 'compile'}",
                    f"sampling.cuda_graphs={switch == 'cuda_graphs'}"]
            sw["sample"].append(sample_throughput(TRAIN_PRESET, sets + over, a.num_samples, a.device, warmup=True))
            print(f"switches, sample: {sw['sample'][-1]}", flush=True)
    res["seconds"] = time.perf_counter() - t_all
    text = table(res)
    print(f"\nGPU check on {res['device']} (torch {res['torch']}), {res['seconds']:.0f} s\n\n{text}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    samples = res.get("sample", []) + res.get("switches", {}).get("sample", [])
    failed = ("smoke" in res and res["smoke"]["returncode"] != 0) or any(not s["finite"] for s in samples)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
